"""Server benchmarks, side by side with the bare baseline in the same run.

- spawn → ``/ready`` 200 (models loaded, stores answering), median of several starts;
- idle RSS right after ready;
- ``/search`` throughput and latency under wrk at concurrency 16 over 2,000 documents;
- ``/chat`` latency (extractive answerer) at a fixed, open-loop 50 req/s.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ragtide.bench.data import read_jsonl

__all__ = [
    "ConnectionPool",
    "accepts",
    "idempotent",
    "measure_server",
    "open_loop",
    "prepare",
    "spawn_ragtide",
    "wait_ready",
    "wrk",
]

CLK_TCK = os.sysconf("SC_CLK_TCK")

Spawn = Callable[[int], "subprocess.Popen[bytes]"]

# The load generators cycle through a few hundred questions: with the answer cache on,
# every chat after the first round would be a cache hit, measuring the cache, not the
# pipeline.
NO_ANSWER_CACHE = {"RAGTIDE_ANSWER_CACHE_ENABLED": "false"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def accepts(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _get_status(port: int, path: str) -> int | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            head = s.recv(64)
        return int(head.split()[1])
    except (OSError, IndexError, ValueError):
        return None


def wait_ready(
    proc: subprocess.Popen[bytes],
    port: int,
    started: float,
    path: str = "/ready",
    timeout: float = 60,
) -> float:
    """Seconds from ``started`` until ``path`` answers 200 (polling every 2 ms)."""
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        if _get_status(port, path) == 200:
            return time.perf_counter() - started
        time.sleep(0.002)
    raise TimeoutError(f"not ready within {timeout}s")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def children_peak_mb(pid: int | None = None) -> float:
    """The largest peak RSS (``VmHWM``: of the process's own memory since its exec) of
    the live children of ``pid`` (this process by default); 0 without any. A child's
    ``ru_maxrss`` would not do: Linux carries the parent's into a child it forks."""
    parent = str(pid if pid is not None else os.getpid())
    peak = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if stat[1] != parent:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except (OSError, IndexError):  # gone meanwhile
            continue
    return peak / 1024


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def spawn_ragtide(
    data_dir: Path,
    port: int,
    extra_env: dict[str, str] | None = None,
    *,
    log: Path | None = None,
) -> subprocess.Popen[bytes]:
    """``ragtide serve`` on ``data_dir``; its log (stderr) appended to ``log``, if given."""
    env = {**os.environ, "RAGTIDE_DATA_DIR": str(data_dir), **(extra_env or {})}
    argv = [sys.executable, "-m", "ragtide.cli", "serve", "--port", str(port)]
    if log is None:
        return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(log, "ab") as sink:  # the child holds its own copy
        return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=sink)


def spawn_baseline(work: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ragtide.bench.baseline_app",
            str(work / "corpus.jsonl"),
            str(work / "vectors.npy"),
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def prepare(data: Path, work: Path, documents: int = 2000) -> list[str]:
    """A 2,000-document SciFact slice, ingested for Ragtide and embedded for the baseline."""
    from ragtide.builtin.static_embedder import StaticEmbedder

    docs = list(islice(read_jsonl(data / "scifact" / "corpus.jsonl"), documents))
    (work / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    env = {
        **os.environ,
        "RAGTIDE_DATA_DIR": str(work / "ragtide"),
        "RAGTIDE_LOGGING__LEVEL": "WARNING",
    }
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ragtide.cli",
            "ingest",
            str(work / "corpus.jsonl"),
            "-n",
            "bench",
            "-q",
        ],
        env=env,
        check=True,
        capture_output=True,
    )

    async def embed() -> np.ndarray:
        embedder = StaticEmbedder(StaticEmbedder.Config())
        await embedder.start()
        return await embedder.embed_documents([f"{d['title']}\n{d['text']}" for d in docs])

    np.save(work / "vectors.npy", asyncio.run(embed()))
    return [q["text"] for q in read_jsonl(data / "scifact" / "queries.train.jsonl")]


