"""Ragtide replicas behind nginx: the proxy's config and process, and the cluster bench.

``Nginx`` runs nginx as a child process with everything (config, pid, logs, temp files)
in one directory of its own, and changes the upstream set with a graceful reload. The
cluster tests (``tests/cluster``) and ``measure_cluster`` both use it.

Why the proxy is configured the way it is:

- **Retries only where they are safe.** ``proxy_next_upstream error timeout``: a request
  goes to the next replica when the connection fails or times out. nginx never retries a
  POST (``/chat`` is not idempotent: it appends to the session) once the request was
  sent, only when it never left (connection refused). ``http_502``/``http_503`` are left
  out on purpose: Ragtide answers 503 when a *shared* backend (PostgreSQL, Redis) is
  down, which every replica would answer alike. With them listed, each such 503 counts
  as a failure of the replica (``max_fails``), so a backend outage soon marks every
  replica down and the clear 503 + ``Retry-After`` turns into nginx's own 502 (tried:
  with Redis stopped, one GET retried over the three replicas, and every later request,
  POST /chat included, got nginx's HTML 502 "no live upstreams").
- **Passive health checks:** ``max_fails``/``fail_timeout`` take a replica that refuses
  connections (killed, crashed) out of the rotation for a while; the request that found
  it dead is retried on another replica.
- **No upstream keepalive by default.** An idle pooled connection to a replica that is
  shutting down can be closed by uvicorn just as nginx writes the next request on it; a
  POST written that way is lost with a 502 and cannot be retried. Without keepalive every
  request opens a fresh connection, which is either refused (and retried) or served.
  Loopback connects cost tens of microseconds; ``upstream_keepalive`` turns it back on
  (the bench uses it), with an idle timeout below uvicorn's own 5 s so that nginx never
  reuses a connection the replica is closing. Removal before stop (below) keeps it safe
  during restarts too; off is the choice that needs no such reasoning.
- **Removal before stop.** A replica that gets SIGTERM turns ``/ready`` 503 and keeps
  serving for ``drain_seconds``. Whoever watches ``/ready`` (Kubernetes' endpoints
  controller; here the caller of ``set_upstreams``) drops it from the upstream set and
  reloads; ``set_upstreams`` returns only when every worker with the old set has exited,
  so no new connection reaches the replica after that. The replica then stops
  accepting and finishes what it has. Passive checks alone mostly cope (a refused
  connection is retried), but a connection still in the replica's accept queue when it
  closes its listener is reset after the POST was written, and that turn is lost.
  ``reuseport`` is not used: with it, an old worker's listening socket (and its accept
  queue) would close with the worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ragtide.bench.server import (
    CLK_TCK,
    accepts,
    cpu_seconds,
    free_port,
    open_loop,
    prepare,
    spawn_ragtide,
    stop,
    wait_ready,
    wrk,
)

__all__ = ["Nginx", "NginxOptions", "measure_cluster", "render_nginx_config"]

_TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


@dataclass(frozen=True, slots=True)
class NginxOptions:
    max_fails: int = 1
    fail_timeout_s: int = 3
    upstream_keepalive: int = 0  # idle connections kept per worker; 0 = a new one per request
    workers: int = 1
    access_log: bool = True
    connect_timeout_s: float = 1.0
    read_timeout_s: float = 30.0


def render_nginx_config(
    root: Path, port: int, upstreams: Iterable[int], options: NginxOptions = NginxOptions()
) -> str:
    """An nginx.conf listening on 127.0.0.1:``port`` that balances over ``upstreams``."""
    servers = "\n".join(
        f"        server 127.0.0.1:{p} max_fails={options.max_fails}"
        f" fail_timeout={options.fail_timeout_s}s;"
        for p in upstreams
    )
    if not servers:
        raise ValueError("nginx needs at least one upstream")
    keepalive = (
        f"        keepalive {options.upstream_keepalive};\n"
        # Below uvicorn's 5 s keep-alive timeout: nginx must never reuse a connection
        # that the replica is closing as idle (a POST written on it would be lost).
        "        keepalive_timeout 4s;\n"
        if options.upstream_keepalive
        else ""
    )
    connection = '""' if options.upstream_keepalive else "close"
    temp = "\n".join(f"    {name}_temp_path {root / name};" for name in _TEMP_DIRS)
    access = (
        f"    access_log {root / 'access.log'} upstreams;"
        if options.access_log
        else "    access_log off;"
    )
    user = "user root root;\n" if os.geteuid() == 0 else ""  # workers must reach the dir
    return f"""{user}worker_processes {options.workers};
