from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ragtide.api.app import create_app
from ragtide.runtime import build_runtime
from ragtide.types import Prompt, Reply
from tests.api.conftest import KUBE, make_settings, upload


def test_healthz_and_ready(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready"}


def test_ready_is_503_while_draining(client: TestClient) -> None:
    client.app.state.draining = True  # type: ignore[attr-defined]
    r = client.get("/ready")
    assert r.status_code == 503 and r.json()["reason"] == "draining"


def test_metrics_count_requests_by_route_and_status(client: TestClient) -> None:
    upload(client, "kb", "pods.md", KUBE)
    client.post("/v1/namespaces/kb/search", json={"query": "pod"})
    client.post("/v1/namespaces/kb/chat", json={"message": "What is a Pod?"})
    text = client.get("/metrics").text
    assert (
        'ragtide_http_requests_total{method="POST",route="/v1/namespaces/{namespace}/search",'
        'status="200"}' in text
    )
    assert "ragtide_http_request_duration_seconds_bucket" in text
    # The scrape reading the gauge is not load: an idle replica reads 0, not 1.
    assert "\nragtide_http_requests_in_flight 0.0\n" in text
    assert 'ragtide_stage_duration_seconds_count{component="hybrid",stage="retrieve"}' in text
    assert "ragtide_chunks_ingested_total" in text
    assert 'ragtide_documents_ingested_total{outcome="created"}' in text


def test_request_id_is_echoed_or_made(client: TestClient) -> None:
    assert (
        client.get("/healthz", headers={"x-request-id": "abc-123"}).headers["x-request-id"]
        == "abc-123"
    )
    assert len(client.get("/healthz").headers["x-request-id"]) == 16


def test_unknown_route_and_method(client: TestClient) -> None:
    r = client.get("/v2/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = client.put("/healthz")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_chat_page_and_openapi(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "<title>Ragtide chat</title>" in page.text
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/namespaces/{namespace}/chat" in paths


class _Exploding:
    model_id = "exploding"

    async def generate(self, prompt: Prompt) -> Reply:
        raise RuntimeError("secret internal detail")

    async def stream(self, prompt: Prompt) -> AsyncIterator[str]:
        raise RuntimeError("secret internal detail")
        yield ""


def test_unexpected_errors_are_500_without_details(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    rt = build_runtime(settings)
    rt.chat_model = _Exploding()
    with TestClient(
        create_app(settings, runtime=rt, configure_logs=False), raise_server_exceptions=False
    ) as client:
        upload(client, "kb", "pods.md", KUBE)
        r = client.post("/v1/namespaces/kb/chat", json={"message": "What is a Pod?"})
        assert r.status_code == 500
        assert r.json() == {"error": {"code": "internal", "message": "internal error"}}
        assert "secret" not in r.text


def test_access_log_is_one_json_line_with_the_request_id(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path, logging={"format": "json", "access_log": True})
    with TestClient(create_app(settings, configure_logs=False)) as client:
        client.put("/v1/namespaces/kb", headers={"x-request-id": "req-42"})
    lines = [json.loads(x) for x in capfd.readouterr().err.splitlines() if x.startswith("{")]
    access = [x for x in lines if x.get("logger") == "ragtide.access"]
    assert len(access) == 1
    assert access[0]["request_id"] == "req-42" and access[0]["status"] == 201
    assert access[0]["path"] == "/v1/namespaces/kb" and access[0]["duration_s"] > 0


def test_the_served_app_loads_its_big_namespaces_before_it_is_ready(tmp_path: Path) -> None:
    import asyncio
    import time

    import numpy as np

    from ragtide.builtin.sqlite_store import SQLiteStore
    from ragtide.testing.fakes import make_chunks, make_document

    async def fill() -> None:
        store = SQLiteStore(SQLiteStore.Config(path=tmp_path / "ragtide.db"))
        await store.start()
        for d in range(12):  # 600 chunks: over warm_min_chunks (500)
            doc = f"d{d}"
            chunks = make_chunks(doc, [f"note {d}-{i} on herons" for i in range(50)])
            vectors = np.ones((50, 8), np.float32)
            await store.put_document("default/big", make_document(doc), chunks, vectors, "e")
        await store.aclose()

    asyncio.run(fill())
    with TestClient(create_app(make_settings(tmp_path), configure_logs=False)) as client:
        deadline = time.monotonic() + 60
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, "never ready"
        assert client.app.state.runtime.store.index_loaded("default/big")  # type: ignore[attr-defined]
