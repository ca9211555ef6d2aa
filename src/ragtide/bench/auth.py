"""What authentication costs, and how fast a revoked key stops working (``ragtide bench auth``).

In one run on one machine:

- ``/search`` under wrk at 16 connections (as ``ragtide bench server`` measures it, same
  2,000 SciFact documents) with auth off, with an API key and with a JWT; the tenant's
  search quota is 0 (unlimited) so that only the credential check differs. One more
  variant keeps a quota far above the load, adding the (in-process) rate limiter's check
  that every request of a tenant with a quota pays. One server process per variant,
  all started up front (idle but the one under load); wrk turns to each in turn, round
  after round, and each variant is compared with auth off round by round (the median of
  the paired ratios), so that the load others put on a shared machine falls on every
  variant alike;
- ``Authenticator.authenticate`` in a loop, in-process: microseconds per call for a
  cached API key, a cached JWT and the anonymous caller of auth-off mode;
- the revocation delay across three replicas on one PostgreSQL: a key is checked on
  every replica (so each has it cached), revoked through replica 1, and replicas 2 and 3
  are polled until they answer 401. The bound is ``auth.cache_seconds`` (≤ 5 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ragtide.bench.server import (
    CLK_TCK,
    _ms,
    cpu_seconds,
    free_port,
    prepare,
    spawn_ragtide,
    stop,
    wait_ready,
)

__all__ = ["measure_auth"]

SEARCH = "/v1/namespaces/bench/search"
CONNECTIONS = 16
FLOORS = {
    "rps_ratio_key_vs_off": ">= 0.95",
    "cpu_ms_per_request_key_minus_off": "<= 0.05",
    "revocation_max_s": "<= 5",
}


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ragtide bench auth")
    parser.add_argument(
        "--pg",
        default=os.environ.get("RAGTIDE_BENCH_PG", "postgresql://postgres@127.0.0.1:5433/ragtide"),
        help="an admin DSN of the PostgreSQL server (a database is created and dropped)",
    )
    parser.add_argument("--seconds", type=int, default=4, help="wrk duration per point")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds of variants")
    parser.add_argument("--trials", type=int, default=5, help="revocations measured")
    parser.add_argument("--calls", type=int, default=100_000, help="microbenchmark calls")
    return parser.parse_args(list(argv))


# --- credentials ------------------------------------------------------------------------


class _Issuer:
    """An EC P-256 identity provider: a JWKS file and ES256 tokens for tenant default."""

    def __init__(self, directory: Path) -> None:
        import jwt
        from cryptography.hazmat.primitives.asymmetric import ec

        self._private = ec.generate_private_key(ec.SECP256R1())
        public = jwt.algorithms.ECAlgorithm.to_jwk(self._private.public_key(), as_dict=True)
        public.update({"kid": "bench", "alg": "ES256", "use": "sig"})
        directory.mkdir(parents=True, exist_ok=True)
        self.jwks_file = directory / "jwks.json"
        self.jwks_file.write_text(json.dumps({"keys": [public]}), encoding="utf-8")

    def token(self, tenant: str = "default") -> str:
        import jwt

        now = int(time.time())
        claims = {"sub": "bench", "tenant": tenant, "scope": "read", "iat": now, "exp": now + 3600}
        return jwt.encode(claims, self._private, algorithm="ES256", headers={"kid": "bench"})


def _create_key(url: str, admin_key: str, tenant: str = "default") -> tuple[str, str]:
    r = httpx.post(
        f"{url}/v1/tenants/{tenant}/keys",
        json={"scopes": ["read"], "description": "ragtide bench auth"},
        headers={"Authorization": f"Bearer {admin_key}"},
        timeout=30,
    )
    r.raise_for_status()
    body = r.json()
    return str(body["key"]), str(body["id"])


# --- throughput -------------------------------------------------------------------------


def _lua(path: str, bodies: Sequence[str], headers: dict[str, str]) -> str:
    items = ",\n".join(json.dumps(b) for b in bodies)  # JSON string literals are Lua-safe here
    fields = ", ".join(f"[{json.dumps(k)}]={json.dumps(v)}" for k, v in headers.items())
    return (
        f"local bodies = {{\n{items}\n}}\nlocal headers = {{{fields}}}\nlocal i = 0\n"
        "request = function()\n  i = i + 1\n"
        f'  return wrk.format("POST", "{path}", headers, bodies[(i % #bodies) + 1])\nend\n'
    )


def _wrk(
    port: int, bodies: Sequence[str], headers: dict[str, str], work: Path, seconds: int
) -> dict[str, Any]:
    """``ragtide.bench.server.wrk`` with request headers (the credential)."""
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, capture_output=True)
    script = work / "wrk-auth.lua"
    script.write_text(_lua(SEARCH, bodies, {"Content-Type": "application/json", **headers}))
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{CONNECTIONS}",
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
    if "99" not in latency:
        raise RuntimeError(f"wrk measured nothing on port {port}:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return {
        "requests": int(total.group(1)) if total else 0,
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50_ms": _ms(latency["50"]),
        "p99_ms": _ms(latency["99"]),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }


VARIANTS = ("off", "off_with_key", "key", "jwt", "key_quota")


def _variants(issuer: _Issuer) -> dict[str, dict[str, str]]:
    unlimited = {
        "RAGTIDE_TENANTS__QUOTAS__SEARCH_PER_SECOND": "0",
        # Same string hashing in every process: one less source of process-to-process noise.
        "PYTHONHASHSEED": "0",
    }
    on = {"RAGTIDE_AUTH__ENABLED": "true"}
    return {
        "off": dict(unlimited),
        "key": {**unlimited, **on},
        "jwt": {**unlimited, **on, "RAGTIDE_AUTH__JWT__JWKS_FILE": str(issuer.jwks_file)},
        # A quota far above what one process serves: the limiter checks, never refuses.
        "key_quota": {
            **unlimited,
            **on,
            "RAGTIDE_TENANTS__QUOTAS__SEARCH_PER_SECOND": "1000000",
        },
    }


def _machine_busy_s() -> float:
    """CPU seconds spent busy by the whole machine (every core, every process)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / CLK_TCK