pid {root / "nginx.pid"};
error_log {root / "error.log"} warn;
events {{
    worker_connections 4096;
}}
http {{
    log_format upstreams '$msec $status "$request" $upstream_addr $upstream_status'
                         ' $request_time';
{access}
{temp}
    client_max_body_size 25m;
    upstream ragtide {{
{servers}
{keepalive}    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://ragtide;
            proxy_http_version 1.1;
            proxy_set_header Connection {connection};
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_connect_timeout {round(options.connect_timeout_s * 1000)}ms;
            proxy_send_timeout {round(options.read_timeout_s * 1000)}ms;
            proxy_read_timeout {round(options.read_timeout_s * 1000)}ms;
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 3;
            proxy_next_upstream_timeout 10s;
            add_header X-Upstream $upstream_addr always;
        }}
    }}
}}
"""


def child_pids(pid: int) -> set[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(p) for p in text.split()}


class Nginx:
    """nginx as a child process (``daemon off``) whose files all live under ``root``."""

    def __init__(self, root: Path, port: int, options: NginxOptions = NginxOptions()) -> None:
        if shutil.which("nginx") is None:
            raise RuntimeError("nginx is not installed (scripts/nginx-ensure installs it)")
        self.root = root
        self.port = port
        self.options = options
        self.upstreams: tuple[int, ...] = ()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def conf(self) -> Path:
        return self.root / "nginx.conf"

    def _nginx(self, *args: str) -> list[str]:
        return [
            "nginx",
            "-p",
            str(self.root),
            "-c",
            str(self.conf),
            "-e",
            str(self.root / "error.log"),
            *args,
        ]

    def _write(self, upstreams: Sequence[int]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for name in _TEMP_DIRS:
            (self.root / name).mkdir(exist_ok=True)
        self.conf.write_text(render_nginx_config(self.root, self.port, upstreams, self.options))
        check = subprocess.run(self._nginx("-t", "-q"), capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"nginx rejected its config: {check.stderr.strip()}")

    @property
    def pid(self) -> int | None:
        """The master process's, while it runs."""
        return self._proc.pid if self._proc is not None else None

    def workers(self) -> set[int]:
        return child_pids(self._proc.pid) if self._proc is not None else set()

    def start(self, upstreams: Sequence[int], timeout: float = 10.0) -> None:
        self._write(upstreams)
        self._proc = subprocess.Popen(
            self._nginx("-g", "daemon off;"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.upstreams = tuple(upstreams)
        deadline = time.monotonic() + timeout
        while not (self.workers() and accepts(self.port)):
            if self._proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self._proc.returncode}: {self.errors()}")
            if time.monotonic() > deadline:
                raise TimeoutError("nginx did not start accepting")
            time.sleep(0.01)

    def set_upstreams(self, upstreams: Sequence[int], timeout: float = 10.0) -> float:
        """Reload with ``upstreams``; return once no worker with the old set is left.

        Returns the seconds it took. Old workers exit when their in-flight requests are
        done, so afterwards no nginx process will open a connection to a removed replica.
        """
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError("nginx is not running")
        began = time.monotonic()
        self._write(upstreams)
        old = self.workers()
        subprocess.run(self._nginx("-s", "reload"), check=True, capture_output=True)
        while True:
            current = self.workers()
            if current and not current & old:
                break
            if time.monotonic() - began > timeout:
                raise TimeoutError(f"nginx reload did not finish: old workers {current & old}")
            time.sleep(0.005)
        self.upstreams = tuple(upstreams)
        return time.monotonic() - began

    def errors(self) -> str:
        try:
            return (self.root / "error.log").read_text()[-4000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGQUIT)  # graceful: finish in-flight requests
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- the bench ------------------------------------------------------------------------


def _create_database(admin_dsn: str) -> tuple[str, str]:
    """Create ``ragtide_bench_<random>`` with pgvector; return (its name, its DSN)."""
    import psycopg

    name = f"ragtide_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    dsn = urlsplit(admin_dsn)._replace(path=f"/{name}").geturl()  # a URL, as settings want
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return name, dsn


def _settle(dsn: str) -> None:
    """After a bulk load, what an operator does and autovacuum would otherwise do while
    the database's CPU is being measured: VACUUM (ANALYZE) every table."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")


def _drop_database(admin_dsn: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _forget_redis_keys(url: str, prefix: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    removed = 0
    try:
        batch = []
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                removed += int(client.delete(*batch))
                batch.clear()
        if batch:
            removed += int(client.delete(*batch))
    finally:
        client.close()
    return removed


def _parse(argv: Sequence[str]) -> Any:
    import argparse

    parser = argparse.ArgumentParser(prog="ragtide bench cluster")
    parser.add_argument(
        "--pg",
        default=os.environ.get("RAGTIDE_BENCH_PG", "postgresql://postgres@127.0.0.1:5433/ragtide"),
        help="an admin DSN of the PostgreSQL server (a database is created and dropped)",
    )
    parser.add_argument(
        "--redis",
        default=os.environ.get("RAGTIDE_BENCH_REDIS", "redis://127.0.0.1:6379/0"),
        help="the Redis URL (keys get a random prefix and are deleted afterwards)",
    )
    parser.add_argument("--seconds", type=int, default=8, help="wrk duration per point")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--replicas", default="1,2,3")
    return parser.parse_args(list(argv))


def _machine_busy_s() -> float:
    """CPU seconds spent busy by the whole machine (every core, every process)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / CLK_TCK


Sample = dict[str, dict[int, float]]  # tier -> pid -> CPU seconds so far


class Tiers:
    """The processes of each tier whose CPU a run accounts for: the API replicas,
    PostgreSQL (its postmaster and every backend), Redis and nginx. What the machine spent
    beyond them is ``other`` (the load generator, the kernel, anything else running)."""

    def __init__(self, api: Sequence[int], roots: dict[str, int] | None = None) -> None:
        self.api = list(api)
        self.roots = roots or {}  # tier -> the pid whose process tree it is

    def _pids(self) -> dict[str, set[int]]:
        pids = {"api": set(self.api)}
        for tier, root in self.roots.items():
            pids[tier] = {root} | child_pids(root)
        return pids

    def sample(self) -> Sample:
        out: dict[str, dict[int, float]] = {}
        for tier, pids in self._pids().items():
            out[tier] = {}
            for pid in pids:
                with contextlib.suppress(OSError):  # ended meanwhile
                    out[tier][pid] = cpu_seconds(pid)
        return out

    @staticmethod
    def spent(
        before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]
    ) -> dict[str, float]:
        """CPU seconds per tier between two samples: a process that started meanwhile
        counts from 0, one that ended counts until the first sample (an undercount only
        for backends that come and go; the replicas keep theirs in a pool)."""
        spent = {}
        for tier, now in after.items():
            was = before.get(tier, {})
            total = sum(cpu - was.get(pid, 0.0) for pid, cpu in now.items())
            spent[tier] = total
        return spent


