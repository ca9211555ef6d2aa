"""OpenAIChatModel against a real HTTP server on 127.0.0.1 that imitates the API.

The server runs under uvicorn in a thread; the path prefix picks its behaviour
(``/ok/v1/chat/completions``, ``/fail500/v1/...``) and it records every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ragtide.builtin.openai import OpenAIChatModel
from ragtide.components import ChatModel
from ragtide.errors import UpstreamError, UpstreamTimeout
from ragtide.types import Chunk, Hit, Intent, Prompt
from tests.llm_server import RESET, Fault, fault_proxy
from tests.polling import until
from tests.threaded_app import ThreadedApp

KEY = "sk-test-secret-123"
ANSWER = "Pods run containers [1]. Services route traffic [2, 9]."
PIECES = ["Pods", " run", " containers", " [1]."]


@dataclass
class Recorded:
    mode: str
    headers: dict[str, str]
    body: dict[str, Any]


def completion(content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49,
                  "completion_tokens_details": {"reasoning_tokens": 0}},
    }  # fmt: skip


def sse(*events: str) -> bytes:
    return "".join(f"{e}\n\n" for e in events).encode()


def delta(content: str) -> str:
    return "data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": content}}]})


class StubLLM:
    """A tiny OpenAI-compatible server; ``release()`` lets hanging handlers finish."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.counts: Counter[str] = Counter()
        self.dropped = 0  # slow streams whose client went away
        self._release: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        app = Starlette(
            routes=[Route("/{mode}/v1/chat/completions", self.handle, methods=["POST"])]
        )
        self._http = ThreadedApp(app, http="h11", loop="asyncio", timeout_graceful_shutdown=5)
        self.port: int = self._http.port

    def url(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.port}/{mode}/v1"

    def start(self) -> None:
        self._http.start()

    def stop(self) -> None:
        if self._loop is not None and self._release is not None:
            self._loop.call_soon_threadsafe(self._release.set)
        self._http.stop()

    async def hang(self) -> None:
        """Wait for an event only ``stop()`` sets: a response that never comes in a test."""
        if self._release is None:
            self._loop, self._release = asyncio.get_running_loop(), asyncio.Event()
        await self._release.wait()

    async def handle(self, request: Request) -> Response:
        mode = request.path_params["mode"]
        body = await request.json()
        self.requests.append(Recorded(mode, dict(request.headers), body))
        self.counts[mode] += 1
        first = self.counts[mode] == 1
        if mode == "ok":
            if body.get("stream"):
                return self.stream()
            return JSONResponse(completion(ANSWER))
        if mode == "flaky" and first:
            return PlainTextResponse("busy", status_code=503, headers={"Retry-After": "0"})
        if mode == "flaky":
            return self.stream() if body.get("stream") else JSONResponse(completion("ok [1]"))
        if mode == "fail500":
            return PlainTextResponse("Internal Server Error", status_code=500)
        if mode in ("unauthorized", "forbidden"):
            error = {"error": {"message": f"Incorrect API key provided: {KEY}"}}
            return JSONResponse(error, status_code=401 if mode == "unauthorized" else 403)
        if mode == "badrequest":
            error = {"error": {"message": f"context too long for key {KEY}", "code": "x"}}
            return JSONResponse(error, status_code=400)
        if mode == "ratelimited":
            return PlainTextResponse("slow down", status_code=429, headers={"Retry-After": "0"})
        if mode == "ratelimited-long":
            return PlainTextResponse("later", status_code=429, headers={"Retry-After": "3600"})
        if mode == "ratelimited-date" and first:
            past = "Wed, 21 Oct 2015 07:28:00 GMT"
            return PlainTextResponse("slow down", status_code=429, headers={"Retry-After": past})
        if mode == "ratelimited-date":
            return JSONResponse(completion("ok"))
        if mode == "malformed":
            return Response(b'{"choices": [', media_type="application/json")
        if mode == "wrongshape":
            return JSONResponse({"choices": []})
        if mode == "slow":
            await self.hang()
            return JSONResponse(completion("too late"))
        if mode == "badstream":
            return StreamingResponse(iter([sse(delta("Po"), "data: {nope")]))
        if mode == "streamerror":
            failure = "data: " + json.dumps({"error": {"message": "overloaded"}})
            return StreamingResponse(iter([sse(delta("Po"), failure)]))
        if mode == "slowstream":
            return StreamingResponse(self.slow_stream(), media_type="text/event-stream")
        if mode == "tools":
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "call_1", "type": "function",
                                "function": {"name": "calculator",
                                             "arguments": '{"expression": "6*7"}'}}],
            }  # fmt: skip
            usage = {"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35}
            choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
            return JSONResponse({"choices": [choice], "usage": usage})
        return PlainTextResponse("unknown mode", status_code=404)

    def stream(self) -> StreamingResponse:
        events = [
            ": keep-alive",
            'data: {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}',
            *[delta(p) for p in PIECES],
            'data: {"choices": [], "usage": {"total_tokens": 9}}',
            "data: [DONE]",
            delta(" ignored after done"),
        ]
        return StreamingResponse(iter([sse(*events)]), media_type="text/event-stream")

    async def slow_stream(self) -> AsyncIterator[bytes]:
        yield sse(delta("Pods"))
        try:
            await self.hang()
        except BaseException:  # cancelled by Starlette: the client closed the connection
            self.dropped += 1
            raise


@pytest.fixture(scope="module")
def server() -> Iterator[StubLLM]:
    stub = StubLLM()
    stub.start()
    yield stub
    stub.stop()


@pytest.fixture
def stub(server: StubLLM) -> StubLLM:
    server.requests.clear()
    server.counts.clear()
    server.dropped = 0
    return server


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_prompt(message: str = "What is a Pod?") -> Prompt:
    chunks = [
        Chunk(id="c1", document_id="d1", ordinal=0, text="Pods run containers.", title="Pods"),
        Chunk(id="c2", document_id="d2", ordinal=0, text="Services route.", title="Services"),
    ]
    return Prompt(message, Intent("question", message), (), [Hit(c, 1.0) for c in chunks])


@contextlib.asynccontextmanager
async def running(base_url: str, **overrides: Any) -> AsyncIterator[OpenAIChatModel]:
    settings: dict[str, Any] = {
        "base_url": base_url,
        "api_key": SecretStr(KEY),
        "model": "gpt-test",
        "max_retries": 2,
        "backoff_s": 0.0,
        "timeout_s": 5.0,
    }
    model = OpenAIChatModel(OpenAIChatModel.Config(**(settings | overrides)))
    await model.start()
    try:
        yield model
    finally:
        await model.aclose()


def test_implements_the_protocol() -> None:
    model = OpenAIChatModel(OpenAIChatModel.Config(model="gpt-x"))
    assert isinstance(model, ChatModel)
    assert model.model_id == "gpt-x"


def test_the_key_is_masked_in_the_config() -> None:
    config = OpenAIChatModel.Config(api_key=SecretStr(KEY))
    assert KEY not in repr(config) and KEY not in str(config.model_dump())


@pytest.mark.anyio
async def test_generate_posts_the_prompt_and_parses_the_reply(stub: StubLLM) -> None:
    async with running(stub.url("ok"), temperature=0.3, max_tokens=99) as model:
        reply = await model.generate(make_prompt())
    assert reply.text == ANSWER
    assert reply.cited == (1, 2)  # [9] is out of range
    assert reply.usage == {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49}
    [request] = stub.requests
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.body["model"] == "gpt-test"
    assert request.body["stream"] is False
    assert request.body["temperature"] == 0.3 and request.body["max_tokens"] == 99
    system, user = request.body["messages"]
    assert system["role"] == "system"
    assert "[1] Pods — Pods run containers." in system["content"]
    assert "[2] Services — Services route." in system["content"]
    assert user == {"role": "user", "content": "What is a Pod?"}


@pytest.mark.anyio
async def test_without_a_key_no_authorization_is_sent(stub: StubLLM) -> None:
    async with running(stub.url("ok"), api_key=None, max_tokens=None) as model:
        await model.generate(make_prompt())
    [request] = stub.requests
    assert "authorization" not in request.headers
    assert "max_tokens" not in request.body


@pytest.mark.anyio
async def test_stream_yields_the_content_deltas(stub: StubLLM) -> None:
    async with running(stub.url("ok")) as model:
        pieces = [piece async for piece in model.stream(make_prompt())]
    assert pieces == PIECES
    [request] = stub.requests
    assert request.body["stream"] is True
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.body["messages"][-1]["content"] == "What is a Pod?"


@pytest.mark.anyio
async def test_a_retryable_failure_is_retried(stub: StubLLM) -> None:
    async with running(stub.url("flaky")) as model:
        reply = await model.generate(make_prompt())
    assert reply.text == "ok [1]" and reply.cited == (1,)
    assert stub.counts["flaky"] == 2


@pytest.mark.anyio
async def test_a_stream_is_retried_before_it_starts(stub: StubLLM) -> None:
    async with running(stub.url("flaky")) as model:
        assert [p async for p in model.stream(make_prompt())] == PIECES
    assert stub.counts["flaky"] == 2


@pytest.mark.anyio
async def test_server_errors_fail_after_the_retries(stub: StubLLM) -> None:
    async with running(stub.url("fail500"), max_retries=2) as model:
        with pytest.raises(UpstreamError) as info:
            await model.generate(make_prompt())
    assert type(info.value) is UpstreamError
    assert "HTTP 500" in info.value.message
    assert isinstance(info.value.__cause__, httpx.HTTPStatusError)
    assert stub.counts["fail500"] == 3


@pytest.mark.anyio
@pytest.mark.parametrize(("mode", "status"), [("unauthorized", 401), ("forbidden", 403)])
async def test_rejected_credentials_are_not_retried_nor_echoed(
    stub: StubLLM, mode: str, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running(stub.url(mode)) as model:
        with pytest.raises(UpstreamError, match=f"rejected the credentials \\(HTTP {status}\\)"):
            await model.generate(make_prompt())
    assert stub.counts[mode] == 1
    assert KEY not in caplog.text


@pytest.mark.anyio
async def test_other_refusals_carry_the_providers_message_without_the_key(
    stub: StubLLM,
) -> None:
    async with running(stub.url("badrequest")) as model:
        with pytest.raises(UpstreamError) as info:
            await model.generate(make_prompt())
    assert info.value.message == "the LLM returned HTTP 400: context too long for key ***"
    assert stub.counts["badrequest"] == 1


@pytest.mark.anyio
async def test_rate_limits_are_retried_then_reported_as_upstream_errors(
    stub: StubLLM, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ragtide.builtin.openai")
    async with running(stub.url("ratelimited"), max_retries=3) as model:
        with pytest.raises(UpstreamError, match="rate limiting"):
            await model.generate(make_prompt())
    assert stub.counts["ratelimited"] == 4
    retries = [r for r in caplog.records if r.getMessage() == "llm request retried"]
    assert [r.__dict__["attempt"] for r in retries] == [1, 2, 3]
    assert KEY not in caplog.text


@pytest.mark.anyio
async def test_a_retry_after_longer_than_max_backoff_is_not_waited_for(stub: StubLLM) -> None:
    async with running(stub.url("ratelimited-long"), max_backoff_s=10) as model:
        with pytest.raises(UpstreamError, match="HTTP 429"):
            await model.generate(make_prompt())
    assert stub.counts["ratelimited-long"] == 1


@pytest.mark.anyio
async def test_retry_after_may_be_an_http_date(stub: StubLLM) -> None:
    async with running(stub.url("ratelimited-date"), backoff_s=3600) as model:
        assert (await model.generate(make_prompt())).text == "ok"
    assert stub.counts["ratelimited-date"] == 2


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["malformed", "wrongshape"])
async def test_malformed_replies_are_upstream_errors(stub: StubLLM, mode: str) -> None:
    async with running(stub.url(mode)) as model:
        with pytest.raises(UpstreamError, match="malformed") as info:
            await model.generate(make_prompt())
    assert info.value.__cause__ is not None
    assert stub.counts[mode] == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("mode", "message"),
    [("badstream", "malformed stream event"), ("streamerror", "while streaming: overloaded")],
)
async def test_broken_streams_are_upstream_errors(stub: StubLLM, mode: str, message: str) -> None:
    pieces: list[str] = []
    async with running(stub.url(mode)) as model:
        with pytest.raises(UpstreamError, match=message):
            async for piece in model.stream(make_prompt()):
                pieces.append(piece)
    assert pieces == ["Po"]


@pytest.mark.anyio
async def test_a_slow_answer_times_out(stub: StubLLM) -> None:
    async with running(stub.url("slow"), timeout_s=0.2) as model:
        with pytest.raises(UpstreamTimeout, match=r"did not answer within 0\.2 s") as info:
            await model.generate(make_prompt())
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    assert stub.counts["slow"] == 1  # the request may be running: not retried


@pytest.mark.anyio
async def test_a_stalled_stream_times_out(stub: StubLLM) -> None:
    pieces: list[str] = []
    async with running(stub.url("slowstream"), timeout_s=0.2) as model:
        with pytest.raises(UpstreamTimeout):
            async for piece in model.stream(make_prompt()):
                pieces.append(piece)
    assert pieces == ["Pods"]
    # The server sees the timed-out stream go away (and a later test does not see it late).
    until(lambda: stub.dropped == 1, "the LLM server to see the connection close")


@pytest.mark.anyio
async def test_a_stream_closed_early_drops_the_llm_request(stub: StubLLM) -> None:
    """A consumer that stops (``aclose()``) closes the HTTP response: the provider sees its
    client go away and can stop generating, rather than finishing an unread answer."""
    async with running(stub.url("slowstream")) as model:
        stream = model.stream(make_prompt())
        assert await anext(stream) == "Pods"
        await stream.aclose()
        until(lambda: stub.dropped == 1, "the LLM server to see the connection close")


@pytest.mark.anyio
async def test_a_cancelled_stream_drops_the_llm_request(stub: StubLLM) -> None:
    first = anyio.Event()

    async def consume(model: OpenAIChatModel) -> None:
        async for _ in model.stream(make_prompt()):
            first.set()

    async with running(stub.url("slowstream")) as model:
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume, model)
            await first.wait()
            tg.cancel_scope.cancel()  # as Starlette does when our own client disconnects
        until(lambda: stub.dropped == 1, "the LLM server to see the connection close")


