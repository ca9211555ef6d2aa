"""A streamed answer leaves its connection to the LLM open for the next one.

Reading only up to ``data: [DONE]`` and closing the response closed the connection, so
every streamed turn paid for a new one (TCP, and TLS to a hosted provider) before its
first token. The server here is a real HTTP server on 127.0.0.1 that notes the client
port of each request: one port for several turns is one connection.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from ragtide.builtin.openai import OpenAIChatModel
from ragtide.types import Chunk, Hit, Intent, Prompt
from tests.threaded_app import ThreadedApp


class Server:
    def __init__(self) -> None:
        self.ports: list[int] = []
        app = Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"])])
        self._http = ThreadedApp(app)
        self.port: int = self._http.port

    async def chat(self, request: Request) -> StreamingResponse:
        await request.body()
        assert request.client is not None
        self.ports.append(request.client.port)

        async def events() -> AsyncIterator[bytes]:
            for piece in ("Pods", " run."):
                delta = {"choices": [{"index": 0, "delta": {"content": piece}}]}
                yield f"data: {json.dumps(delta)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    def __enter__(self) -> Server:
        self._http.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.stop()


@pytest.fixture
def server() -> Iterator[Server]:
    with Server() as s:
        yield s


def prompt() -> Prompt:
    chunk = Chunk(id="c1", document_id="d1", ordinal=0, text="Pods run containers.", title="P")
    return Prompt("What do Pods do?", Intent("question", "What do Pods do?"), (), [Hit(chunk, 1)])


@pytest.mark.anyio
async def test_streamed_turns_share_one_connection(server: Server) -> None:
    config = OpenAIChatModel.Config(base_url=f"http://127.0.0.1:{server.port}/v1", model="m")
    model = OpenAIChatModel(config)
    await model.start()
    texts = []
    try:
        for _ in range(3):
            texts.append("".join([piece async for piece in model.stream(prompt())]))
    finally:
        await model.aclose()
    assert texts == ["Pods run."] * 3
    assert len(server.ports) == 3 and len(set(server.ports)) == 1