def postmaster_pid(admin_dsn: str) -> int:
    import psycopg

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        row = conn.execute("SHOW data_directory").fetchone()
    assert row is not None
    return int((Path(row[0]) / "postmaster.pid").read_text().split("\n", 1)[0])


def _redis_pid(url: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return int(client.info("server")["process_id"])
    finally:
        client.close()


def _throughput(
    tiers: Tiers,
    port: int,
    work: Path,
    targets: Sequence[tuple[str, str, list[str]]],
    seconds: int,
    connections: int,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, path, bodies in targets:
        wrk(port, path, bodies, work, connections=connections, seconds=2)  # warm-up
        cpu0, busy0 = tiers.sample(), _machine_busy_s()
        run = wrk(port, path, bodies, work, connections=connections, seconds=seconds)
        spent = Tiers.spent(cpu0, tiers.sample())
        busy = _machine_busy_s() - busy0
        n = max(1, run["requests"])
        run["replica_cpu_ms_per_request"] = round(spent["api"] * 1000 / n, 3)
        # Everything else too: nginx, PostgreSQL, Redis, wrk, and whatever else runs here.
        run["machine_cpu_ms_per_request"] = round(busy * 1000 / n, 3)
        per_tier = {tier: round(cpu * 1000 / n, 3) for tier, cpu in spent.items()}
        per_tier["other"] = round(max(0.0, busy - sum(spent.values())) * 1000 / n, 3)
        run["cpu_ms_per_request"] = per_tier
        out[name] = run
    return out


def _database_tier(cluster: dict[str, Any]) -> dict[str, Any]:
    """PostgreSQL's CPU per request of each endpoint (the median over the replica counts:
    it is per request, so it should not depend on them), as capacity.json's ``database``
    section wants it (``ragtide plan``: add the database's cores)."""
    runs = list(cluster.values())
    per_endpoint = {
        kind: statistics.median(r[kind]["cpu_ms_per_request"]["database"] for r in runs) / 1000
        for kind in ("search", "chat")
    }
    return {
        "cpu_seconds_per_request": {k: round(v, 6) for k, v in per_endpoint.items()},
        "by_replicas": {
            n: {kind: r[kind]["cpu_ms_per_request"]["database"] for kind in ("search", "chat")}
            for n, r in cluster.items()
        },
    }


def _startup_on(dsn: str, work: Path, env: dict[str, str]) -> dict[str, float]:
    """Spawn → ready on an empty database (cold: migrations run) and again (warm)."""
    times = {}
    for kind in ("cold", "warm"):
        port = free_port()
        began = time.perf_counter()
        proc = spawn_ragtide(work / f"startup-{kind}", port, {**env, "RAGTIDE_STORE__URL": dsn})
        try:
            times[f"{kind}_ready_s"] = round(wait_ready(proc, port, began), 3)
        finally:
            stop(proc)
    return times


def _search_latency(work: Path, env: dict[str, str], queries: Sequence[str]) -> dict[str, Any]:
    """``/search`` latency of one PostgreSQL-backed replica at a steady 50 req/s."""
    port = free_port()
    proc = spawn_ragtide(work / "latency", port, env)
    try:
        wait_ready(proc, port, time.perf_counter())
        bodies = [{"query": q, "top_k": 5} for q in queries[:500]]
        open_loop(port, "/v1/namespaces/bench/search", bodies, 50, 3)  # warm-up
        return open_loop(port, "/v1/namespaces/bench/search", bodies, 50, 15)
    finally:
        stop(proc)


def measure_cluster(data: Path, work: Path, argv: Sequence[str] = ()) -> dict[str, Any]:
    """``/chat`` and ``/search`` throughput: 1, 2, 3 replicas behind nginx on PostgreSQL and
    Redis, against the embedded default (one replica, SQLite, in-process memory, no
    nginx), in one run on one machine. The answer cache is off everywhere, so every chat
    request runs the whole pipeline.

    Everything (load generator, nginx, replicas, PostgreSQL, Redis) shares this
    machine's cores: with two cores, extra replicas add contention, not capacity, and the
    scaling ratios say so.
    """
    args = _parse(argv)
    queries = prepare(data, work)
    search_bodies = [json.dumps({"query": q, "top_k": 5}) for q in queries[:500]]
    chat_bodies = [json.dumps({"message": q}) for q in queries[:500]]
    targets = [
        ("chat", "/v1/namespaces/bench/chat", chat_bodies),
        ("search", "/v1/namespaces/bench/search", search_bodies),
    ]
    quiet = {"RAGTIDE_LOGGING__LEVEL": "WARNING", "RAGTIDE_ANSWER_CACHE_ENABLED": "false"}
    result: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "loadavg_1m_at_start": os.getloadavg()[0]},
        "documents": 2000,
        "connections": args.connections,
        "seconds": args.seconds,
        "answer_cache": False,
    }

    port = free_port()
    proc = spawn_ragtide(work / "ragtide", port, quiet)
    try:
        wait_ready(proc, port, time.perf_counter())
        result["embedded"] = _throughput(
            Tiers([proc.pid]), port, work, targets, args.seconds, args.connections
        )
    finally:
        stop(proc)

    db, dsn = _create_database(args.pg)
    prefix = f"ragtide-bench-{secrets.token_hex(4)}"
    result["startup_postgres"] = _startup_on(dsn, work, quiet)
    env = {
        **quiet,
        "RAGTIDE_STORE__URL": dsn,
        "RAGTIDE_REDIS__URL": args.redis,
        "RAGTIDE_MEMORY__USE": "redis",
        "RAGTIDE_MEMORY__CONFIG__KEY_PREFIX": prefix,
    }
    procs: list[subprocess.Popen[bytes]] = []
    nginx = Nginx(
        work / "nginx", free_port(), NginxOptions(upstream_keepalive=32, access_log=False)
    )
    try:
        cli = [sys.executable, "-m", "ragtide.cli"]
        ingest = subprocess.run(
            [*cli, "ingest", str(work / "corpus.jsonl"), "-n", "bench", "-q"],
            env={**os.environ, "RAGTIDE_DATA_DIR": str(work / "cluster"), **env},
            capture_output=True,
            text=True,
        )
        if ingest.returncode != 0:
            raise RuntimeError(f"ingest into PostgreSQL failed: {ingest.stderr[-2000:]}")
        _settle(dsn)
        result["search_latency_postgres"] = _search_latency(work, env, queries)
        postmaster, redis_pid = postmaster_pid(args.pg), _redis_pid(args.redis)
        cluster: dict[str, Any] = {}
        for n in sorted({int(x) for x in args.replicas.split(",")}):
            ports = [free_port() for _ in range(n)]
            procs = [spawn_ragtide(work / f"replica-{i}", p, env) for i, p in enumerate(ports)]
            for p, port_ in zip(procs, ports, strict=True):
                wait_ready(p, port_, time.perf_counter())
            nginx.start(ports)
            assert nginx.pid is not None
            tiers = Tiers([p.pid for p in procs], {"database": postmaster, "redis": redis_pid,
                                                     "proxy": nginx.pid})  # fmt: skip
            try:
                cluster[str(n)] = _throughput(
                    tiers, nginx.port, work, targets, args.seconds, args.connections
                )
            finally:
                nginx.stop()
                for p in procs:
                    stop(p)
                procs = []
        result["cluster"] = cluster
        result["database_tier"] = _database_tier(cluster)
        result["machine"]["loadavg_1m_at_end"] = os.getloadavg()[0]
        # The bench loads both cores itself: only the load before it shows other work.
        result["machine"]["machine_busy"] = result["machine"]["loadavg_1m_at_start"] > 1.5
    finally:
        nginx.stop()
        for p in procs:
            stop(p)
        _drop_database(args.pg, db)
        result["redis_keys_removed"] = _forget_redis_keys(args.redis, prefix)

    base = result["embedded"]
    one = result["cluster"].get("1")
    result["ratios"] = {
        f"{kind}_rps_{n}_replicas_vs_embedded": round(r[kind]["rps"] / base[kind]["rps"], 2)
        for n, r in result["cluster"].items()
        for kind in ("chat", "search")
    }
    if one:
        result["ratios"].update(
            {
                f"{kind}_rps_{n}_vs_1_replica": round(r[kind]["rps"] / one[kind]["rps"], 2)
                for n, r in result["cluster"].items()
                for kind in ("chat", "search")
            }
        )
    return result