@dataclass(slots=True)
class _Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    headers: dict[str, str]
    admin_key: str


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _start(
    name: str, env: dict[str, str], data_dir: Path, bodies: Sequence[str], issuer: _Issuer
) -> _Server:
    admin_key = secrets.token_urlsafe(24)
    port = free_port()
    proc = spawn_ragtide(data_dir, port, {**env, "RAGTIDE_AUTH__ADMIN_KEY": admin_key})
    try:
        wait_ready(proc, port, time.perf_counter())
        headers: dict[str, str] = {}
        if name in ("key", "key_quota"):
            key, _ = _create_key(f"http://127.0.0.1:{port}", admin_key)
            headers = {"Authorization": f"Bearer {key}"}
        elif name == "jwt":
            headers = {"Authorization": f"Bearer {issuer.token()}"}
        first = httpx.post(
            f"http://127.0.0.1:{port}{SEARCH}",
            content=bodies[0],
            headers={"Content-Type": "application/json", **headers},
            timeout=30,
        )
        if first.status_code != 200:
            raise RuntimeError(f"{name}: /search answered {first.status_code}: {first.text}")
    except BaseException:
        stop(proc)
        raise
    return _Server(name, proc, port, headers, admin_key)


def _measure(server: _Server, bodies: Sequence[str], work: Path, seconds: int) -> dict[str, Any]:
    cpu0, busy0 = cpu_seconds(server.proc.pid), _machine_busy_s()
    run = _wrk(server.port, bodies, server.headers, work, seconds=seconds)
    cpu, busy = cpu_seconds(server.proc.pid) - cpu0, _machine_busy_s() - busy0
    run["cpu_ms_per_request"] = round(cpu * 1000 / max(1, run["requests"]), 4)
    # Cores kept busy by everything but this server (wrk and whatever else runs here).
    run["other_cores_busy"] = round((busy - cpu) / seconds, 2)
    return run


