"""What the metric-chain test runs against: replicas, a slow chat model, known load.

* ``Replica``: ``ragtide serve`` on a free port with its own SQLite data dir, the demo
  corpus uploaded through the API, its chat model the OpenAI-compatible ``StubLLM``.
* ``StubLLM``: an OpenAI-compatible endpoint (uvicorn in a thread) that answers at once,
  except a turn whose message carries ``HOLD``: that one waits until ``release()``. A
  held turn is a real request inside the replica, waiting on its LLM the way turns do in
  production, so it stays in flight exactly as long as the test says, and ``held`` counts
  the turns that have reached the LLM (a witness independent of the metrics under test).
* ``hold``: N held turns sent at once; ``Probes``: kubelet-style ``/healthz`` and
  ``/ready`` traffic that must not count as load.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ragtide.bench.server import free_port, wait_ready

__all__ = ["HOLD", "Probes", "Replica", "StubLLM", "hold"]

HOLD = "[hold]"
DEMO = Path(__file__).resolve().parents[2] / "src" / "ragtide" / "demo"
KB = "kb"


class StubLLM:
    """An OpenAI-compatible chat completions endpoint on 127.0.0.1."""

    def __init__(self) -> None:
        self.held = 0  # turns waiting now (read from other threads; only the loop writes)
        self.answered = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._release: asyncio.Event | None = None
        app = Starlette(routes=[Route("/v1/chat/completions", self._handle, methods=["POST"])])
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/v1"
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", ws="none",
            http="h11", loop="asyncio", timeout_graceful_shutdown=5,
        )  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, args=([self._sock],))

    def start(self) -> None:
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the stub LLM failed to start")
            self._thread.join(0.01)

    def release(self) -> None:
        """Let every held turn answer."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._open_gate)

    def _open_gate(self) -> None:
        if self._release is not None:
            self._release.set()
            self._release = None

    def stop(self) -> None:
        self.release()
        self._server.should_exit = True
        self._thread.join()
        self._sock.close()

    async def _handle(self, request: Request) -> JSONResponse:
        body = await request.json()
        if any(HOLD in str(m.get("content", "")) for m in body["messages"]):
            self._loop = asyncio.get_running_loop()
            if self._release is None:
                self._release = asyncio.Event()
            gate = self._release
            self.held += 1
            try:
                await gate.wait()
            finally:
                self.held -= 1
        self.answered += 1
        message = {"role": "assistant", "content": "Ragtide scales with replicas [1]."}
        return JSONResponse({"choices": [{"index": 0, "message": message}]})


@dataclass(slots=True)
class Replica:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def spawn(cls, root: Path, llm_url: str) -> Replica:
        port = free_port()
        log = root / f"replica-{port}.log"
        env = {
            **os.environ,
            "RAGTIDE_DATA_DIR": str(root / f"data-{port}"),
            "RAGTIDE_LOGGING__LEVEL": "WARNING",
            "RAGTIDE_LOGGING__ACCESS_LOG": "false",
            # Every turn of the load must run the pipeline, not come from the cache.
            "RAGTIDE_ANSWER_CACHE_ENABLED": "false",
            "RAGTIDE_CHAT_MODEL__USE": "openai",
            "RAGTIDE_CHAT_MODEL__CONFIG__BASE_URL": llm_url,
            "RAGTIDE_CHAT_MODEL__CONFIG__MODEL": "stub",
            "RAGTIDE_CHAT_MODEL__CONFIG__TIMEOUT_S": "120",
            "RAGTIDE_CHAT_MODEL__CONFIG__MAX_RETRIES": "0",
        }
        with log.open("ab") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ragtide.cli", "serve", "--port", str(port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        return cls(port, proc, log)

    def wait_ready(self) -> None:
        try:
            wait_ready(self.proc, self.port, time.perf_counter(), timeout=60)
        except (RuntimeError, TimeoutError) as exc:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise AssertionError(f"replica {self.url} not ready: {exc}\n{tail}") from exc

    def ingest_demo(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            for path in sorted(DEMO.glob("*.md")):
                files = {"file": (path.name, path.read_bytes())}
                r = client.post(f"/v1/namespaces/{KB}/documents", files=files)
                assert r.status_code == 201, (path.name, r.status_code, r.text)

    @property
    def chat_path(self) -> str:
        return f"/v1/namespaces/{KB}/chat"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _held_turn(url: str, i: int) -> int:
    body = {"message": f"How does Ragtide scale out? {HOLD} {i}"}
    return httpx.post(url, json=body, timeout=120).status_code


def hold(pool: ThreadPoolExecutor, replica: Replica, n: int) -> list[Future[int]]:
    """Send ``n`` turns to ``replica`` that stay in flight until the stub LLM releases them."""
    url = replica.url + replica.chat_path
    return [pool.submit(_held_turn, url, i) for i in range(n)]


@dataclass(slots=True)
class Probes:
    """Liveness and readiness probes at ``rate`` per second per path per replica."""

    replicas: list[Replica]
    rate: float
    sent: int = 0
    failed: int = 0
    began: float = 0.0
    ended: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Probes:
        self.began = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)
        self.ended = time.monotonic()

    def per_pod_rate(self) -> float:
        """Probe requests per second that each replica received."""
        return self.sent / len(self.replicas) / (self.ended - self.began)

    def _run(self) -> None:
        interval = 1.0 / self.rate
        with httpx.Client(timeout=5) as client:
            # Paced like a kubelet: the waits set the probe rate, they synchronise nothing.
            while not self._stop.wait(interval):
                for replica in self.replicas:
                    for path in ("/healthz", "/ready"):
                        try:
                            ok = client.get(replica.url + path).status_code == 200
                        except httpx.HTTPError:
                            ok = False
                        self.sent += 1
                        self.failed += not ok