@pytest.mark.anyio
async def test_connection_failures_are_retried_then_upstream_errors() -> None:
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with running(f"http://127.0.0.1:{port}/v1", max_retries=1) as model:
        with pytest.raises(UpstreamError, match="could not connect") as info:
            await model.generate(make_prompt())
    assert isinstance(info.value.__cause__, httpx.ConnectError)


@pytest.mark.anyio
async def test_use_before_start_fails_early() -> None:
    model = OpenAIChatModel(OpenAIChatModel.Config())
    with pytest.raises(RuntimeError, match="start"):
        await model.generate(make_prompt())


@pytest.mark.anyio
async def test_aclose_is_idempotent(stub: StubLLM) -> None:
    async with running(stub.url("ok")) as model:
        await model.aclose()
        await model.aclose()
        await model.start()
        assert (await model.generate(make_prompt())).text == ANSWER


@pytest.mark.anyio
async def test_a_stream_reports_usage_when_the_server_sends_it(stub: StubLLM) -> None:
    async with running(stub.url("ok")) as model:
        stream = model.stream(make_prompt())
        assert stream.usage == {}
        assert [p async for p in stream] == PIECES
        assert stream.usage == {"total_tokens": 9}
    [request] = stub.requests
    assert request.body["stream_options"] == {"include_usage": True}