def _throughput(
    data_dir: Path, work: Path, queries: Sequence[str], issuer: _Issuer, args: argparse.Namespace
) -> dict[str, Any]:
    """Every variant's server runs (idle but one) for the whole measurement; wrk turns to
    each in turn, round after round, the order rotating: neighbours' load on this machine
    then falls on every variant alike, and each round compares runs seconds apart."""
    bodies = [json.dumps({"query": q, "top_k": 5}) for q in queries[:500]]
    variants = _variants(issuer)
    servers: list[_Server] = []
    try:
        for name, env in variants.items():
            copy = work / f"ragtide-{name}"  # its own copy: the key is written into it
            shutil.copytree(data_dir, copy)
            servers.append(_start(name, env, copy, bodies, issuer))
            if name == "off":
                # The same process with a key: auth off still checks a credential that is
                # presented, so this isolates the key check from process-to-process noise.
                plain = servers[-1]
                key, _ = _create_key(f"http://127.0.0.1:{plain.port}", plain.admin_key)
                servers.append(
                    _Server("off_with_key", plain.proc, plain.port, _bearer(key), plain.admin_key)
                )
        for server in servers:
            _wrk(server.port, bodies, server.headers, work, seconds=2)  # warm-up
        runs: dict[str, list[dict[str, Any]]] = {s.name: [] for s in servers}
        for r in range(args.rounds):
            for server in servers[r % len(servers) :] + servers[: r % len(servers)]:
                runs[server.name].append(_measure(server, bodies, work, args.seconds))
    finally:
        for proc in {id(s.proc): s.proc for s in servers}.values():
            stop(proc)
    out: dict[str, Any] = {}
    for name, points in runs.items():
        out[name] = {
            "rps": round(statistics.median(p["rps"] for p in points), 1),
            "p50_ms": round(statistics.median(p["p50_ms"] for p in points), 2),
            "p99_ms": round(statistics.median(p["p99_ms"] for p in points), 2),
            "cpu_ms_per_request": round(
                statistics.median(p["cpu_ms_per_request"] for p in points), 4
            ),
            "non_2xx": sum(p["non_2xx"] for p in points),
            "rounds": points,
        }
    baseline = runs["off"]
    for name, points in runs.items():
        if name == "off":
            continue
        # Paired by round (runs seconds apart), then the median over rounds.
        out[name]["rps_vs_off"] = round(
            statistics.median(p["rps"] / o["rps"] for p, o in zip(points, baseline, strict=True)), 3
        )
        out[name]["cpu_ms_per_request_added"] = round(
            statistics.median(
                p["cpu_ms_per_request"] - o["cpu_ms_per_request"]
                for p, o in zip(points, baseline, strict=True)
            ),
            4,
        )
    return out


# --- microbenchmark ---------------------------------------------------------------------


async def _micro(work: Path, issuer: _Issuer, calls: int) -> dict[str, Any]:
    from ragtide.auth.authenticator import Authenticator
    from ragtide.auth.jwt import JWTVerifier
    from ragtide.auth.keys import new_key
    from ragtide.components import TenantStore
    from ragtide.registry import Registry
    from ragtide.runtime import build_runtime
    from ragtide.settings import AuthSettings, JWTSettings, Settings
    from ragtide.tenants import TenantDirectory

    # Auth on and a quota: the runtime has the (in-process) rate limiter admit() uses.
    settings = Settings(
        data_dir=work / "micro",
        auth={"enabled": True},
        tenants={"quotas": {"search_per_second": 1_000_000}},
    )
    registry = Registry.from_entry_points(settings.plugins.allow)
    rt = build_runtime(settings, registry)
    await rt.start()
    try:
        assert isinstance(rt.store, TenantStore)
        directory = TenantDirectory(rt, rt.store, registry)
        key, record = new_key("default", ["read"])
        await rt.store.add_key(record)
        jwt_settings = JWTSettings(jwks_file=issuer.jwks_file)
        on = AuthSettings(enabled=True, admin_key=secrets.token_urlsafe(24), jwt=jwt_settings)
        authenticators = {
            "anonymous_auth_off": (Authenticator(AuthSettings(), rt.store, directory), None),
            "api_key_cached": (Authenticator(on, rt.store, directory), f"Bearer {key}"),
            "jwt_cached": (
                Authenticator(on, rt.store, directory, jwt=JWTVerifier(jwt_settings)),
                f"Bearer {issuer.token()}",
            ),
        }
        out: dict[str, Any] = {"calls": calls}
        for name, (auth, header) in authenticators.items():
            await auth.start()
            try:
                first = await auth.authenticate(header)  # fills the caches
                assert first.tenant == "default"
                best = float("inf")
                for _ in range(3):  # best of three: the least disturbed by neighbours
                    began = time.perf_counter()
                    for _ in range(calls):
                        await auth.authenticate(header)
                    best = min(best, time.perf_counter() - began)
                out[f"{name}_us"] = round(best / calls * 1e6, 3)
            finally:
                await auth.aclose()
        who = await authenticators["api_key_cached"][0].authenticate(f"Bearer {key}")
        await directory.admit(who, "search")
        best = float("inf")
        for _ in range(3):
            began = time.perf_counter()
            for _ in range(calls):
                await directory.admit(who, "search")
            best = min(best, time.perf_counter() - began)
        out["admit_search_quota_in_memory_us"] = round(best / calls * 1e6, 3)
        await directory.aclose()
        return out
    finally:
        await rt.aclose()


# --- revocation -------------------------------------------------------------------------


def _status(client: httpx.Client, url: str, key: str) -> int:
    r = client.get(f"{url}/v1/namespaces", headers={"Authorization": f"Bearer {key}"})
    return r.status_code


