"""Parse untrusted files in worker processes with a memory ceiling and a deadline.

A ``ParseSandbox`` owns ``workers`` processes (a fresh interpreter each, that inherits
nothing of the server's heap, sockets or threads). Each one sets
``RLIMIT_AS`` to ``memory_bytes`` before it imports a parser, then runs
``ragtide.ingest.prepare.prepare`` on one job at a time. The server side is one daemon
thread per worker: it takes jobs from a queue, sends one, waits for the answer at most
``timeout_s`` and hands it to the event loop that asked, which only ever awaits a future.

What can go wrong in a worker costs that worker, never the server:

- a limit of ``ParseLimits`` is hit: an ordinary refusal, the worker goes on;
- an allocation fails under the ceiling (``MemoryError``): the file is refused with
  ``DocumentTooLarge`` naming ``ingest.worker_memory_bytes``, the worker exits;
- the worker dies (a signal, a crash in a C library): the same refusal;
- the deadline passes: the worker is killed and the file refused with
  ``DocumentTooComplex`` naming ``ingest.parse_timeout_s``.

A worker that is gone is started again for the next job. An unexpected exception in a
parser (a library bug met by hostile bytes) refuses that file as corrupt, with the
traceback logged, instead of failing the request.

Small text files are cheaper to prepare on the event loop than to ship to a worker
(measured: a 2.7 KiB Markdown file takes 1.1 ms inline and 3-10 ms through a worker, the
hop between threads and processes included), and 8 KiB of Markdown holds the event loop
for ~3 ms, well inside a p99 budget. ``inline_max_bytes`` (default 8 KiB)
sets that cut; anything compressed (.docx, .pdf) always goes to the box, whatever its size.

One sandbox per configuration is shared by every ``Ingestor`` of the process
(``shared_sandbox``): the API, task workers and the CLI all create ingestors freely.
Worker processes are daemonic, so they end with the process in any case;
``close_shared_sandboxes`` (awaited by ``Ingestor.aclose``) ends them at once. A closed
shared sandbox is simply started again by the next ingestor that needs one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import PurePosixPath
from typing import Any

from ragtide.errors import (
    BackendUnavailable,
    ConfigError,
    CorruptDocument,
    DocumentTooComplex,
    DocumentTooLarge,
    RagtideError,
)
from ragtide.ingest.prepare import Prepared, PrepareJob, Refused, prepare

__all__ = [
    "ParseSandbox",
    "SandboxConfig",
    "close_shared_sandboxes",
    "shared_sandbox",
]

logger = logging.getLogger(__name__)

_MIB = 1024 * 1024
# Formats cheap enough to prepare on the event loop when they are small.
_INLINE_SUFFIXES = frozenset({".txt", ".md", ".markdown", ".jsonl", ".html", ".htm"})
_READY_TIMEOUT_S = 60.0

_Result = list[Prepared | Refused]


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    workers: int = 2
    memory_bytes: int = 512 * _MIB
    timeout_s: float = 30.0
    inline_max_bytes: int = 8 * 1024


class ParseSandbox:
    """A small pool of parse worker processes; ``await sandbox.prepare(job)``."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self._jobs: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._slots: list[_Worker | None] = []
        self._lock = threading.Lock()
        self._closed = False
        self.lost = 0  # workers that died or were killed (each is started again when needed)

    def inline(self, job: PrepareJob) -> bool:
        """Whether ``job`` is small and simple enough to prepare on the event loop."""
        suffix = PurePosixPath(job.filename.replace("\\", "/")).suffix.lower()
        return len(job.data) <= self.config.inline_max_bytes and suffix in _INLINE_SUFFIXES

    async def prepare(self, job: PrepareJob) -> _Result:
        """Prepare ``job`` (inline if small, else in a worker); raise ``RagtideError``."""
        if self.inline(job):
            return prepare(job)
        return await self.run(job)

    async def run(self, job: PrepareJob) -> _Result:
        """Prepare ``job`` in a worker process, whatever its size."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_Result] = loop.create_future()
        with self._lock:
            if self._closed:
                raise BackendUnavailable("the parse sandbox is shut down")
            if not self._threads:
                self._start()
            self._jobs.put(_Item(job, loop, future))
        return await future

    def close(self, timeout: float = 5.0) -> None:
        """Refuse queued jobs, stop every worker (killing busy ones) and join the threads."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = list(self._threads)
            for _ in threads:
                self._jobs.put(None)
            workers = [w for w in self._slots if w is not None]
        for worker in workers:
            worker.kill()
        for thread in threads:
            thread.join(timeout)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    @property
    def pids(self) -> list[int]:
        """Process ids of the live workers (for tests and diagnostics)."""
        return [w.pid for w in self._slots if w is not None and w.pid is not None]

    def _start(self) -> None:
        for index in range(self.config.workers):
            self._slots.append(None)
            thread = threading.Thread(
                target=self._serve, args=(index,), name=f"ragtide-parse-{index}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _serve(self, index: int) -> None:
        while (item := self._jobs.get()) is not None:
            if item.future.cancelled():
                continue
            if self._closed:
                item.resolve(BackendUnavailable("the parse sandbox is shut down"))
                continue
            worker = self._slots[index]
            outcome: _Result | RagtideError
            try:
                if worker is not None and not worker.alive():  # killed while idle
                    worker.kill()
                    self.lost += 1
                    worker = None
                if worker is None:
                    worker = self._slots[index] = _Worker.start(self.config.memory_bytes)
                    if self._closed:  # close() may have missed it
                        worker.kill()
                outcome = worker.run(item.job, self.config)
            except RagtideError as exc:
                outcome = exc
            except Exception as exc:  # never leave a request waiting
                logger.exception("parse sandbox failure")
                outcome = RagtideError(f"{item.job.filename}: parsing failed ({exc})")
            if worker is not None and not worker.alive():
                worker.kill()  # reap it; the next job starts another
                self._slots[index] = None
                self.lost += 1
            item.resolve(outcome)
        worker = self._slots[index]
        if worker is not None:
            worker.stop()
            self._slots[index] = None


@dataclass(slots=True)
class _Item:
    job: PrepareJob
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[_Result]

    def resolve(self, outcome: _Result | RagtideError) -> None:
        def settle() -> None:
            if self.future.done():
                return
            if isinstance(outcome, BaseException):
                self.future.set_exception(outcome)
            else:
                self.future.set_result(outcome)

        try:
            self.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop that asked is closed: nobody is waiting
            pass


class _Worker:
    """One worker process and the server's end of its socket (used by one thread only).

    Started with ``subprocess`` rather than ``multiprocessing``'s spawn, which would
    import the server's ``__main__`` module again in every worker: here the worker runs
    ``_worker_entry`` in a fresh interpreter and nothing else.
    """

    def __init__(self, process: subprocess.Popen[bytes], conn: Connection) -> None:
        self.process, self.conn = process, conn
        self.pid = process.pid

    @classmethod
    def start(cls, memory_bytes: int) -> _Worker:
        ours, theirs = socket.socketpair()
        code = "import sys; from ragtide.ingest.sandbox import _worker_entry; _worker_entry()"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", code, str(theirs.fileno()), str(memory_bytes)],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
                close_fds=True,
            )
        finally:
            theirs.close()
        worker = cls(process, Connection(ours.detach()))
        try:
            ready = worker.conn.poll(_READY_TIMEOUT_S) and worker.conn.recv() == "ready"
        except (EOFError, OSError):
            ready = False
        if not ready:
            worker.kill()
            raise ConfigError(
                "a parse worker did not start: is ingest.worker_memory_bytes "
                f"({memory_bytes // _MIB} MiB) too low for the interpreter and the parsers?"
            )
        return worker

    def alive(self) -> bool:
        return self.process.poll() is None

    def run(self, job: PrepareJob, config: SandboxConfig) -> _Result:
        try:
            self.conn.send(job)
            answered = self.conn.poll(config.timeout_s)
            reply = self.conn.recv() if answered else None
        except (EOFError, OSError):  # it died: out of memory, a signal, a crash
            self._wait(1)
            self.kill()
            raise self._died(job, config) from None
        if reply is None:
            self.kill()
            raise DocumentTooComplex(
                f"{job.filename}: parsing took longer than {config.timeout_s:g} s, the "
                "limit (ingest.parse_timeout_s)",
                limit="parse_timeout_s",
            )
        kind, value = reply
        if kind == "ok":
            return value  # type: ignore[no-any-return]
        if kind == "error":
            raise value
        if kind == "memory":
            self._wait(5)
            raise _out_of_memory(job, config)
        logger.error(
            "a parser failed on untrusted input", extra={"source": job.filename, "error": value}
        )
        raise CorruptDocument(f"{job.filename}: could not be parsed ({value.splitlines()[-1]})")

    def _died(self, job: PrepareJob, config: SandboxConfig) -> RagtideError:
        code = self.process.returncode
        how = f"signal {signal.Signals(-code).name}" if code and code < 0 else f"exit {code}"
        logger.warning("a parse worker died", extra={"source": job.filename, "reason": how})
        return _out_of_memory(job, config, f"; its worker died ({how})")

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self._wait(2)
        self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self._wait(5)
        with contextlib.suppress(OSError):  # its reader thread may have closed it first
            self.conn.close()

    def _wait(self, timeout: float) -> None:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass


