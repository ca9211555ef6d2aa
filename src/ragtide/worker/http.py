"""The worker's own small HTTP endpoint: ``/healthz``, ``/ready`` and ``/metrics``.

A plain ASGI app (no framework: three routes) served by uvicorn on the worker's event
loop. The worker owns the signals, so the server installs no handlers of its own; it
stops when the worker has drained.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Generator

import orjson
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import Receive, Scope, Send

__all__ = ["ProbeApp", "ProbeServer", "probe_server"]

logger = logging.getLogger(__name__)


class ProbeApp:
    """``ready()`` returns None when ready, else the reason; ``refresh()`` runs before a scrape."""

    def __init__(
        self,
        ready: Callable[[], Awaitable[str | None]],
        refresh: Callable[[], Awaitable[None]],
    ) -> None:
        self._ready = ready
        self._refresh = refresh

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path not in ("/healthz", "/ready", "/metrics"):
            await _json(send, 404, _error("not_found", f"no route {path}"))
        elif method not in ("GET", "HEAD"):
            await _json(send, 405, _error("method_not_allowed", f"{method} is not allowed"))
        elif path == "/healthz":
            await _json(send, 200, {"status": "ok"})
        elif path == "/ready":
            reason = await self._ready()
            if reason is None:
                await _json(send, 200, {"status": "ready"})
            else:
                await _json(send, 503, {"status": "unavailable", "reason": reason})
        else:
            await self._refresh()
            await _send(send, 200, generate_latest(), CONTENT_TYPE_LATEST)


def _error(code: str, message: str) -> dict[str, object]:
    return {"error": {"code": code, "message": message}}


async def _json(send: Send, status: int, body: object) -> None:
    await _send(send, status, orjson.dumps(body), "application/json")


async def _send(send: Send, status: int, body: bytes, content_type: str) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ProbeServer(uvicorn.Server):
    """uvicorn without its signal handlers: the worker decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def probe_server(app: ProbeApp) -> ProbeServer:
    """A server for ``app``; pass it the bound socket: ``serve(sockets=[sock])``."""
    config = uvicorn.Config(
        app,
        lifespan="off",
        access_log=False,
        log_config=None,
        server_header=False,
    )
    return ProbeServer(config)
