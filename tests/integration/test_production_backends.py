"""The whole app on the production backends: PostgreSQL + pgvector and Redis."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from fastapi.testclient import TestClient

from ragtide.api.app import create_app
from tests.api.conftest import COOKING, KUBE, make_settings, upload

pytestmark = pytest.mark.integration

PG = os.environ.get("RAGTIDE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5433/ragtide")
REDIS = os.environ.get("RAGTIDE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[TestClient, TestClient]]:
    """Two apps (as two replicas would be) sharing one database schema and one Redis."""
    tag = uuid.uuid4().hex[:10]
    schema, prefix = f"it_{tag}", f"it-{tag}"
    shared = {"url": REDIS, "key_prefix": prefix}
    overrides: dict[str, object] = {
        "store": {"use": "postgres", "config": {"url": PG, "db_schema": schema}},
        "memory": {"use": "redis", "config": shared},
        "answer_cache": {"use": "redis", "config": shared},
        "rate_limiter": {"use": "redis", "config": shared},
    }
    a = create_app(make_settings(tmp_path / "a", **overrides), configure_logs=False)
    b = create_app(make_settings(tmp_path / "b", **overrides), configure_logs=False)
    try:
        with TestClient(a) as client_a, TestClient(b) as client_b:
            yield client_a, client_b
    finally:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        r = redis.Redis.from_url(REDIS)
        keys = list(r.scan_iter(f"{prefix}:*"))
        if keys:
            r.delete(*keys)


def test_any_replica_serves_any_turn(replicas: tuple[TestClient, TestClient]) -> None:
    a, b = replicas
    assert a.get("/ready").status_code == 200 and b.get("/ready").status_code == 200
    assert upload(a, "kb", "pods.md", KUBE).status_code == 201
    first = b.post("/v1/namespaces/kb/chat", json={"message": "What is a Pod?"}).json()
    assert first["citations"][0]["document_id"] == "pods.md"
    sid = first["session_id"]
    follow = a.post(
        "/v1/namespaces/kb/chat",
        json={"message": "and what about its limits?", "session_id": sid},
    ).json()
    assert follow["intent"]["condensed"] is True
    turns = b.get(f"/v1/namespaces/kb/sessions/{sid}").json()["turns"]
    assert [t["content"] for t in turns[::2]] == ["What is a Pod?", "and what about its limits?"]


def test_the_answer_cache_is_shared_and_invalidated(
    replicas: tuple[TestClient, TestClient],
) -> None:
    a, b = replicas
    upload(a, "kb", "pods.md", KUBE)
    before = a.post("/v1/namespaces/kb/chat", json={"message": "How is bread baked?"}).json()
    assert before["citations"] == []
    upload(b, "kb", "bread.md", COOKING)  # the other replica changes the documents
    after = a.post("/v1/namespaces/kb/chat", json={"message": "How is bread baked?"}).json()
    assert after["citations"] and after["citations"][0]["document_id"] == "bread.md"
    again = b.post("/v1/namespaces/kb/chat", json={"message": "how is bread baked"}).json()
    assert again["answer"] == after["answer"]
    assert 'ragtide_answer_cache_total{result="hit"}' in b.get("/metrics").text
