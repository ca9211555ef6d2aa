"""``ragtide.server.OneWriteCycle``: a response of known length leaves in one write, with
the same bytes; a streamed one is written as it comes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvicorn
from starlette.responses import JSONResponse, Response, StreamingResponse

from ragtide.bench.server import free_port
from ragtide.server import limited_protocol

pytestmark = pytest.mark.anyio

WRITES: list[bytes] = []


class _Counting:
    def __init__(self, transport: Any) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        WRITES.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/json":
        response: Response = JSONResponse({"hello": "world"}, headers={"X-Extra": "1"})
    elif scope["path"] == "/empty":
        response = Response(status_code=204)
    else:

        async def parts() -> Any:
            yield b"first"
            await GATE.wait()
            yield b"second"

        response = StreamingResponse(parts(), media_type="text/plain")
    await response(scope, receive, send)


GATE = asyncio.Event()


async def _request(port: int, head: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    await writer.drain()
    data = await reader.read(65536)
    writer.close()
    return data


async def test_a_sized_response_is_one_write_and_a_stream_is_not() -> None:
    protocol = limited_protocol(10.0, 5.0, 1000)
    made = protocol.connection_made

    def connection_made(self: Any, transport: Any) -> None:
        made(self, _Counting(transport))

    protocol.connection_made = connection_made  # type: ignore[method-assign]
    port = free_port()
    config = uvicorn.Config(
        app, port=port, http=protocol, lifespan="off", log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)

        WRITES.clear()
        raw = await _request(port, b"GET /json HTTP/1.1\r\nhost: x\r\n\r\n")
        assert len(WRITES) == 1 and WRITES[0] == raw
        head, body = raw.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"content-length: 17" in head and b"x-extra: 1" in head
        assert body == b'{"hello":"world"}'

        WRITES.clear()
        raw = await _request(port, b"HEAD /json HTTP/1.1\r\nhost: x\r\n\r\n")
        assert len(WRITES) == 1 and raw.endswith(b"\r\n\r\n") and b"content-length: 17" in raw

        # No length declared (a 204): written as uvicorn writes it.
        raw = await _request(port, b"GET /empty HTTP/1.1\r\nhost: x\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 204 No Content\r\n") and raw.endswith(b"\r\n\r\n")

        # A stream's head and first part arrive before the rest exists.
        WRITES.clear()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        seen = b""
        while b"first" not in seen:
            seen += await reader.read(65536)
        assert b"transfer-encoding: chunked" in seen and b"second" not in seen
        GATE.set()
        while not seen.endswith(b"0\r\n\r\n"):
            seen += await reader.read(65536)
        assert b"second" in seen and len(WRITES) >= 3
        writer.close()
    finally:
        server.should_exit = True
        await task
