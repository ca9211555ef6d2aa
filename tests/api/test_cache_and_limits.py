from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from ragtide.api.app import create_app
from tests.api.conftest import COOKING, KUBE, make_settings, upload


def _cache_count(client: TestClient, result: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'ragtide_answer_cache_total{{result="{result}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_repeated_question_is_answered_from_the_cache(client: TestClient) -> None:
    upload(client, "kb", "pods.md", KUBE)
    hits, misses = _cache_count(client, "hit"), _cache_count(client, "miss")
    first = client.post("/v1/namespaces/kb/chat", json={"message": "What is a Pod?"}).json()
    again = client.post("/v1/namespaces/kb/chat", json={"message": "what is a pod"}).json()
    assert (_cache_count(client, "hit"), _cache_count(client, "miss")) == (hits + 1, misses + 1)
    assert again["answer"] == first["answer"] and again["citations"] == first["citations"]
    assert again["session_id"] != first["session_id"]
    history = client.get(f"/v1/namespaces/kb/sessions/{again['session_id']}").json()
    assert [t["content"] for t in history["turns"]] == ["what is a pod", again["answer"]]


def test_changed_documents_invalidate_the_cache(client: TestClient) -> None:
    upload(client, "kb", "pods.md", KUBE)
    client.post("/v1/namespaces/kb/chat", json={"message": "How is bread baked?"})
    upload(client, "kb", "bread.md", COOKING)  # the namespace changed
    misses = _cache_count(client, "miss")
    body = client.post("/v1/namespaces/kb/chat", json={"message": "How is bread baked?"}).json()
    assert _cache_count(client, "miss") == misses + 1
    assert body["citations"] and body["citations"][0]["document_id"] == "bread.md"
    assert client.delete("/v1/namespaces/kb/documents/bread.md").status_code == 204
    body = client.post("/v1/namespaces/kb/chat", json={"message": "How is bread baked?"}).json()
    assert all(c["document_id"] != "bread.md" for c in body["citations"])


def test_the_cache_is_per_namespace(client: TestClient) -> None:
    upload(client, "a", "bread.md", COOKING)
    upload(client, "b", "pods.md", KUBE)
    a = client.post("/v1/namespaces/a/chat", json={"message": "What is bread made of?"}).json()
    b = client.post("/v1/namespaces/b/chat", json={"message": "What is bread made of?"}).json()
    assert a["citations"] and not b["citations"]


def test_streaming_uses_the_cache_too(client: TestClient) -> None:
    upload(client, "kb", "pods.md", KUBE)
    first = client.post("/v1/namespaces/kb/chat", json={"message": "What is a Pod?"}).json()
    hits = _cache_count(client, "hit")
    with client.stream(
        "POST", "/v1/namespaces/kb/chat", json={"message": "What is a Pod?", "stream": True}
    ) as r:
        raw = "".join(r.iter_text())
    assert _cache_count(client, "hit") == hits + 1
    assert first["answer"].split()[0] in raw


def test_rate_limit_refuses_with_retry_after(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        rate_limit={"enabled": True},
        tenants={"quotas": {"search_per_second": 0.5, "burst_seconds": 4}},  # a bucket of 2
    )
    with TestClient(create_app(settings, configure_logs=False)) as client:
        upload(client, "kb", "pods.md", KUBE)  # writes have a bucket of their own
        for _ in range(2):
            assert client.post("/v1/namespaces/kb/search", json={"query": "pod"}).status_code == 200
        r = client.post("/v1/namespaces/kb/search", json={"query": "pod"})
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "rate_limited"
        assert int(r.headers["retry-after"]) >= 1
        # A made-up credential is no new client with a fresh bucket: it is refused.
        forged = client.post(
            "/v1/namespaces/kb/search",
            json={"query": "pod"},
            headers={"authorization": "Bearer someone-else"},
        )
        assert forged.status_code == 401
        assert forged.json()["error"]["code"] == "unauthenticated"