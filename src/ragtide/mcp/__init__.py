"""Ragtide over the Model Context Protocol at ``/mcp``: see ``ragtide.mcp._server``.

``mount_mcp(app, settings)`` is cheap: the ``mcp`` SDK takes over a second to import, so
it is imported in a thread while the app starts (beside the store's warm-up) and its
server runs before the app serves anything: nothing of it is left to hold the GIL while
the first searches after ready run. If it fails, ``/mcp`` answers 503
``backend_unavailable`` with ``Retry-After: 1`` and the API goes on. Needs the ``mcp``
extra (``pip install 'ragtide[mcp]'``).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
from fastapi import FastAPI
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ragtide.api.errors import error_response
from ragtide.settings import Settings

__all__ = ["MCP_PATH", "mount_mcp"]

logger = logging.getLogger(__name__)

MCP_PATH = "/mcp"


class _Lazy:
    """The ``/mcp`` route: the real endpoint once the SDK is imported and running."""

    def __init__(self) -> None:
        self.endpoint: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.endpoint
        if endpoint is None:
            response = error_response(
                503, "backend_unavailable", "the MCP server is starting", {"Retry-After": "1"}
            )
            await response(scope, receive, send)
            return
        await endpoint(scope, receive, send)


def mount_mcp(app: FastAPI, settings: Settings | None = None, *, path: str = MCP_PATH) -> None:
    """Serve MCP at ``path`` of ``app``; its SDK is imported while the app starts.

    Call it once, after ``create_app`` built the app (its lifespan sets
    ``app.state.runtime``, ``.tenants`` and ``.auth``, which the endpoint uses).
    """
    lazy = _Lazy()
    app.router.routes.append(Route(path, endpoint=lazy, include_in_schema=False))
    inner = app.router.lifespan_context

    async def run(
        importing: asyncio.Future[Any],
        stop: anyio.Event,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        started = False
        try:
            server = await importing
            endpoint = server.MCPEndpoint(app, server.build_server(app), server.security(settings))
            async with endpoint.running():
                lazy.endpoint = endpoint
                task_status.started()
                started = True
                try:
                    await stop.wait()
                finally:
                    lazy.endpoint = None
        except Exception:  # the API goes on without MCP; /mcp stays 503
            logger.exception("the MCP server failed to start")
        finally:
            if not started:
                task_status.started()

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        # The SDK is imported while the app starts (in a thread, beside the store's
        # warm-up), and its server runs before the app serves: imported after ready, it
        # held the GIL for over a second while the first searches waited (130 ms for the
        # first at 1M chunks against a p99 of 20).
        importing = asyncio.ensure_future(
            asyncio.to_thread(importlib.import_module, "ragtide.mcp._server")
        )
        try:
            async with inner(a) as state, anyio.create_task_group() as tg:
                stop = anyio.Event()
                await tg.start(run, importing, stop)
                try:
                    yield state
                finally:
                    stop.set()
        finally:
            if not importing.done():  # the app failed to start: the thread finishes alone
                importing.add_done_callback(_retrieved)

    app.router.lifespan_context = lifespan


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned import's outcome (no 'exception never retrieved' warning)."""
    if not future.cancelled():
        future.exception()
