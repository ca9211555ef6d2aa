"""A chat completions server on 127.0.0.1 whose behaviour the test picks by path:
``/ok/v1`` answers ``reply``, ``/hang/v1`` answers only once ``stop()`` is called, ``/fail/v1``
answers 500. Every request body is kept in ``bodies``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.threaded_app import ThreadedApp


class Upstream:
    @classmethod
    @contextmanager
    def serving(cls, reply: str) -> Iterator[Upstream]:
        """A started server, stopped (its hanging requests released) on exit."""
        upstream = cls(reply)
        upstream.http.start()
        try:
            yield upstream
        finally:
            upstream.stop()

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.bodies: list[dict[str, Any]] = []
        self._release = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        route = Route("/{mode}/v1/chat/completions", self.handle, methods=["POST"])
        self.http = ThreadedApp(Starlette(routes=[route]), loop="asyncio")

    async def handle(self, request: Request) -> Response:
        self.bodies.append(await request.json())
        mode = request.path_params["mode"]
        if mode == "hang":
            self._loop = asyncio.get_running_loop()
            await self._release.wait()
        if mode == "fail":
            return PlainTextResponse("Internal Server Error", status_code=500)
        message = {"role": "assistant", "content": self.reply}
        return JSONResponse({"choices": [{"index": 0, "message": message}], "usage": {}})

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._release.set)
        self.http.stop()
