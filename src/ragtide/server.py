"""Run the app under uvicorn with a drain that an autoscaler and a load balancer can trust.

On SIGTERM (or SIGINT): ``/ready`` turns 503 at once; the server keeps serving for
``http.drain_seconds`` so the load balancer notices; then uvicorn stops accepting,
finishes in-flight requests and streams for up to ``http.grace_seconds``, and the
process exits 0. A second signal skips the drain.

Connections are bounded too (:class:`LimitedHttpToolsProtocol`): a request's head must
arrive within ``http.header_timeout_s`` (uvicorn has no such timeout: slow clients
trickling headers would hold their sockets forever), an idle keep-alive connection is
closed after ``http.keep_alive_s``, and past ``http.max_connections`` open connections a
request is answered 503 ``overloaded``. The cap on requests being served at once is the
app's (``ragtide.api.limits``). At startup :func:`memory_budget_warning` checks that the
in-memory budgets fit the container's cgroup memory limit.
"""

from __future__ import annotations

import asyncio
import logging
import math
from http import HTTPStatus
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from ragtide.api.app import create_app
from ragtide.api.errors import error_response
from ragtide.api.limits import EXEMPT_PATHS, overloaded_response
from ragtide.builtin.memory import InMemoryMemoryStore
from ragtide.builtin.redis_cache import InMemoryAnswerCache
from ragtide.observability import (
    HTTP_CONNECTIONS_CLOSED,
    HTTP_OVERLOADED,
    READY,
    configure_logging,
)
from ragtide.settings import Settings

__all__ = [
    "BASELINE_BYTES",
    "DrainingServer",
    "LimitedHttpToolsProtocol",
    "OneWriteCycle",
    "cgroup_memory_limit",
    "limited_protocol",
    "memory_budget",
    "memory_budget_warning",
    "serve",
]

logger = logging.getLogger(__name__)

# --- memory budget vs the container's limit ---------------------------------------------

CGROUP_ROOT = Path("/sys/fs/cgroup")
# The process without its stores: interpreter, libraries, the embedder, request and
# response buffers, allocator slack. Idle RSS is ~115 MB (README, benchmarks); the rest is
# headroom for load.
BASELINE_BYTES = 256 * 1024 * 1024
_UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as a huge number (2^63 - page size)


def cgroup_memory_limit(root: Path = CGROUP_ROOT) -> int | None:
    """The container's memory limit in bytes, or ``None`` when there is none.

    cgroup v2 ``memory.max`` first (``max`` means unlimited), then cgroup v1
    ``memory/memory.limit_in_bytes`` (or ``memory.limit_in_bytes`` when ``root`` is the
    memory controller itself). Unreadable or malformed files count as no limit.
    """
    candidates = (
        root / "memory.max",
        root / "memory" / "memory.limit_in_bytes",
        root / "memory.limit_in_bytes",
    )
    for path in candidates:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text == "max":
            return None
        try:
            value = int(text)
        except ValueError:
            continue
        return value if 0 < value < _UNLIMITED else None
    return None


def _store_file(settings: Settings) -> Path | None:
    if settings.store.use != "sqlite":
        return None
    raw = settings.store.config.get("path")
    return Path(raw) if raw else settings.data_dir / "ragtide.db"


def memory_budget(settings: Settings) -> list[tuple[str, int]]:
    """What the process may hold in memory, as ``(setting, bytes)`` parts.

    The in-process session store and answer cache count at their byte budgets (stores in
    Redis count nothing); the embedded SQLite store's in-memory indexes are estimated by the
    size of its database file, at most their ``index_budget_mb``; everything else is
    ``BASELINE_BYTES``.
    """
    parts: list[tuple[str, int]] = [("process baseline", BASELINE_BYTES)]
    if settings.memory.use == "memory":
        try:
            sessions = InMemoryMemoryStore.Config(**settings.memory.config)
        except ValidationError:
            sessions = None  # the runtime will refuse it with a better message
        if sessions is not None:
            parts.append(("memory.config.max_bytes", sessions.max_bytes))
    if settings.answer_cache_enabled and settings.answer_cache.use == "memory":
        try:
            cache = InMemoryAnswerCache.Config(**settings.answer_cache.config)
        except ValidationError:
            cache = None
        if cache is not None and cache.enabled:
            parts.append(("answer_cache.config.max_bytes", cache.max_bytes))
    store_file = _store_file(settings)
    if store_file is not None:
        try:
            size = store_file.stat().st_size
        except OSError:
            size = 0
        cap = _index_budget(settings)
        if cap and size > cap:  # the search indexes are held within their budget
            parts.append(("store.config.index_budget_mb", cap))
        else:
            parts.append((f"store (embedded index, ~{store_file.name})", size))
    return parts