@pytest.mark.anyio
async def test_stream_usage_can_be_turned_off(stub: StubLLM) -> None:
    async with running(stub.url("ok"), stream_usage=False) as model:
        assert [p async for p in model.stream(make_prompt())] == PIECES
    [request] = stub.requests
    assert "stream_options" not in request.body


@pytest.mark.anyio
async def test_max_tokens_and_temperature_may_be_set_per_request(stub: StubLLM) -> None:
    async with running(stub.url("ok"), temperature=0.3, max_tokens=99) as model:
        await model.generate(make_prompt(), max_tokens=5, temperature=0.9)
        _ = [p async for p in model.stream(make_prompt(), max_tokens=7)]
        await model.generate(make_prompt())
    first, second, third = (r.body for r in stub.requests)
    assert (first["max_tokens"], first["temperature"]) == (5, 0.9)
    assert (second["max_tokens"], second["temperature"]) == (7, 0.3)
    assert (third["max_tokens"], third["temperature"]) == (99, 0.3)


@pytest.mark.anyio
async def test_extra_body_adds_fields_but_never_replaces_ours(stub: StubLLM) -> None:
    extra = {"top_k": 20, "min_tokens": 3, "model": "evil", "stream": True, "max_tokens": 1,
             "stream_options": {"include_usage": True}}  # fmt: skip
    async with running(stub.url("ok"), extra_body=extra, max_tokens=None) as model:
        await model.generate(make_prompt())
    [request] = stub.requests
    assert request.body["top_k"] == 20 and request.body["min_tokens"] == 3
    assert request.body["model"] == "gpt-test" and request.body["stream"] is False
    assert "max_tokens" not in request.body
    assert "stream_options" not in request.body  # OpenAI refuses it without stream


