"""A tenant whose follow-ups an LLM rewrites (intent ``llm``), through the HTTP API: the
rewritten question is what the turn retrieves with and reports; a model that fails leaves
the turn to the rule condenser and never fails it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ragtide.api.app import create_app
from tests.api.conftest import KUBE, auth_settings, metric_value, new_key, put_tenant, upload_as
from tests.chat_upstream import Upstream

REWRITTEN = "How does the kubelet enforce a container's memory limit?"


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream.serving(REWRITTEN) as server:
        yield server


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(auth_settings(tmp_path), configure_logs=False)) as c:
        yield c


def rewriting_tenant(client: TestClient, upstream: Upstream, mode: str) -> dict[str, str]:
    upstream.bodies.clear()
    llm = {"base_url": upstream.http.url(f"/{mode}/v1"), "model": "rewriter"}
    put_tenant(client, "a", intent={"use": "llm", "config": {"llm": llm, "deadline_s": 5}})
    _, rw = new_key(client, "a", ["read", "write"])
    assert upload_as(client, rw, "docs", "pods.md", KUBE).status_code == 201
    return rw


def turn(client: TestClient, headers: dict[str, str], message: str, session: str | None) -> dict:
    body = {"message": message} | ({"session_id": session} if session else {})
    r = client.post("/v1/namespaces/docs/chat", json=body, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_a_follow_up_is_answered_with_the_models_standalone_question(
    client: TestClient, upstream: Upstream
) -> None:
    rw = rewriting_tenant(client, upstream, "ok")
    first = turn(client, rw, "What is a Pod?", None)
    assert first["intent"]["condensed"] is False
    assert upstream.bodies == []  # a question that stands alone never reaches the model
    rewritten = metric_value(client, "ragtide_intent_rewrites_total", outcome="rewritten")
    follow_up = turn(client, rw, "and what about its memory limit?", first["session_id"])
    assert follow_up["intent"] == {"kind": "question", "query": REWRITTEN, "condensed": True}
    assert follow_up["citations"][0]["document_id"] == "pods.md"
    assert "memory limit" in follow_up["answer"]
    [body] = upstream.bodies
    assert "User: What is a Pod?" in body["messages"][1]["content"]
    after = metric_value(client, "ragtide_intent_rewrites_total", outcome="rewritten")
    assert after == rewritten + 1


def test_a_failing_rewriter_leaves_the_turn_to_the_rules(
    client: TestClient, upstream: Upstream
) -> None:
    rw = rewriting_tenant(client, upstream, "fail")
    first = turn(client, rw, "What is a Pod?", None)
    follow_up = turn(client, rw, "and what about its memory limit?", first["session_id"])
    assert follow_up["intent"]["condensed"] is True
    assert follow_up["intent"]["query"] != REWRITTEN
    assert "pod" in follow_up["intent"]["query"].lower()  # the rules carried the topic over
    assert follow_up["citations"]