def _index_budget(settings: Settings) -> int:
    """The embedded store's search-index budget in bytes (0: unlimited or not valid)."""
    from ragtide.builtin.sqlite_store import SQLiteStore

    try:
        config = SQLiteStore.Config(**settings.store.config)
    except ValidationError:
        return 0  # the runtime will refuse it with a better message
    return round(config.index_budget_mb * 2**20)


def memory_budget_warning(settings: Settings, limit_bytes: int | None) -> str | None:
    """A warning naming the settings when the budgets cannot fit ``limit_bytes``, else None."""
    if limit_bytes is None:
        return None
    parts = memory_budget(settings)
    total = sum(size for _, size in parts)
    if total <= limit_bytes:
        return None
    mib = 1024 * 1024
    detail = ", ".join(f"{name} {size / mib:.0f} MiB" for name, size in parts)
    return (
        f"memory budgets ({detail}) add up to {total / mib:.0f} MiB, over the container's "
        f"memory limit of {limit_bytes / mib:.0f} MiB: lower memory.config.max_bytes "
        "(RAGTIDE_MEMORY__CONFIG__MAX_BYTES) or answer_cache.config.max_bytes "
        "(RAGTIDE_ANSWER_CACHE__CONFIG__MAX_BYTES) or store.config.index_budget_mb "
        "(RAGTIDE_STORE__CONFIG__INDEX_BUDGET_MB), keep sessions and the cache in Redis "
        "(redis.url), or raise the memory limit"
    )


def check_memory_budget(settings: Settings, cgroup_root: Path = CGROUP_ROOT) -> str | None:
    """Log (and return) the warning of :func:`memory_budget_warning` for this container."""
    limit = cgroup_memory_limit(cgroup_root)
    warning = memory_budget_warning(settings, limit)
    if warning is not None:
        total = sum(size for _, size in memory_budget(settings))
        logger.warning(warning, extra={"limit_bytes": limit, "budget_bytes": total})
    return warning


# --- connection limits --------------------------------------------------------------------

_EXEMPT_RAW = frozenset(path.encode() for path in EXEMPT_PATHS)
_REQUEST_TIMEOUT = error_response(
    408, "request_timeout", "the request head did not arrive in time", {"Connection": "close"}
)


def _raw_response(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()]
    lines += [name + b": " + value + b"\r\n" for name, value in headers]
    return b"".join([*lines, b"\r\n", body])


_REQUEST_TIMEOUT_BYTES = _raw_response(
    408, list(_REQUEST_TIMEOUT.raw_headers), bytes(_REQUEST_TIMEOUT.body)
)