@pytest.mark.anyio
async def test_complete_offers_tools_and_returns_the_wire_message(stub: StubLLM) -> None:
    tools = [{"type": "function", "function": {"name": "calculator", "parameters": {}}}]
    messages = [{"role": "user", "content": "6*7?"}]
    async with running(stub.url("tools")) as model:
        completion = await model.complete(messages, tools=tools, tool_choice="auto")
    assert completion["finish_reason"] == "tool_calls"
    assert completion["usage"] == {"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35}
    [tool_call] = completion["message"]["tool_calls"]
    assert tool_call["function"] == {"name": "calculator", "arguments": '{"expression": "6*7"}'}
    [request] = stub.requests
    assert request.body["tools"] == tools and request.body["tool_choice"] == "auto"
    assert request.body["messages"] == messages


@pytest.mark.anyio
async def test_complete_without_tools_sends_no_tool_fields(stub: StubLLM) -> None:
    async with running(stub.url("ok")) as model:
        completion = await model.complete([{"role": "user", "content": "hi"}], tool_choice="auto")
    assert completion["message"]["content"] == ANSWER
    [request] = stub.requests
    assert "tools" not in request.body and "tool_choice" not in request.body


@pytest.mark.anyio
@pytest.mark.parametrize("streamed", [False, True])
async def test_a_connection_reset_before_the_response_is_retried(
    stub: StubLLM, streamed: bool
) -> None:
    with fault_proxy(stub.port, RESET, Fault.status_code(503, "0")) as proxy:
        base = f"http://127.0.0.1:{proxy.port}/ok/v1"
        async with running(base, max_retries=2) as model:
            if streamed:
                assert [p async for p in model.stream(make_prompt())] == PIECES
            else:
                assert (await model.generate(make_prompt())).text == ANSWER
        assert proxy.applied == ["reset", "status", "pass"]
    assert stub.counts["ok"] == 1


@pytest.mark.anyio
async def test_resets_fail_once_the_retries_are_used_up(stub: StubLLM) -> None:
    with fault_proxy(stub.port, RESET, RESET, RESET) as proxy:
        async with running(f"http://127.0.0.1:{proxy.port}/ok/v1", max_retries=1) as model:
            with pytest.raises(UpstreamError, match="connection to the LLM failed"):
                await model.generate(make_prompt())
        assert proxy.hits == 2
    assert stub.counts["ok"] == 0


@pytest.mark.anyio
async def test_the_tool_loop_drives_the_model_in_the_wire_format(stub: StubLLM) -> None:
    from ragtide.tools import ToolCallingModel, ToolEngine, ToolLimits
    from ragtide.tools.builtin import CalculatorTool

    async with running(stub.url("tools")) as model:  # a server that always calls a tool
        assert isinstance(model, ToolCallingModel)
        run = await ToolEngine(ToolLimits(max_steps=1)).run(
            model, make_prompt(), [CalculatorTool()]
        )
    [record] = run.calls
    assert (record.name, record.outcome) == ("calculator", "ok")
    assert json.loads(record.result)["result"] == "42"
    assert run.stopped == "max_steps" and run.reply.usage["prompt_tokens"] == 60
    first, second = (r.body for r in stub.requests)
    assert first["tool_choice"] == "auto" and second["tool_choice"] == "none"
    assert first["messages"][0]["role"] == "system"  # the model's own prompt rendering
    assistant, tool = second["messages"][-2:]
    assert assistant["tool_calls"][0]["id"] == "call_1" and assistant["content"] == ""
    assert tool == {"role": "tool", "tool_call_id": "call_1", "content": record.result}


def test_a_requests_options_fill_in_what_the_call_leaves_unset() -> None:
    from ragtide.builtin.openai import _options
    from ragtide.types import Intent
    from ragtide.types import Prompt as P

    prompt = P("q", Intent("question", "q"), (), (), {"max_tokens": 7, "temperature": 0.2})
    assert _options(prompt, None, None) == (7, 0.2)
    assert _options(prompt, 3, 1.0) == (3, 1.0)  # explicit arguments win
    bare = P("q", Intent("question", "q"), (), ())
    assert _options(bare, None, None) == (None, None)
    odd = P("q", Intent("question", "q"), (), (), {"max_tokens": "7", "temperature": "hot"})
    assert _options(odd, None, None) == (None, None)  # only numbers are options