def _out_of_memory(job: PrepareJob, config: SandboxConfig, how: str = "") -> DocumentTooLarge:
    return DocumentTooLarge(
        f"{job.filename}: parsing needs more than the {config.memory_bytes // _MIB:,} MiB "
        f"a parse worker may use{how} (ingest.worker_memory_bytes)",
        limit="worker_memory_bytes",
    )


def _worker_entry() -> None:
    """``python -c``'s entry: ``argv`` holds the socket's descriptor and the ceiling."""
    _worker_main(Connection(int(sys.argv[1])), int(sys.argv[2]))


def _worker_main(conn: Connection, memory_bytes: int) -> None:
    """A worker process: ceiling first, then the parsers, then one job after another."""
    import resource

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the server to handle
    _die_with_parent()
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    import ragtide.ingest._office  # noqa: F401  (pay for lxml, pypdf, docx once, up front)

    conn.send("ready")
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):  # the server is gone
            return
        except MemoryError:  # the job itself does not fit
            conn.send(("memory", None))
            return
        if job is None:
            return
        reply: tuple[str, Any]
        try:
            reply = ("ok", prepare(job))
        except RagtideError as exc:
            reply = ("error", exc)
        except MemoryError:
            reply = ("memory", None)
        except Exception:
            import traceback

            reply = ("bug", traceback.format_exc(limit=20))
        job = None
        try:
            conn.send(reply)
        except MemoryError:
            return
        if reply[0] == "memory":
            return  # a heap that ran out once is not to be trusted again


