from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Protocol

import pytest
from fastapi.testclient import TestClient

from ragtide.access import AccessPolicy
from ragtide.api.app import create_app
from ragtide.builtin.embedders import HashingEmbedder
from ragtide.builtin.intent import RuleIntentDetector
from ragtide.builtin.memory import InMemoryMemoryStore
from ragtide.builtin.policies import GroupPolicy
from ragtide.builtin.ratelimit import InMemoryRateLimiter
from ragtide.builtin.redis_cache import InMemoryAnswerCache
from ragtide.builtin.retrievers import HybridRetriever
from ragtide.builtin.sqlite_store import SQLiteStore
from ragtide.builtin.task_results import InMemoryResultStore
from ragtide.components import (
    AnswerCache,
    ChatModel,
    DocumentStore,
    Embedder,
    IntentDetector,
    MemoryStore,
    RateLimiter,
    ResultStore,
    Retriever,
)
from ragtide.registry import Registry
from ragtide.testing.fakes import FakeChatModel
from ragtide.types import Prompt, Reply
from tests.api.conftest import (
    COOKING,
    KUBE,
    auth_settings,
    bearer,
    make_settings,
    new_key,
    put_tenant,
    upload,
    upload_as,
)


def _seed(client: TestClient) -> None:
    upload(client, "kb", "pods.md", KUBE)
    upload(client, "kb", "bread.md", COOKING)


def test_completion_answers_from_the_namespace(client: TestClient) -> None:
    _seed(client)
    r = client.post(
        "/v1/chat/completions",
        json={
            "model": "kb",
            "temperature": 0.2,
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "What is a Pod?"},
            ],
        },
    )
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "kb"
    message = body["choices"][0]["message"]
    assert message["role"] == "assistant" and "smallest deployable unit" in message["content"]
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["citations"][0]["document_id"] == "pods.md"


def _follow_up(
    client: TestClient, history: list[dict[str, str]], stream: bool = False
) -> tuple[str, list[str]]:
    """Answer "And what does it need?" (no topic word of its own) after ``history``."""
    messages = [*history, {"role": "user", "content": "And what does it need?"}]
    body = {"model": "kb", "messages": messages, "stream": stream}
    if not stream:
        reply = client.post("/v1/chat/completions", json=body).json()
        return reply["choices"][0]["message"]["content"], [
            c["document_id"] for c in reply["citations"]
        ]
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        raw = "".join(r.iter_text())
    chunks = [json.loads(x.removeprefix("data: ")) for x in raw.split("\n\n")[:-2] if x.strip()]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    return text, [c["document_id"] for c in chunks[-1].get("citations", [])]


@pytest.mark.parametrize("stream", [False, True])
def test_history_comes_from_the_messages(client: TestClient, stream: bool) -> None:
    # The last message names no topic: only the earlier messages say what "it" is.
    _seed(client)
    alone, cited = _follow_up(client, [], stream)
    assert cited == [] and "flour" not in alone and "deployable" not in alone
    bread = [
        {"role": "user", "content": "How is bread baked?"},
        {"role": "assistant", "content": "From flour and yeast [1]."},
    ]
    answer, cited = _follow_up(client, bread, stream)
    assert "flour" in answer and cited[0] == "bread.md"
    pods = [
        {"role": "user", "content": "What is a Pod?"},
        {"role": "assistant", "content": "A unit of computing [1]."},
    ]
    answer, cited = _follow_up(client, pods, stream)
    assert "deployable" in answer and cited[0] == "pods.md"


def test_streaming_chunks_then_done(client: TestClient) -> None:
    _seed(client)
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": "kb",
            "stream": True,
            "messages": [{"role": "user", "content": "How is bread made?"}],
        },
    ) as r:
        raw = "".join(r.iter_text())
    lines = [x.removeprefix("data: ") for x in raw.split("\n\n") if x.strip()]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(x) for x in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert "flour" in text
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["citations"][0]["document_id"] == "bread.md"


