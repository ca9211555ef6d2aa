"""Where the CPU of one ``POST /v1/namespaces/{ns}/search`` goes, component by component.

    python -m ragtide.bench.breakdown --data-dir DIR [--seconds 10] [--out FILE]

Serves ``DIR`` the way ``ragtide serve`` does (same app, same uvicorn protocol, uvloop,
one process), drives it with wrk (16 connections, the first 200 SciFact train queries,
``top_k`` 5, as ``../shared/peers/harness.py`` does) and charges the server thread's CPU
time (``time.thread_time_ns``: on a busy machine, time spent waiting for a core is not
counted) to the component that was running. Components are entered and left at hooks
wrapped around the functions named in ``HOOKS``; the time between two hooks goes to the
component on top of a stack, so each number is *exclusive* (a middleware's own code, not
what it calls). ``outside`` is the event loop and everything no hook covers.

Every hook costs a clock read; that cost is measured in-process and subtracted per
segment, and the report also gives the whole process's CPU per request from ``/proc``.
It is a measuring tool: it patches framework internals of the versions it was written
against (FastAPI 0.165, Starlette 1.10, uvicorn 0.55) and skips hooks it cannot find.
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

__all__ = ["HOOKS", "Ledger", "main"]

_now = time.thread_time_ns
PATH = "/v1/namespaces/default/search"

# component -> (group, the functions that enter it, as module:attribute). Async functions
# get async wrappers; a name that does not exist (another version) is skipped.
HOOKS: dict[str, tuple[str, list[str]]] = {
    "uvicorn: httptools parse, scope": (
        "http",
        [
            "ragtide.server:LimitedHttpToolsProtocol.data_received",
        ],
    ),
    "uvicorn: ASGI cycle": (
        "http",
        [
            "uvicorn.protocols.http.httptools_impl:RequestResponseCycle.run_asgi",
        ],
    ),
    "uvicorn: receive": (
        "http",
        [
            "uvicorn.protocols.http.httptools_impl:RequestResponseCycle.receive",
        ],
    ),
    "uvicorn: send (head, body)": (
        "http",
        [
            "uvicorn.protocols.http.httptools_impl:RequestResponseCycle.send",
            "ragtide.server:OneWriteCycle.send",
        ],
    ),
    "uvicorn: proxy headers middleware": (
        "http",
        [
            "uvicorn.middleware.proxy_headers:ProxyHeadersMiddleware.__call__",
        ],
    ),
    "framework: app entry": (
        "framework",
        [
            "fastapi.applications:FastAPI.__call__",
        ],
    ),
    "framework: middleware (errors, telemetry, body limit, exceptions, exit stack)": (
        "framework",
        [
            "starlette.middleware.errors:ServerErrorMiddleware.__call__",
            "fastapi.telemetry._asgi:ExceptionTelemetryMiddleware.__call__",
            "fastapi._body_limit:AppBodyLimitMiddleware.__call__",
            "starlette.middleware.exceptions:ExceptionMiddleware.__call__",
            "fastapi.middleware.asyncexitstack:AsyncExitStackMiddleware.__call__",
        ],
    ),
    "framework: routing (route matching)": (
        "framework",
        [
            "starlette.routing:Router.__call__",
        ],
    ),
    "framework: request handler (Request, path params, DI)": (
        "framework",
        [
            "fastapi.routing:APIRoute.handle",
        ],
    ),
    "endpoint: search() glue": (
        "endpoint",
        [
            "fastapi.routing:run_endpoint_function",
        ],
    ),
    "framework: response send (+ send wrappers)": (
        "framework",
        [
            "starlette.responses:Response.__call__",
        ],
    ),
    "middleware: in-flight limit": (
        "middleware",
        [
            "ragtide.api.limits:InFlightLimitMiddleware.__call__",
        ],
    ),
    "middleware: request id, body limit, 500 guard": (
        "middleware",
        [
            "ragtide.api.middleware:RequestMiddleware.__call__",
        ],
    ),
    "fast path: dispatch": (
        "endpoint",
        [
            "ragtide.api.fastpath:SearchFastPath.__call__",
        ],
    ),
    "fast path: search() glue": (
        "endpoint",
        [
            "ragtide.api.fastpath:SearchFastPath._serve",
        ],
    ),
    "middleware: request id (uuid4 or batch)": (
        "middleware",
        [
            "uuid:uuid4",
            "ragtide.api.middleware:new_request_id",
        ],
    ),
    "access log: JSON line + write(2)": (
        "access log",
        [
            "ragtide.api.middleware:write_access_log",
        ],
    ),
    "metrics: prometheus .labels()": (
        "metrics",
        [
            "prometheus_client.metrics:MetricWrapperBase.labels",
            "ragtide.api.middleware:labelled",
            "ragtide.api.deps:labelled",
        ],
    ),
    "metrics: prometheus updates": (
        "metrics",
        [
            "prometheus_client.metrics:Counter.inc",
            "prometheus_client.metrics:Gauge.inc",
            "prometheus_client.metrics:Gauge.dec",
            "prometheus_client.metrics:Histogram.observe",
        ],
    ),
    "metrics: stage timers": (
        "metrics",
        [
            "ragtide.observability:stage.__aenter__",
            "ragtide.observability:stage.__aexit__",
        ],
    ),
    "request: body, JSON parse, pydantic validation": (
        "validation",
        [
            "ragtide.api.routes.chat:json_body",
        ],
    ),
    "auth + tenant: principal, scope, rate, runtime": (
        "auth/tenant",
        [
            "ragtide.api.routes.chat:call",
        ],
    ),
    "auth + tenant: namespace open, policies": (
        "auth/tenant",
        [
            "ragtide.api.deps:Call.open",
        ],
    ),
    "retrieval: chat.search glue": (
        "retrieval",
        [
            "ragtide.chat:search",
        ],
    ),
    "retrieval: namespace exists (SQLite)": (
        "retrieval",
        [
            "ragtide.runtime:Runtime.require_namespace",
        ],
    ),
    "retrieval: query embedding": (
        "retrieval",
        [
            "ragtide.builtin.static_embedder:StaticEmbedder.embed_query",
        ],
    ),
    "retrieval: retriever glue": (
        "retrieval",
        [
            "ragtide.builtin.retrievers:HybridRetriever.retrieve",
        ],
    ),
    "retrieval: BM25 (terms, top-k)": (
        "retrieval",
        [
            "ragtide.builtin.sqlite_store:SQLiteStore.keyword_search",
        ],
    ),
    "retrieval: vector top-k": (
        "retrieval",
        [
            "ragtide.builtin.sqlite_store:SQLiteStore.vector_search",
        ],
    ),
    "retrieval: hit fetch": (
        "retrieval",
        [
            "ragtide.builtin.sqlite_store:SQLiteStore._hits",
        ],
    ),
    "retrieval: index snapshot (held, released)": (
        "retrieval",
        [
            "ragtide.builtin.sqlite_store:SQLiteStore._held",
            "ragtide.builtin.sqlite_store:SQLiteStore._release",
        ],
    ),
    "retrieval: BM25 query analysis": (
        "retrieval",
        [
            "ragtide.builtin.bm25:Analyzer.query_terms",
        ],
    ),
    "retrieval: BM25 term ids": (
        "retrieval",
        [
            "ragtide.builtin.sqlite_store:SQLiteStore._query_ids",
        ],
    ),
    "retrieval: BM25 MaxScore top-k (wand.py)": (
        "retrieval",
        [
            "ragtide.builtin.sqlite_store:top_k",
        ],
    ),
    "retrieval: vector exact top-k (numpy)": (
        "retrieval",
        [
            "ragtide.builtin.sqlite_store:_exact_vector_top",
        ],
    ),
    "retrieval: fusion": (
        "retrieval",
        [
            "ragtide.builtin.retrievers:convex_fusion",
        ],
    ),
    "response: render hits, orjson": (
        "response",
        [
            "ragtide.api.routes.chat:render_hit",
            "starlette.responses:Response.__init__",
        ],
    ),
}


class Ledger:
    """Exclusive thread CPU time per component: a stack of components, one clock read
    per hook boundary."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.ns: dict[str, int] = defaultdict(int)
        self.segments: dict[str, int] = defaultdict(int)
        self.entries: dict[str, int] = defaultdict(int)
        self.stack = ["outside"]
        # Clocks are per thread: the first boundary after a reset (called from another
        # thread) only starts the clock.
        self.last = -1

    def push(self, component: str) -> None:
        t = _now()
        top = self.stack[-1]
        if self.last >= 0:
            self.ns[top] += t - self.last
            self.segments[top] += 1
        self.stack.append(component)
        self.entries[component] += 1
        self.last = t

    def pop(self) -> None:
        t = _now()
        top = self.stack.pop() if len(self.stack) > 1 else "outside"
        if self.last >= 0:
            self.ns[top] += t - self.last
            self.segments[top] += 1
        self.last = t