def _revocation(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from ragtide.bench.cluster import _create_database, _drop_database
    from ragtide.settings import AuthSettings

    db, dsn = _create_database(args.pg)
    admin_key = secrets.token_urlsafe(24)
    env = {
        "RAGTIDE_LOGGING__LEVEL": "WARNING",
        "RAGTIDE_STORE__URL": dsn,
        "RAGTIDE_AUTH__ENABLED": "true",
        "RAGTIDE_AUTH__ADMIN_KEY": admin_key,
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # The first replica alone runs the migrations; then the other two.
        ports = [free_port() for _ in range(3)]
        for i, port in enumerate(ports):
            procs.append(spawn_ragtide(work / f"revoke-{i}", port, env))
            wait_ready(procs[-1], port, time.perf_counter())
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        admin = {"Authorization": f"Bearer {admin_key}"}
        trials: list[dict[str, Any]] = []
        with httpx.Client(timeout=10) as client:
            r = client.put(f"{urls[0]}/v1/tenants/revoke", json={}, headers=admin)
            r.raise_for_status()
            for _ in range(args.trials):
                key, key_id = _create_key(urls[0], admin_key, "revoke")
                # Each replica checks the key just before the revocation: a fresh cache
                # entry, the worst case.
                assert all(_status(client, u, key) == 200 for u in urls)
                began = time.monotonic()
                r = client.delete(f"{urls[0]}/v1/tenants/revoke/keys/{key_id}", headers=admin)
                r.raise_for_status()
                refused = (
                    {0: time.monotonic() - began} if _status(client, urls[0], key) == 401 else {}
                )
                while len(refused) < 3 and time.monotonic() - began < 30:
                    for i in (1, 2):
                        if i not in refused and _status(client, urls[i], key) == 401:
                            refused[i] = time.monotonic() - began
                    time.sleep(0.005)
                if len(refused) < 3:
                    raise RuntimeError(f"a revoked key still worked after 30 s: {refused}")
                trials.append(
                    {
                        "replica_1_refuses_at_once": 0 in refused and refused[0] < 0.5,
                        "replica_2_s": round(refused[1], 3),
                        "replica_3_s": round(refused[2], 3),
                    }
                )
    finally:
        for p in procs:
            stop(p)
        _drop_database(args.pg, db)
    delays = [t[f"replica_{i}_s"] for t in trials for i in (2, 3)]
    return {
        "replicas": 3,
        "store": "postgres",
        "auth_cache_seconds": AuthSettings().cache_seconds,
        "trials": trials,
        "max_s": max(delays),
        "median_s": round(statistics.median(delays), 3),
    }


# --- the bench --------------------------------------------------------------------------


def measure_auth(data: Path, work: Path, argv: Sequence[str] = ()) -> dict[str, Any]:
    args = _parse(argv)
    began = time.monotonic()
    result: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "loadavg_1m_at_start": os.getloadavg()[0]},
        "documents": 2000,
        "connections": CONNECTIONS,
        "seconds": args.seconds,
        "rounds": args.rounds,
    }
    queries = prepare(data, work)
    issuer = _Issuer(work / "idp")
    search = _throughput(work / "ragtide", work, queries, issuer, args)
    result["search"] = search
    result["authenticate"] = asyncio.run(_micro(work, issuer, args.calls))
    result["revocation"] = _revocation(work, args)
    off = search["off"]
    result["ratios"] = {f"rps_{n}_vs_off": search[n]["rps_vs_off"] for n in VARIANTS[1:]}
    result["cpu_ms_per_request_added"] = {
        n: search[n]["cpu_ms_per_request_added"] for n in VARIANTS[1:]
    }
    # What the microbenchmark predicts: the key check's cost on top of auth-off's request.
    micro = result["authenticate"]
    added_ms = (micro["api_key_cached_us"] - micro["anonymous_auth_off_us"]) / 1000
    result["predicted_from_microbenchmark"] = {
        "key_cpu_ms_per_request_added": round(added_ms, 4),
        "rps_key_vs_off": round(
            off["cpu_ms_per_request"] / (off["cpu_ms_per_request"] + added_ms), 3
        ),
    }
    result["floors"] = FLOORS
    result["verdicts"] = {
        "rps_ratio_key_vs_off": result["ratios"]["rps_key_vs_off"] >= 0.95,
        "cpu_ms_per_request_key_minus_off": result["cpu_ms_per_request_added"]["key"] <= 0.05,
        "revocation_max_s": result["revocation"]["max_s"] <= 5,
    }
    result["duration_s"] = round(time.monotonic() - began, 1)
    return result