def _die_with_parent() -> None:
    """Linux: be killed when the server goes, even mid-job (best effort elsewhere)."""
    parent = os.getppid()
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it went before prctl took effect
        os._exit(1)


# --- one sandbox per configuration, shared by the process ---------------------------------

_shared: dict[SandboxConfig, ParseSandbox] = {}
_shared_lock = threading.Lock()
_fork_hook = False


def _forget_after_fork() -> None:
    """In a forked child: the sandboxes it inherited have no threads there (only the
    forking thread survives a fork) and their worker pipes are the parent's, so a job
    queued on one would wait forever. The child starts its own on first use."""
    global _shared_lock
    _shared_lock = threading.Lock()  # another thread may have held it at the fork
    _shared.clear()


def shared_sandbox(config: SandboxConfig) -> ParseSandbox:
    """The process's sandbox for ``config``, created (not yet started) on first use; a
    process forked from this one gets sandboxes of its own."""
    global _fork_hook
    with _shared_lock:
        if not _fork_hook:
            os.register_at_fork(after_in_child=_forget_after_fork)
            _fork_hook = True
        sandbox = _shared.get(config)
        if sandbox is None or sandbox._closed:
            sandbox = _shared[config] = ParseSandbox(config)
        return sandbox


async def close_shared_sandboxes() -> None:
    """Stop the workers of every shared sandbox (the next use starts new ones)."""
    with _shared_lock:
        sandboxes = list(_shared.values())
        _shared.clear()
    for sandbox in sandboxes:
        await sandbox.aclose()