LEDGER = Ledger()
_SERVER_THREAD = [threading.get_ident()]


def _wrap(fn: Callable[..., Any], component: str) -> Callable[..., Any]:
    push, pop = LEDGER.push, LEDGER.pop
    if _is_async(fn):

        @functools.wraps(fn)
        async def async_hooked(*args: Any, **kwargs: Any) -> Any:
            push(component)
            try:
                return await fn(*args, **kwargs)
            finally:
                pop()

        return async_hooked

    @functools.wraps(fn)
    def hooked(*args: Any, **kwargs: Any) -> Any:
        push(component)
        try:
            return fn(*args, **kwargs)
        finally:
            pop()

    return hooked


def _is_async(fn: Callable[..., Any]) -> bool:
    import inspect

    return inspect.iscoroutinefunction(fn)


def install_hooks() -> list[str]:
    """Wrap every function ``HOOKS`` names that exists; the names of those skipped."""
    skipped = []
    for component, (_group, targets) in HOOKS.items():
        for target in targets:
            module_name, attr = target.split(":")
            try:
                owner: Any = importlib.import_module(module_name)
            except ImportError:
                skipped.append(target)
                continue
            *parents, name = attr.split(".")
            for part in parents:
                owner = getattr(owner, part, None)
            fn = owner.__dict__.get(name) if owner is not None else None
            if fn is None:
                skipped.append(target)
                continue
            setattr(owner, name, _wrap(fn, component))
    # what the kernel charges for writing to the socket, out of uvicorn's send
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    made = HttpToolsProtocol.connection_made

    def connection_made(self: Any, transport: Any) -> None:
        made(self, cast(Any, _TransportProxy(transport)))

    HttpToolsProtocol.connection_made = connection_made  # type: ignore[method-assign]
    gc.callbacks.append(_gc_callback)
    return skipped