def test_bad_requests(client: TestClient) -> None:
    _seed(client)
    url = "/v1/chat/completions"
    r = client.post(url, json={"model": "kb", "messages": []})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    r = client.post(url, json={"model": "kb", "messages": [{"role": "assistant", "content": "x"}]})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    r = client.post(url, json={"model": "nope", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 404 and r.json()["error"]["code"] == "namespace_not_found"
    r = client.post(url, json={"model": "../x", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_namespace"
    r = client.post(url, json={"model": "kb", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200


# --- the OpenAI surface: models, errors, options ------------------------------------------

URL = "/v1/chat/completions"
ASK = [{"role": "user", "content": "What is a Pod?"}]


class _Response(Protocol):
    @property
    def status_code(self) -> int: ...
    @property
    def text(self) -> str: ...
    def json(self) -> Any: ...


def _openai_error(r: _Response, status: int, code: str, kind: str) -> dict[str, Any]:
    """The body of an OpenAI-shaped error: ``{"error": {message, type, param, code}}``."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert (error["code"], error["type"]) == (code, kind), error
    assert isinstance(error["message"], str) and error["message"]
    return error


def test_models_list_the_namespaces_and_the_alias(client: TestClient) -> None:
    r = client.get("/v1/models")
    assert r.status_code == 200 and r.json() == {"object": "list", "data": []}
    _seed(client)
    upload(client, "default", "bread.md", COOKING)
    upload(client, "ragtide", "bread.md", COOKING)  # a namespace the alias hides
    r = client.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["ragtide", "default", "kb"]
    for model in body["data"]:
        assert model == {"id": model["id"], "object": "model", "created": 0, "owned_by": "default"}
    assert client.get("/v1/models/kb").json()["id"] == "kb"
    assert client.get("/v1/models/ragtide").json()["id"] == "ragtide"
    # every model listed answers a completion
    for model in body["data"]:
        r = client.post(URL, json={"model": model["id"], "messages": ASK})
        assert r.status_code == 200, (model, r.text)


def test_an_unknown_model_is_an_openai_404(client: TestClient) -> None:
    _seed(client)
    for path in ("/v1/models/nope", "/v1/models/ragtide", "/v1/models/-bad!"):
        error = _openai_error(client.get(path), 404, "namespace_not_found", "not_found_error")
        assert error["param"] == "model"
    r = client.post(URL, json={"model": "nope", "messages": ASK})
    error = _openai_error(r, 404, "namespace_not_found", "not_found_error")
    assert error["param"] == "model" and error["message"] == "namespace 'nope' does not exist"


def test_models_are_the_credentials_namespaces_only(tmp_path: Path) -> None:
    with TestClient(create_app(auth_settings(tmp_path), configure_logs=False)) as client:
        for tenant in ("acme", "other"):
            put_tenant(client, tenant)
        _, acme = new_key(client, "acme", ["read", "write"])
        _, other = new_key(client, "other", ["read", "write"])
        for ns in ("default", "docs", "secret"):
            assert upload_as(client, acme, ns, "pods.md", KUBE).status_code == 201
        assert upload_as(client, other, "theirs", "pods.md", KUBE).status_code == 201
        _, limited = new_key(client, "acme", ["read"], namespaces=["docs"])

        def ids(headers: dict[str, str]) -> list[str]:
            r = client.get("/v1/models", headers=headers)
            assert r.status_code == 200, r.text
            return [m["id"] for m in r.json()["data"]]

        assert ids(acme) == ["ragtide", "default", "docs", "secret"]
        assert ids(other) == ["theirs"]
        assert ids(limited) == ["docs"]  # no alias: this key may not use default
        assert client.get("/v1/models/docs", headers=other).status_code == 404
        assert client.get("/v1/models/secret", headers=limited).status_code == 404
        assert client.get("/v1/models/docs", headers=limited).json()["owned_by"] == "acme"
        # no credential, a wrong one, a credential without the read scope
        for headers in ({}, bearer("rt_" + "x" * 40)):
            for path in ("/v1/models", "/v1/models/docs"):
                r = client.get(path, headers=headers)
                _openai_error(r, 401, "unauthenticated", "authentication_error")
                assert r.headers["www-authenticate"].startswith("Bearer")
            r = client.post(URL, json={"model": "docs", "messages": ASK}, headers=headers)
            _openai_error(r, 401, "unauthenticated", "authentication_error")
        _, writer = new_key(client, "acme", ["write"])
        _openai_error(
            client.get("/v1/models", headers=writer), 403, "forbidden", "permission_error"
        )
        r = client.post(URL, json={"model": "docs", "messages": ASK}, headers=writer)
        _openai_error(r, 403, "forbidden", "permission_error")


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"n": 2}, "n", "n=2 is not supported"),
        ({"n": 0}, "n", "n=0 is not supported"),
        (
            {"tools": [{"type": "function", "function": {"name": "f"}}]},
            "tools",
            "client-defined tools",
        ),
        ({"functions": [{"name": "f"}]}, "functions", "client-defined tools"),
        ({"messages": []}, "messages", "at least 1 item"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "messages", "last message"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "content"),
        ({"temperature": 3}, "temperature", "less than or equal to 2"),
        ({"max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
        ({"stream": "yes"}, "stream", "stream"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages",
            "'image_url' are not supported",
        ),
    ],
)
def test_invalid_requests_are_openai_422s(
    client: TestClient, body: dict[str, Any], param: str, says: str
) -> None:
    _seed(client)
    r = client.post(URL, json={"model": "kb", "messages": ASK, **body})
    error = _openai_error(r, 422, "invalid_request", "invalid_request_error")
    assert error["param"] == param and says in error["message"], error


def test_malformed_bodies_are_openai_errors(client: TestClient) -> None:
    _seed(client)
    r = client.post(URL, content=b"{not json", headers={"content-type": "application/json"})
    error = _openai_error(r, 422, "invalid_json", "invalid_request_error")
    assert error["param"] is None and error["message"].startswith("invalid JSON at line 1")
    r = client.post(URL, content=b"{}", headers={"content-type": "text/plain"})
    _openai_error(r, 415, "unsupported_media_type", "invalid_request_error")
    # other routes keep the API's own shape
    r = client.post(
        "/v1/namespaces/kb/search", content=b"{x", headers={"content-type": "application/json"}
    )
    assert set(r.json()["error"]) == {"code", "message"}


def test_accepted_options_and_content_parts(client: TestClient) -> None:
    _seed(client)
    parts = [{"type": "text", "text": "What is"}, {"type": "text", "text": "a Pod?"}]
    r = client.post(
        URL,
        json={
            "model": "kb",
            "messages": [{"role": "user", "content": parts}],
            "n": 1,
            "max_tokens": 64,
            "max_completion_tokens": 64,
            "temperature": 0,
            "top_p": 1,
            "stop": ["\n\n"],
            "tools": [],
            "tool_choice": "none",
            "stream_options": {"include_usage": True},  # without stream: ignored
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert "smallest deployable unit" in body["choices"][0]["message"]["content"]
    # the extractive model reports no tokens
    assert body["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def test_the_user_is_logged_not_a_metric(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    _seed(client)
    with caplog.at_level(logging.INFO, logger="ragtide.api.routes.openai_compat"):
        r = client.post(URL, json={"model": "kb", "messages": ASK, "user": "user-4711"})
    assert r.status_code == 200
    logged = [rec for rec in caplog.records if getattr(rec, "end_user", None) == "user-4711"]
    assert len(logged) == 1 and logged[0].__dict__["model"] == "kb"
    assert "user-4711" not in client.get("/metrics").text


def _stream(client: TestClient, **extra: Any) -> list[str]:
    body = {"model": "kb", "stream": True, "messages": ASK, **extra}
    with client.stream("POST", URL, json=body) as r:
        assert r.status_code == 200
        raw = "".join(r.iter_text())
    return [x.removeprefix("data: ") for x in raw.split("\n\n") if x.strip()]


def test_stream_usage_comes_last_when_asked(client: TestClient) -> None:
    _seed(client)
    plain = _stream(client)
    assert all("usage" not in json.loads(x) for x in plain[:-1])
    lines = _stream(client, stream_options={"include_usage": True})
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(x) for x in lines[:-1]]
    *answer, last = chunks
    assert all(c["usage"] is None for c in answer)
    assert answer[-1]["choices"][0]["finish_reason"] == "stop" and answer[-1]["citations"]
    assert last["choices"] == [] and last["object"] == "chat.completion.chunk"
    usage = last["usage"]
    assert set(usage) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


class Counted(FakeChatModel):
    """A chat model that reports the tokens it used, as an LLM does."""

    async def generate(self, prompt: Prompt) -> Reply:
        reply = await super().generate(prompt)
        return Reply(reply.text, reply.cited, {"prompt_tokens": 42, "completion_tokens": 7})


def _registry() -> Registry:
    return Registry(
        {
            DocumentStore: {"sqlite": SQLiteStore},
            Embedder: {"hashing": HashingEmbedder},
            Retriever: {"hybrid": HybridRetriever},
            IntentDetector: {"rules": RuleIntentDetector},
            ChatModel: {"counted": Counted},
            MemoryStore: {"memory": InMemoryMemoryStore},
            AnswerCache: {"memory": InMemoryAnswerCache},
            RateLimiter: {"memory": InMemoryRateLimiter},
            ResultStore: {"memory": InMemoryResultStore},
            AccessPolicy: {"groups": GroupPolicy},
        }
    )


def test_usage_is_the_models_report(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, chat_model={"use": "counted"})
    with TestClient(create_app(settings, registry=_registry(), configure_logs=False)) as client:
        _seed(client)
        r = client.post(URL, json={"model": "kb", "messages": ASK})
        assert r.status_code == 200, r.text
        assert r.json()["usage"] == {
            "prompt_tokens": 42,
            "completion_tokens": 7,
            "total_tokens": 49,
        }


def test_rate_limits_are_openai_429s_with_retry_after(tmp_path: Path) -> None:
    settings = auth_settings(tmp_path, rate_limit={"enabled": True})
    with TestClient(create_app(settings, configure_logs=False)) as client:
        put_tenant(client, "acme", quotas={"chat_per_second": 0.001})  # a bucket of 1
        _, acme = new_key(client, "acme", ["read", "write"])
        assert upload_as(client, acme, "kb", "pods.md", KUBE).status_code == 201
        body = {"model": "kb", "messages": ASK}
        assert client.post(URL, json=body, headers=acme).status_code == 200
        r = client.post(URL, json=body, headers=acme)
        _openai_error(r, 429, "rate_limited", "rate_limit_error")
        assert int(r.headers["retry-after"]) >= 1
        # listing models is not a chat request
        assert client.get("/v1/models", headers=acme).status_code == 200


def test_a_failing_upstream_is_an_openai_error_in_band(tmp_path: Path) -> None:
    model = {"use": "openai", "config": {"base_url": "http://127.0.0.1:9/v1", "api_key": "sk-x",
                                         "max_retries": 0, "timeout_s": 2}}  # fmt: skip
    with TestClient(
        create_app(make_settings(tmp_path, chat_model=model), configure_logs=False)
    ) as client:
        _seed(client)
        r = client.post(URL, json={"model": "kb", "messages": ASK})
        _openai_error(r, 502, "upstream_error", "api_error")
        lines = _stream(client)
    assert lines[-1] == "[DONE]"
    error = json.loads(lines[-2])["error"]
    assert (error["code"], error["type"], error["status"]) == ("upstream_error", "api_error", 502)
    assert error["message"] and error["param"] is None


@pytest.mark.parametrize("stream", [False, True])
def test_grounding_and_tool_calls_ride_along(client: TestClient, stream: bool) -> None:
    _seed(client)
    body = {
        "model": "kb",
        "stream": stream,
        "messages": [{"role": "user", "content": "What is a Pod?"}],
    }
    if stream:
        with client.stream("POST", "/v1/chat/completions", json=body) as r:
            raw = "".join(r.iter_text())
        lines = [x.removeprefix("data: ") for x in raw.split("\n\n") if x.strip()]
        final = json.loads(lines[-2])
        assert final["choices"][0]["finish_reason"] == "stop"
        streamed = "".join(
            json.loads(x)["choices"][0]["delta"].get("content", "") for x in lines[:-1]
        )
        assert final["answer"] == streamed  # annotate: the final text is the streamed one
    else:
        final = client.post("/v1/chat/completions", json=body).json()
    grounding = final["grounding"]
    assert grounding["supported"] is True and grounding["action"] == "none"
    assert grounding["sentences"][0]["citations"] == [final["citations"][0]["index"]]
    assert final["tool_calls"] == []