def _lua(path: str, bodies: Sequence[str]) -> str:
    items = ",\n".join(json.dumps(b) for b in bodies)  # JSON string literals are Lua-safe here
    return (
        f"local bodies = {{\n{items}\n}}\nlocal i = 0\n"
        "request = function()\n  i = i + 1\n"
        f'  return wrk.format("POST", "{path}", {{["Content-Type"]="application/json"}}, '
        "bodies[(i % #bodies) + 1])\nend\n"
    )


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(
    port: int,
    path: str,
    bodies: Sequence[str],
    work: Path,
    connections: int = 16,
    seconds: int = 10,
) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, capture_output=True)
    script = work / "wrk.lua"
    script.write_text(_lua(path, bodies))
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    latency = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    return {
        "connections": connections,
        "seconds": seconds,
        "requests": int(total.group(1)) if total else 0,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        # wrk prints no distribution when no request completed (a warm-up on a machine
        # too busy to answer within wrk's 2 s timeout): then the percentiles are None.
        "p50_ms": _ms(latency["50"]) if "50" in latency else None,
        "p90_ms": _ms(latency["90"]) if "90" in latency else None,
        "p99_ms": _ms(latency["99"]) if "99" in latency else None,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": "Socket errors" in out,
    }


# uvicorn closes a keep-alive connection idle for 5 s (its default, and Ragtide's
# ``http.keep_alive_s``). The open loop's pool retires a connection idle for longer than
# this, safely below, instead of writing a request the server may be closing on.
KEEP_ALIVE_S = 4.0


