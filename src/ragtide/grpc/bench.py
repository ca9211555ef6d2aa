"""gRPC ``Search`` against HTTP ``/search``: one server process, the same data, one run.

    python -m ragtide.grpc.bench [--data DIR] [--seconds 10] [--concurrency 16] [--rounds 2]

One server process serves both (uvicorn with uvloop and the gRPC server in the same event
loop, as in production), over a 2,000-document SciFact slice ingested once. The load
generator is another process, closed-loop with ``--concurrency`` calls in flight, cycling
through the same queries (``top_k`` 5) for both protocols, alternating HTTP and gRPC for
``--rounds`` rounds so that drift hits both alike. Both clients are cheap on purpose: HTTP
is a raw keep-alive HTTP/1.1 client over ``--concurrency`` connections (prebuilt
requests, minimal parsing), gRPC is ``grpc.aio`` over one channel (HTTP/2, multiplexed).
Reported per protocol: throughput, p50/p90/p99 latency, and the server's CPU time per
call (from /proc), which does not depend on how fast the client is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from itertools import islice
from pathlib import Path
from typing import Any

__all__ = ["main", "measure"]

CLK_TCK = os.sysconf("SC_CLK_TCK")
NAMESPACE = "bench"
_SELF = (sys.executable, "-m", "ragtide.grpc.bench")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- the server process -------------------------------------------------------------------


async def _serve(data_dir: Path, http_port: int, grpc_port: int) -> None:
    import uvicorn

    from ragtide.api.app import create_app
    from ragtide.grpc import start_grpc
    from ragtide.settings import Settings

    settings = Settings(
        data_dir=data_dir,
        logging={"level": "WARNING", "access_log": False},
        answer_cache_enabled=False,
        http={"port": http_port},
    )
    # The app's settings have grpc.port 0: this works whether or not its lifespan starts gRPC.
    app = create_app(settings, configure_logs=True)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=http_port,
        loop="uvloop",
        lifespan="on",
        access_log=False,
        log_config=None,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving
            return
        await asyncio.sleep(0.05)
    with_grpc = settings.grpc.model_copy(update={"port": grpc_port})
    grpc_server = await start_grpc(app.state, settings.model_copy(update={"grpc": with_grpc}))
    assert grpc_server is not None
    print("ready", flush=True)
    try:
        await serving
    finally:
        await grpc_server.stop(0)


# --- the clients --------------------------------------------------------------------------


async def _http_load(
    port: int, queries: Sequence[str], concurrency: int, seconds: float
) -> list[float]:
    requests = []
    for q in queries:
        body = json.dumps({"query": q, "top_k": 5}).encode()
        head = (
            f"POST /v1/namespaces/{NAMESPACE}/search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        requests.append(head + body)
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = offset
        try:
            while time.perf_counter() < stop:
                start = time.perf_counter()
                writer.write(requests[i % len(requests)])
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                if status != 200:
                    raise RuntimeError(f"HTTP {status}")
                latencies.append(time.perf_counter() - start)
                i += concurrency
        finally:
            writer.close()

    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return latencies


async def _grpc_load(
    port: int, queries: Sequence[str], concurrency: int, seconds: float
) -> list[float]:
    import grpc

    from ragtide.grpc.stubs import pb, pb_grpc

    requests = [pb.SearchRequest(namespace=NAMESPACE, query=q, top_k=5) for q in queries]
    latencies: list[float] = []
    stop = time.perf_counter() + seconds
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.RagtideStub(channel)

        async def worker(offset: int) -> None:
            i = offset
            while time.perf_counter() < stop:
                start = time.perf_counter()
                await stub.Search(requests[i % len(requests)], timeout=10)
                latencies.append(time.perf_counter() - start)
                i += concurrency

        await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return latencies


def _client(argv: Sequence[str]) -> None:
    """One measurement in its own process: writes ``[latencies]`` as JSON to ``out``."""
    protocol, port, concurrency, seconds, queries_file, out = argv
    queries = json.loads(Path(queries_file).read_text())
    load = _http_load if protocol == "http" else _grpc_load
    try:
        import uvloop

        run: Any = uvloop.run
    except ImportError:  # pragma: no cover
        run = asyncio.run
    latencies = run(load(int(port), queries, int(concurrency), float(seconds)))
    Path(out).write_text(json.dumps(latencies))


# --- the measurement ----------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prepare(data: Path, work: Path, documents: int) -> list[str]:
    from ragtide.bench.data import read_jsonl

    docs = list(islice(read_jsonl(data / "scifact" / "corpus.jsonl"), documents))
    corpus = work / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    env = {
        **os.environ,
        "RAGTIDE_DATA_DIR": str(work / "data"),
        "RAGTIDE_LOGGING__LEVEL": "WARNING",
    }
    subprocess.run(
        [sys.executable, "-m", "ragtide.cli", "ingest", str(corpus), "-n", NAMESPACE, "-q"],
        env=env,
        check=True,
        capture_output=True,
    )
    return [q["text"] for q in islice(read_jsonl(data / "scifact" / "queries.train.jsonl"), 300)]


def _summary(latencies: list[float], seconds: float, server_cpu_s: float) -> dict[str, float]:
    ms = [x * 1000 for x in latencies]
    return {
        "requests": len(ms),
        "rps": round(len(ms) / seconds, 1),
        "p50_ms": round(statistics.median(ms), 2),
        "p90_ms": round(_percentile(ms, 0.90), 2),
        "p99_ms": round(_percentile(ms, 0.99), 2),
        "server_cpu_us_per_call": round(server_cpu_s / max(1, len(ms)) * 1e6, 1),
    }


def measure(
    data: Path, *, seconds: float = 10, concurrency: int = 16, rounds: int = 2
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ragtide-grpc-bench-") as tmp:
        work = Path(tmp)
        queries = _prepare(data, work, 2000)
        queries_file = work / "queries.json"
        queries_file.write_text(json.dumps(queries))
        http_port, grpc_port = _free_port(), _free_port()
        # One BLAS thread, as `ragtide serve` runs (ragtide.cli.main): spinning OpenBLAS
        # threads would measure the machine's load, not the protocols.
        env = {"OPENBLAS_NUM_THREADS": "1", **os.environ}
        server = subprocess.Popen(
            [*_SELF, "--serve", str(work / "data"), str(http_port), str(grpc_port)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            if server.stdout.readline().strip() != "ready":
                raise SystemExit("the bench server did not start")
            runs: dict[str, list[dict[str, float]]] = {"http": [], "grpc": []}

            def run(protocol: str, secs: float) -> tuple[list[float], float]:
                port = http_port if protocol == "http" else grpc_port
                before = _cpu_s(server.pid)
                out = work / "latencies.json"
                args = map(str, (protocol, port, concurrency, secs, queries_file, out))
                subprocess.run([*_SELF, "--client", *args], env=env, check=True)
                return json.loads(out.read_text()), _cpu_s(server.pid) - before

            for protocol in ("http", "grpc"):  # warm-up: connections, caches, JIT-free paths
                run(protocol, 2)
            for _ in range(rounds):
                for protocol in ("http", "grpc"):
                    latencies, cpu = run(protocol, seconds)
                    runs[protocol].append(_summary(latencies, seconds, cpu))
        finally:
            server.terminate()
            server.wait(30)
    combined = {p: _combine(r) for p, r in runs.items()}
    return {
        "documents": 2000,
        "concurrency": concurrency,
        "seconds_per_run": seconds,
        "rounds": rounds,
        "cpus": os.cpu_count(),
        "runs": runs,
        "median_of_rounds": combined,
        "grpc_vs_http": {
            "rps_ratio": round(combined["grpc"]["rps"] / combined["http"]["rps"], 2),
            "p99_ratio": round(combined["grpc"]["p99_ms"] / combined["http"]["p99_ms"], 2),
            "cpu_ratio": round(
                combined["grpc"]["server_cpu_us_per_call"]
                / combined["http"]["server_cpu_us_per_call"],
                2,
            ),
        },
    }


def _combine(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in runs), 2) for k in runs[0]}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--serve"]:
        import uvloop

        uvloop.run(_serve(Path(argv[1]), int(argv[2]), int(argv[3])))
        return 0
    if argv[:1] == ["--client"]:
        _client(argv[1:])
        return 0
    from ragtide.bench.data import data_dir

    parser = argparse.ArgumentParser(prog="python -m ragtide.grpc.bench", description=__doc__)
    parser.add_argument("--data", default=None, help="the shared data (with scifact/)")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON")
    args = parser.parse_args(argv)
    result = measure(
        data_dir(args.data),
        seconds=args.seconds,
        concurrency=args.concurrency,
        rounds=args.rounds,
    )
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