class _HeldWrites:
    """A transport that holds what is written until ``release`` (or ``close``)."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(data)

    def release(self) -> asyncio.Transport:
        if self.parts:
            self.transport.write(b"".join(self.parts))
            self.parts = []
        return self.transport

    def close(self) -> None:
        self.release().close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class OneWriteCycle(RequestResponseCycle):
    """uvicorn's request cycle, writing a response of known length with one system call.

    uvicorn writes the status line and headers as soon as the app starts the response,
    and the body when it comes: two ``write`` calls, two TCP segments and two wake-ups
    of the client for every small JSON answer. For a response that declares its
    ``Content-Length`` (the app sends its body right away), the head is held and written
    together with the first part of the body. The bytes on the wire are the same;
    streamed responses (no length: server-sent events) are written as they come.
    """

    async def send(self, message: Any) -> None:
        if message["type"] == "http.response.start" and not self.response_started:
            if any(name.lower() == b"content-length" for name, _ in message.get("headers", ())):
                self.transport = _HeldWrites(self.transport)  # type: ignore[assignment]
            await super().send(message)
            return
        try:
            await super().send(message)
        finally:
            held = self.transport
            if isinstance(held, _HeldWrites):
                self.transport = held.release()


async def _connections_overloaded(scope: Scope, receive: Receive, send: Send) -> None:
    await overloaded_response("connections", close=True)(scope, receive, send)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header timeout and a connection cap.

    - **Header timeout.** A timer is armed when the connection is made and when the first
      bytes of a later request arrive; it is cancelled once the request's head (request
      line and headers) is complete. If it fires, the connection is closed (with a 408
      when part of a head had arrived and no response is under way). Body reads are the
      app's business (the body limit and the app's own timeouts).
    - **Keep-alive.** uvicorn's own timer, set to ``keep_alive_s`` (a float here).
    - **Connection cap.** Past ``max_connections`` open connections, a request (probes
      excepted) is answered 503 ``overloaded`` with ``Retry-After`` and
      ``Connection: close``. It replaces uvicorn's ``limit_concurrency``, whose 503 is
      plain text and which also counts the connection asking.

    Subclass it with the limits set, or use :func:`limited_protocol`.
    """

    header_timeout_s: float = 10.0
    keep_alive_s: float = 5.0
    max_connections: int = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limit_concurrency = None  # ours is max_connections, in our error shape
        self.timeout_keep_alive = self.keep_alive_s  # type: ignore[assignment]
        self._header_timer: asyncio.TimerHandle | None = None
        self._head_started = False

    # header timeout

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        HTTP_CONNECTIONS_CLOSED.labels("header").inc()
        idle = self.cycle is None or self.cycle.response_complete
        if self._head_started and idle:
            self.transport.write(_REQUEST_TIMEOUT_BYTES)
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        # Between requests (not while a request's body is read), any byte starts the clock
        # of the next head, so no trickle can keep a connection open for free.
        if self.cycle is None or self.cycle.response_complete:
            self._arm_header_timer()
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_started = True

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        self._head_started = False
        path = self.url.split(b"?", 1)[0]
        if len(self.connections) > self.max_connections and path not in _EXEMPT_RAW:
            HTTP_OVERLOADED.labels("connections").inc()
            app, self.app = self.app, _connections_overloaded
            try:
                super().on_headers_complete()
            finally:
                self.app = app
        else:
            super().on_headers_complete()
        # uvicorn made the cycle just now and its task has not run yet: the cycle writes a
        # response head and body at once (OneWriteCycle only overrides ``send``).
        if type(self.cycle) is RequestResponseCycle:
            self.cycle.__class__ = OneWriteCycle

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    # keep-alive

    def timeout_keep_alive_handler(self) -> None:
        if not self.transport.is_closing():
            HTTP_CONNECTIONS_CLOSED.labels("keep_alive").inc()
        super().timeout_keep_alive_handler()


def limited_protocol(
    header_timeout_s: float, keep_alive_s: float, max_connections: int
) -> type[LimitedHttpToolsProtocol]:
    """A :class:`LimitedHttpToolsProtocol` with these limits, for ``uvicorn.Config(http=…)``."""
    limits = {
        "header_timeout_s": header_timeout_s,
        "keep_alive_s": keep_alive_s,
        "max_connections": max_connections,
    }
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), limits)


# --- the server -----------------------------------------------------------------------------


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain_seconds: float) -> None:
        super().__init__(config)
        self._drain_seconds = drain_seconds
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        app = self.config.loaded_app if self.config.loaded else None
        self._mark_draining(app)
        if self._draining or self._drain_seconds <= 0:
            self._exit(sig, frame)
            return
        self._draining = True
        logger.info("draining", extra={"signal": sig, "drain_s": self._drain_seconds})
        asyncio.get_running_loop().call_later(self._drain_seconds, self._exit, sig, frame)

    def _exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # uvicorn re-raises captured signals once it has shut down, so the process would
        # die of SIGTERM; a drain that finished is a clean exit, status 0.
        captured = getattr(self, "_captured_signals", None)
        if isinstance(captured, list):
            captured.clear()

    @staticmethod
    def _mark_draining(app: object) -> None:
        READY.set(0)
        state_owner = getattr(app, "app", app)  # uvicorn may wrap the app in a proxy
        for candidate in (app, state_owner):
            state = getattr(candidate, "state", None)
            if state is not None:
                state.draining = True


def serve(settings: Settings) -> int:
    configure_logging(settings.logging.level, settings.logging.format)
    check_memory_budget(settings)
    app = create_app(settings, configure_logs=False)
    http = settings.http
    config = uvicorn.Config(
        app,
        host=http.host,
        port=http.port,
        loop="uvloop",
        http=limited_protocol(http.header_timeout_s, http.keep_alive_s, http.max_connections),
        lifespan="on",
        access_log=False,
        log_config=None,
        # Whole seconds, rounded up, at least one: uvicorn reads None (and 0) as "wait for
        # in-flight requests forever", and 25.9 s must not become 25.
        timeout_graceful_shutdown=max(1, math.ceil(http.grace_seconds)),
        server_header=False,
    )
    DrainingServer(config, http.drain_seconds).run()
    return 0