class _TransportProxy:
    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self.write = _wrap(transport.write, "kernel: socket write(2)")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _gc_callback(phase: str, info: dict[str, Any]) -> None:
    if threading.get_ident() != _SERVER_THREAD[0]:
        return
    if phase == "start":
        LEDGER.push("gc")
    else:
        LEDGER.pop()


def _clock_cost_ns(rounds: int = 20000) -> float:
    """Thread CPU one push + pop pair costs, per boundary (half a pair)."""
    probe = Ledger()
    start = _now()
    for _ in range(rounds):
        probe.push("x")
        probe.pop()
    return (_now() - start) / (2 * rounds)


GROUP = {component: group for component, (group, _targets) in HOOKS.items()}
GROUP.update({"kernel: socket write(2)": "http", "outside": "http", "gc": "gc"})


def report(ledger: Ledger, requests: int, clock_ns: float) -> list[dict[str, Any]]:
    rows = []
    for component, ns in ledger.ns.items():
        corrected = max(0.0, ns - ledger.segments[component] * clock_ns)
        rows.append(
            {
                "component": component,
                "group": GROUP.get(component, "other"),
                "us_per_request": round(corrected / requests / 1000, 2),
                "entries_per_request": round(ledger.entries.get(component, 0) / requests, 2),
            }
        )
    rows.sort(key=lambda r: -float(cast(float, r["us_per_request"])))
    return rows


