"""Clients nobody here wrote, unmodified, against a real ``ragtide serve`` process.

The official ``openai`` SDK (sync, async, streaming; its own exception types for 401,
404, 422 and 429) and LangChain's ``ChatOpenAI`` (plain and streaming) talk to the
OpenAI surface (``/v1/models``, ``/v1/chat/completions``) with authentication on: tenant
``acme`` holds the demo corpus in namespace ``handbook``; tenant ``slow`` has a chat rate
of one request per 1000 seconds, so its second completion is a 429.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from ragtide.bench.server import free_port, wait_ready

pytestmark = pytest.mark.integration

ADMIN_KEY = "adm-" + "o" * 28
NS = "handbook"
QUESTION = "What file formats are supported?"


@dataclass
class Server:
    url: str  # the OpenAI base URL: http://127.0.0.1:<port>/v1
    key: str  # read + write key of tenant acme
    slow_key: str  # read + write key of tenant slow (chat: one request per 1000 s)
    log: Path  # the server's stderr (JSON log lines)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("openai-sdk")
    log = data / "server.log"
    port = free_port()
    env = {
        **os.environ,
        "RAGTIDE_DATA_DIR": str(data),
        "RAGTIDE_EMBEDDER__USE": "hashing",
        "RAGTIDE_AUTH__ENABLED": "true",
        "RAGTIDE_AUTH__ADMIN_KEY": ADMIN_KEY,
        "RAGTIDE_RATE_LIMIT__ENABLED": "true",
        "RAGTIDE_LOGGING__LEVEL": "INFO",
        "RAGTIDE_LOGGING__FORMAT": "json",
    }
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ragtide.cli", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        wait_ready(proc, port, time.perf_counter())
        base = f"http://127.0.0.1:{port}"
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        with httpx.Client(base_url=base, timeout=30) as http:
            for tenant, quotas in (("acme", {}), ("slow", {"chat_per_second": 0.001})):
                r = http.put(f"/v1/tenants/{tenant}", json={"quotas": quotas}, headers=admin)
                assert r.status_code == 201, r.text
            keys = []
            for tenant in ("acme", "slow"):
                r = http.post(
                    f"/v1/tenants/{tenant}/keys", json={"scopes": ["read", "write"]}, headers=admin
                )
                assert r.status_code == 201, r.text
                keys.append(r.json()["key"])
            for ns, key in ((NS, keys[0]), ("default", keys[1])):
                for doc in files("ragtide").joinpath("demo").iterdir():
                    r = http.post(
                        f"/v1/namespaces/{ns}/documents",
                        files={"file": (doc.name, doc.read_bytes())},
                        headers={"Authorization": f"Bearer {key}"},
                    )
                    assert r.status_code == 201, r.text
        yield Server(f"{base}/v1", keys[0], keys[1], log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-4000:]


def _client(server: Server, key: str | None = None, max_retries: int = 2) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=key or server.key, max_retries=max_retries)


def _ask() -> list[ChatCompletionMessageParam]:
    return [
        {"role": "system", "content": "Answer from the handbook."},
        {"role": "user", "content": QUESTION},
    ]


def _cited(extra: dict[str, object] | None) -> list[str]:
    citations = (extra or {}).get("citations")
    assert isinstance(citations, list), extra
    return [c["document_id"] for c in citations]


# --- the openai SDK ---------------------------------------------------------------------


def test_sdk_lists_and_retrieves_models(server: Server) -> None:
    with _client(server) as client:
        models = client.models.list()
        assert [m.id for m in models.data] == [NS]  # acme has no default namespace
        assert all(m.object == "model" and m.owned_by == "acme" for m in models.data)
        assert client.models.retrieve(NS).id == NS
        with pytest.raises(openai.NotFoundError) as raised:
            client.models.retrieve("gpt-4o")
        assert raised.value.code == "namespace_not_found"
        assert raised.value.type == "not_found_error"
    with _client(server, server.slow_key) as slow:
        assert [m.id for m in slow.models.list()] == ["ragtide", "default"]


def test_sdk_completion(server: Server) -> None:
    with _client(server) as client:
        completion = client.chat.completions.create(
            model=NS, messages=_ask(), temperature=0, max_tokens=200, user="sdk-user-17"
        )
    assert completion.object == "chat.completion" and completion.model == NS
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert "Markdown" in (choice.message.content or "")
    assert "getting-started.md" in _cited(completion.model_extra)
    assert completion.usage is not None and completion.usage.total_tokens >= 0
    lines = [json.loads(x) for x in server.log.read_text().splitlines() if x.startswith("{")]
    assert any(line.get("end_user") == "sdk-user-17" for line in lines)


def test_sdk_stream_with_usage(server: Server) -> None:
    with _client(server) as client:
        stream = client.chat.completions.create(
            model=NS,
            messages=_ask(),
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Markdown" in text
    finished = [c for c in chunks if c.choices and c.choices[0].finish_reason == "stop"]
    assert len(finished) == 1 and "getting-started.md" in _cited(finished[0].model_extra)
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens


def test_sdk_async(server: Server) -> None:
    async def run() -> tuple[list[str], str, str]:
        async with openai.AsyncOpenAI(base_url=server.url, api_key=server.key) as client:
            models = [m.id async for m in client.models.list()]
            completion = await client.chat.completions.create(model=NS, messages=_ask())
            stream = await client.chat.completions.create(model=NS, messages=_ask(), stream=True)
            pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
            with pytest.raises(openai.NotFoundError):
                await client.chat.completions.create(model="nope", messages=_ask())
        return models, completion.choices[0].message.content or "", "".join(pieces)

    models, text, streamed = asyncio.run(run())
    assert models == [NS]
    assert "Markdown" in text and text == streamed


def test_sdk_errors_are_its_own_exception_types(server: Server) -> None:
    with _client(server, "rt_" + "0" * 40, max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError) as raised:
            wrong.models.list()
        assert raised.value.status_code == 401 and raised.value.code == "unauthenticated"
        with pytest.raises(openai.AuthenticationError):
            wrong.chat.completions.create(model=NS, messages=_ask())
    with _client(server, max_retries=0) as client:
        with pytest.raises(openai.NotFoundError) as missing:
            client.chat.completions.create(model="gpt-4o", messages=_ask())
        assert missing.value.param == "model"
        assert missing.value.message.endswith("namespace 'gpt-4o' does not exist")
        with pytest.raises(openai.UnprocessableEntityError) as several:
            client.chat.completions.create(model=NS, messages=_ask(), n=2)
        assert several.value.param == "n" and several.value.type == "invalid_request_error"
        tool: ChatCompletionToolParam = {
            "type": "function",
            "function": {"name": "lookup", "parameters": {}},
        }
        with pytest.raises(openai.UnprocessableEntityError) as tools:
            client.chat.completions.create(model=NS, messages=_ask(), tools=[tool])
        assert tools.value.param == "tools" and "not supported" in tools.value.message


def test_sdk_rate_limit(server: Server) -> None:
    with _client(server, server.slow_key, max_retries=0) as client:
        ok = client.chat.completions.create(model="ragtide", messages=_ask())
        assert ok.model == "ragtide" and "getting-started.md" in _cited(ok.model_extra)
        with pytest.raises(openai.RateLimitError) as raised:
            client.chat.completions.create(model="ragtide", messages=_ask())
    error = raised.value
    assert error.status_code == 429 and error.code == "rate_limited"
    assert error.type == "rate_limit_error" and int(error.response.headers["retry-after"]) >= 1


# --- LangChain -----------------------------------------------------------------------------


def _chat(server: Server, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(base_url=server.url, api_key=server.key, model=NS, max_retries=0, **kwargs)


def test_langchain_invoke(server: Server) -> None:
    reply = _chat(server, temperature=0).invoke(QUESTION)
    assert isinstance(reply.content, str) and "Markdown" in reply.content
    assert reply.response_metadata["model_name"] == NS


def test_langchain_stream(server: Server) -> None:
    pieces = list(_chat(server, stream_usage=True).stream(QUESTION))
    text = "".join(str(p.content) for p in pieces)
    assert "Markdown" in text
    usage = [p.usage_metadata for p in pieces if p.usage_metadata]
    assert len(usage) == 1 and set(usage[0]) >= {"input_tokens", "output_tokens", "total_tokens"}


def test_langchain_async_stream(server: Server) -> None:
    async def run() -> str:
        return "".join([str(p.content) async for p in _chat(server).astream(QUESTION)])

    assert "Markdown" in asyncio.run(run())
