from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import COOKING, KUBE, upload


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