def _process_cpu_s() -> float:
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wrk(port: int, script: Path, seconds: int) -> dict[str, Any]:
    out = subprocess.run(
        ["wrk", "-t2", "-c16", f"-d{seconds}s", "-s", str(script), f"http://127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    total = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests": int(total.group(1)) if total else 0,
        "rps": float(rps.group(1)) if rps else 0.0,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def _lua(queries: Path) -> str:
    texts = []
    with queries.open(encoding="utf-8") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            if len(texts) == 200:
                break
    items = ",\n".join(f"[==[{json.dumps({'query': q, 'top_k': 5})}]==]" for q in texts)
    return (
        f"local bodies = {{\n{items}\n}}\nlocal i = 0\nrequest = function()\n  i = i + 1\n"
        f'  return wrk.format("POST", "{PATH}", {{["Content-Type"]="application/json"}}, '
        "bodies[(i % #bodies) + 1])\nend\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ragtide.bench.breakdown", description=__doc__)
    ap.add_argument("--data-dir", required=True, help="a data dir made by `ragtide ingest`")
    ap.add_argument("--queries", default="../shared/data/scifact/queries.train.jsonl")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--port", type=int, default=8899)
    ap.add_argument("--no-hooks", action="store_true", help="only the process's CPU/request")
    ap.add_argument("--out", help="write the result as JSON here")
    args = ap.parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

    import uvicorn

    from ragtide.api.app import create_app
    from ragtide.observability import configure_logging
    from ragtide.server import DrainingServer, limited_protocol
    from ragtide.settings import Settings

    settings = Settings(data_dir=Path(args.data_dir))
    configure_logging(settings.logging.level, settings.logging.format)
    http = settings.http
    config = uvicorn.Config(
        create_app(settings, configure_logs=False),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http=limited_protocol(http.header_timeout_s, http.keep_alive_s, http.max_connections),
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        interface="asgi3",
    )
    config.load()  # before the hooks: uvicorn probes the app by calling it
    skipped = [] if args.no_hooks else install_hooks()
    server = DrainingServer(config, 0)
    script = Path(f"/tmp/ragtide-breakdown-{os.getpid()}.lua")
    script.write_text(_lua(Path(args.queries)))
    result: dict[str, Any] = {}

    def drive() -> None:
        try:
            while not server.started:
                time.sleep(0.05)
            # stderr carries the access log: keep it out of the terminal
            devnull = os.open(os.devnull, os.O_WRONLY)
            saved = os.dup(2)
            os.dup2(devnull, 2)
            try:
                _wrk(args.port, script, args.warmup)
                clock = 0.0 if args.no_hooks else _clock_cost_ns()
                LEDGER.reset()
                cpu0 = _process_cpu_s()
                run = _wrk(args.port, script, args.seconds)
                cpu = _process_cpu_s() - cpu0
                snapshot = (dict(LEDGER.ns), dict(LEDGER.segments), dict(LEDGER.entries))
            finally:
                os.dup2(saved, 2)
            n = max(1, run["requests"])
            ledger = Ledger()
            ledger.ns, ledger.segments, ledger.entries = (defaultdict(int, d) for d in snapshot)
            rows = [] if args.no_hooks else report(ledger, n, clock)
            groups: dict[str, float] = defaultdict(float)
            for row in rows:
                groups[row["group"]] += row["us_per_request"]
            result.update(
                {
                    "wrk": run,
                    "process_cpu_us_per_request": round(cpu * 1e6 / n, 1),
                    "hooked_thread_cpu_us_per_request": round(
                        sum(r["us_per_request"] for r in rows), 1
                    ),
                    "clock_read_ns": round(clock),
                    "groups_us_per_request": {k: round(v, 1) for k, v in groups.items()},
                    "components": rows,
                    "skipped_hooks": skipped,
                    "load": os.getloadavg(),
                }
            )
        finally:
            server.should_exit = True

    threading.Thread(target=drive, daemon=True).start()
    server.run()
    script.unlink(missing_ok=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