class _ClosedBeforeResponse(ConnectionError):
    """The server closed the connection before sending any byte of the response."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.last_used = time.monotonic()

    def close(self) -> None:
        self.writer.close()


def idempotent(method: str, path: str) -> bool:
    """Whether a request may be sent again when its connection dies before any answer:
    GETs and searches (read-only), never uploads or chat turns (a turn is saved)."""
    return method in ("GET", "HEAD") or path.rstrip("/").endswith("/search")


class ConnectionPool:
    """Raw HTTP/1.1 keep-alive connections to ``127.0.0.1:port`` for the open loop.

    The most recently used connection is handed out first, so at a low rate a few warm
    connections carry the load instead of each of ``size`` going cold in turn. A
    connection idle longer than ``keep_alive_s`` (keep it below the server's keep-alive
    timeout) or already closed by the server is replaced before use. A connection closed
    by the server before any byte of the response (the race with its keep-alive timer)
    costs an idempotent request one retry on a fresh connection; anything else is a
    failure of that request.
    """

    def __init__(self, port: int, size: int = 64, keep_alive_s: float = KEEP_ALIVE_S) -> None:
        self.port, self.size, self.keep_alive_s = port, size, keep_alive_s
        self._idle: list[_Connection] = []  # a stack: the warmest on top
        self._slots = asyncio.Semaphore(size)
        self.opened = 0
        self.expired = 0  # retired before use: idle too long, or closed by the server
        self.retried = 0  # idempotent requests sent again after a close before any answer

    async def start(self) -> None:
        """Open every connection now, so that no measured request pays for a connect."""
        self._idle += await asyncio.gather(*(self._open() for _ in range(self.size)))

    async def aclose(self) -> None:
        while self._idle:
            self._idle.pop().close()

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        retry: bool | None = None,
        timeout: float | None = None,
    ) -> int:
        """Send one request and read its whole response; the status. ``timeout`` bounds
        each exchange (not the wait for a free connection); ``retry`` defaults to
        ``idempotent(method, path)``."""
        retry = idempotent(method, path) if retry is None else retry
        async with self._slots:
            conn = await self._checkout()
            try:
                try:
                    status, keep = await asyncio.wait_for(
                        _exchange(conn, method, path, body), timeout
                    )
                except _ClosedBeforeResponse:
                    if not retry:
                        raise
                    conn.close()
                    self.retried += 1
                    conn = await self._open()
                    status, keep = await asyncio.wait_for(
                        _exchange(conn, method, path, body), timeout
                    )
            except BaseException:
                conn.close()
                raise
            if keep:
                conn.last_used = time.monotonic()
                self._idle.append(conn)
            else:
                conn.close()
            return status

    async def _checkout(self) -> _Connection:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.last_used < self.keep_alive_s and not conn.reader.at_eof():
                return conn
            conn.close()
            self.expired += 1
        return await self._open()

    async def _open(self) -> _Connection:
        self.opened += 1
        return _Connection(*await asyncio.open_connection("127.0.0.1", self.port))


async def _exchange(conn: _Connection, method: str, path: str, body: bytes) -> tuple[int, bool]:
    """One request on a keep-alive connection: (status, whether the connection stays open)."""
    reader, writer = conn.reader, conn.writer
    try:
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        first = await reader.read(1)
    except (ConnectionResetError, BrokenPipeError) as exc:
        raise _ClosedBeforeResponse("reset before any byte of the response") from exc
    if not first:
        raise _ClosedBeforeResponse("closed before any byte of the response")
    head = first + await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length, keep = 0, True
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            keep = False
    await reader.readexactly(length)
    return status, keep


async def _open_loop(
    port: int,
    path: str,
    bodies: Sequence[dict[str, Any]],
    rate: float,
    seconds: float,
    connections: int = 64,
    keep_alive_s: float = KEEP_ALIVE_S,
) -> dict[str, Any]:
    """POSTs sent on a fixed schedule (open loop) over a ``ConnectionPool`` of raw
    connections (``keep_alive_s`` below the server's keep-alive timeout).

    Latency counts from the scheduled send time, so a request that waited for a free
    connection or for the server is charged that wait (no coordinated omission). A raw
    client, because httpx's pool slows down quadratically with thousands queued.
    """
    n = int(rate * seconds)
    latencies: list[float] = []
    failures = 0
    payloads = [orjson.dumps(b) for b in bodies]
    pool = ConnectionPool(port, connections, keep_alive_s)
    await pool.start()
    start = time.perf_counter()

    async def one(i: int) -> None:
        nonlocal failures
        scheduled = start + i / rate
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        try:
            status = await pool.request("POST", path, payloads[i % len(payloads)], timeout=30)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            status = None
        if status == 200:
            latencies.append(time.perf_counter() - scheduled)
        else:
            failures += 1

    try:
        await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        await pool.aclose()
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float | None:
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2)

    return {
        "rate": rate,
        "requests": n,
        "failures": failures,
        "achieved_rps": round(n / elapsed, 1),
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": round(latencies[-1] * 1000, 2) if latencies else None,
        "connections_opened": pool.opened,
        "connections_expired": pool.expired,
        "retried": pool.retried,
    }


def open_loop(
    port: int,
    path: str,
    bodies: Sequence[dict[str, Any]],
    rate: float,
    seconds: float,
    keep_alive_s: float = KEEP_ALIVE_S,
) -> dict[str, Any]:
    return asyncio.run(_open_loop(port, path, bodies, rate, seconds, keep_alive_s=keep_alive_s))


def _startup(spawn: Spawn, port_path: str, runs: int) -> dict[str, Any]:
    times, rss = [], []
    for _ in range(runs):
        port = free_port()
        began = time.perf_counter()
        proc = spawn(port)
        try:
            times.append(wait_ready(proc, port, began, port_path))
            time.sleep(0.5)  # let start-up garbage settle before reading idle memory
            rss.append(rss_mb(proc.pid))
        finally:
            stop(proc)
    return {
        "runs": runs,
        "ready_s_median": round(statistics.median(times), 3),
        "ready_s_all": [round(t, 3) for t in times],
        "idle_rss_mb_median": round(statistics.median(rss), 1),
    }


def measure_server(data: Path, work: Path, argv: Sequence[str] = ()) -> dict[str, Any]:
    runs = 7
    queries = prepare(data, work)
    rt_dir = work / "ragtide"
    result: dict[str, Any] = {
        "machine": {"cores": os.cpu_count()},
        "documents": 2000,
        "startup": {
            "ragtide": _startup(lambda p: spawn_ragtide(rt_dir, p), "/ready", runs),
            "baseline": _startup(lambda p: spawn_baseline(work, p), "/ready", runs),
        },
    }
    search_bodies = [json.dumps({"query": q, "top_k": 5}) for q in queries[:500]]
    throughput: dict[str, Any] = {}
    targets: list[tuple[str, Spawn, str]] = [
        ("ragtide", lambda p: spawn_ragtide(rt_dir, p), "/v1/namespaces/bench/search"),
        ("baseline", lambda p: spawn_baseline(work, p), "/search"),
    ]
    for name, spawn, path in targets:
        port = free_port()
        proc = spawn(port)
        try:
            wait_ready(proc, port, time.perf_counter())
            wrk(port, path, search_bodies, work, seconds=3)  # warm-up
            cpu0 = cpu_seconds(proc.pid)
            run = wrk(port, path, search_bodies, work, seconds=10)
            run["cpu_ms_per_request"] = round(
                (cpu_seconds(proc.pid) - cpu0) * 1000 / max(1, run["requests"]), 3
            )
            run["rss_mb_after"] = round(rss_mb(proc.pid), 1)
            throughput[name] = run
        finally:
            stop(proc)
    result["search"] = throughput
    port = free_port()
    proc = spawn_ragtide(rt_dir, port, NO_ANSWER_CACHE)
    try:
        wait_ready(proc, port, time.perf_counter())
        bodies = [{"message": q} for q in queries[:500]]
        open_loop(port, "/v1/namespaces/bench/chat", bodies, 50, 3)  # warm-up
        result["chat_50rps"] = open_loop(port, "/v1/namespaces/bench/chat", bodies, 50, 20)
    finally:
        stop(proc)
    rt, base = result["startup"]["ragtide"], result["startup"]["baseline"]
    result["ratios"] = {
        "ready_time_vs_baseline": round(rt["ready_s_median"] / base["ready_s_median"], 2),
        "idle_rss_vs_baseline": round(rt["idle_rss_mb_median"] / base["idle_rss_mb_median"], 2),
        "search_rps_vs_baseline": round(
            throughput["ragtide"]["rps"] / throughput["baseline"]["rps"], 2
        ),
    }
    result["floors"] = {
        "ready_s_median": "<= 0.8 and <= 2x baseline",
        "idle_rss_mb": "<= 150",
        "search_rps": ">= 1000 at concurrency 16",
        "search_p99_ms": "<= 25",
        "chat_p99_ms_at_50rps": "<= 60",
    }
    return result


def _idle_cpu_millicores(pid: int, seconds: float = 3.0) -> float:
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return round((cpu_seconds(pid) - before) / seconds * 1000, 1)


def measure_capacity(data: Path, work: Path, argv: Sequence[str] = ()) -> dict[str, Any]:
    """One replica's capacity in the planner's ``capacity.json`` schema (version 1).

    Saturation is the closed-loop throughput under wrk (16 connections); the latency
    curve is measured open-loop at fractions of it. The replica is one process on one
    core of this machine, unthrottled: scale ``saturation_rps`` by the CPU limit you
    deploy with (the chart's default limit is half a core).
    """
    queries = prepare(data, work)
    rt_dir = work / "ragtide"
    startups = _startup(lambda p: spawn_ragtide(rt_dir, p), "/ready", 3)
    endpoints: dict[str, Any] = {}
    port = free_port()
    proc = spawn_ragtide(rt_dir, port, NO_ANSWER_CACHE)
    try:
        wait_ready(proc, port, time.perf_counter())
        idle = _idle_cpu_millicores(proc.pid)
        targets: list[tuple[str, float, str, str]] = [
            ("chat", 0.75, "/v1/namespaces/bench/chat", "message"),
            ("search", 0.25, "/v1/namespaces/bench/search", "query"),
        ]
        for name, share, path, field in targets:
            bodies: list[dict[str, Any]] = [{field: q} for q in queries[:500]]
            wrk(port, path, [json.dumps(b) for b in bodies], work, seconds=3)  # warm-up
            cpu0 = cpu_seconds(proc.pid)
            closed = wrk(port, path, [json.dumps(b) for b in bodies], work, seconds=8)
            cpu = (cpu_seconds(proc.pid) - cpu0) / max(1, closed["requests"])
            saturation = closed["rps"]
            curve = []
            for fraction in (0.1, 0.3, 0.5, 0.7, 0.8, 0.9):
                rate = round(saturation * fraction, 1)
                point = open_loop(port, path, bodies, rate, 5)
                if point["failures"] or point["p50_ms"] is None:
                    continue
                curve.append(
                    {
                        "rps": rate,
                        "p50_ms": max(point["p50_ms"], 0.01),
                        "p99_ms": max(point["p99_ms"], point["p50_ms"], 0.01),
                    }
                )
            endpoints[name] = {
                "share": share,
                "saturation_rps": round(saturation, 1),
                "concurrency": 1,  # one event loop, CPU-bound: an M/M/1 queue
                "cpu_seconds_per_request": round(cpu, 6),
                "latency": curve,
            }
    finally:
        stop(proc)
    return {
        "schema_version": 1,
        "source": (
            "ragtide bench capacity: one replica (one process, unthrottled core of a "
            f"{os.cpu_count()}-core machine), SciFact 2,000 documents, extractive answerer"
        ),
        "replica": {
            "startup_seconds": startups["ready_s_median"],
            "idle_cpu_millicores": idle,
            "startup_cpu_millicores": 1000,
        },
        "endpoints": endpoints,
    }
