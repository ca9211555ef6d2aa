"""Ragtide over the Model Context Protocol at ``/mcp``: see ``ragtide.mcp._server``.

``mount_mcp(app, settings)`` is cheap: the ``mcp`` SDK takes over a second to import, so
it is imported and started in the background once the app's lifespan has started (the
replica is ready at once); until then ``/mcp`` answers 503 ``backend_unavailable`` with
``Retry-After: 1``. Needs the ``mcp`` extra (``pip install 'ragtide[mcp]'``).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
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
    """Serve MCP at ``path`` of ``app``; its server starts in the background of the lifespan.

    Call it once, after ``create_app`` built the app (its lifespan sets
    ``app.state.runtime``, ``.tenants`` and ``.auth``, which the endpoint uses).
    """
    lazy = _Lazy()
    app.router.routes.append(Route(path, endpoint=lazy, include_in_schema=False))
    inner = app.router.lifespan_context

    async def run(stop: anyio.Event) -> None:
        try:
            server = await asyncio.to_thread(importlib.import_module, "ragtide.mcp._server")
            endpoint = server.MCPEndpoint(app, server.build_server(app), server.security(settings))
            async with endpoint.running():
                lazy.endpoint = endpoint
                try:
                    await stop.wait()
                finally:
                    lazy.endpoint = None
        except Exception:  # the API goes on without MCP; /mcp stays 503
            logger.exception("the MCP server failed to start")

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with inner(a) as state, anyio.create_task_group() as tg:
            stop = anyio.Event()
            tg.start_soon(run, stop)
            try:
                yield state
            finally:
                stop.set()

    app.router.lifespan_context = lifespan
