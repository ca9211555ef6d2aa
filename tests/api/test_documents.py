from __future__ import annotations

import io
import json
from pathlib import Path

from fastapi.testclient import TestClient

from ragtide.api.app import create_app
from tests.api.conftest import COOKING, KUBE, make_settings, upload


def test_namespace_lifecycle(client: TestClient) -> None:
    assert client.get("/v1/namespaces/kb").status_code == 404
    assert client.put("/v1/namespaces/kb").status_code == 201
    assert client.put("/v1/namespaces/kb").status_code == 200
    body = client.get("/v1/namespaces/kb").json()
    assert body == {"namespace": "kb", "documents": 0, "chunks": 0}
    assert "kb" in [n["namespace"] for n in client.get("/v1/namespaces").json()["namespaces"]]


def test_invalid_namespace_name(client: TestClient) -> None:
    r = client.put("/v1/namespaces/-bad!")
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_namespace"


def test_upload_list_get_delete(client: TestClient) -> None:
    r = upload(client, "kb", "pods.md", KUBE)
    assert r.status_code == 201
    [doc] = r.json()["documents"]
    assert doc["document_id"] == "pods.md" and doc["status"] == "created" and doc["chunks"] >= 1
    listed = client.get("/v1/namespaces/kb/documents").json()["documents"]
    assert [d["id"] for d in listed] == ["pods.md"]
    assert listed[0]["title"] == "Pods"
    assert client.get("/v1/namespaces/kb/documents/pods.md").json()["chunks"] == doc["chunks"]
    assert client.delete("/v1/namespaces/kb/documents/pods.md").status_code == 204
    r = client.delete("/v1/namespaces/kb/documents/pods.md")
    assert r.status_code == 404 and r.json()["error"]["code"] == "document_not_found"
    assert client.get("/v1/namespaces/kb/documents").json()["documents"] == []


def test_reupload_unchanged_is_a_no_op_and_changed_replaces(client: TestClient) -> None:
    assert upload(client, "kb", "pods.md", KUBE).status_code == 201
    again = upload(client, "kb", "pods.md", KUBE)
    assert again.status_code == 200 and again.json()["documents"][0]["status"] == "unchanged"
    changed = upload(client, "kb", "pods.md", KUBE + b"\nPods are ephemeral by design.\n")
    assert changed.status_code == 201 and changed.json()["documents"][0]["status"] == "updated"
    hits = client.post("/v1/namespaces/kb/search", json={"query": "ephemeral by design"}).json()
    assert any("ephemeral" in h["text"] for h in hits["results"])
    assert client.get("/v1/namespaces/kb").json()["documents"] == 1


def test_explicit_document_id(client: TestClient) -> None:
    r = upload(client, "kb", "x.txt", b"Plain text about gardening.", document_id="garden-1")
    assert r.json()["documents"][0]["document_id"] == "garden-1"


def test_jsonl_ids_come_from_the_file(client: TestClient) -> None:
    lines = [
        {"_id": f"doc-{i}", "title": f"T{i}", "text": f"Body number {i} about topic {i}."}
        for i in range(3)
    ]
    data = "\n".join(json.dumps(x) for x in lines).encode()
    r = upload(client, "kb", "corpus.jsonl", data)
    assert r.status_code == 201
    assert sorted(d["document_id"] for d in r.json()["documents"]) == ["doc-0", "doc-1", "doc-2"]


def test_rejections_have_specific_codes_and_create_nothing(client: TestClient) -> None:
    cases = [
        ("notes.xyz", b"some text", 415, "unsupported_media_type"),
        ("empty.md", b"   \n", 422, "empty_document"),
        ("broken.pdf", b"%PDF-1.7 this is not really a pdf", 422, "corrupt_document"),
        ("blob.txt", bytes(range(256)) * 8, 422, "corrupt_document"),
        ("broken.docx", b"PK\x03\x04 not a zip", 422, "corrupt_document"),
    ]
    for name, data, status, code in cases:
        r = upload(client, "fresh", name, data)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), name
        assert name in r.json()["error"]["message"] or r.json()["error"]["message"]
    assert client.get("/v1/namespaces/fresh").status_code == 404


def test_upload_over_the_limit_is_413(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, http={"max_upload_bytes": 1000})
    with TestClient(create_app(settings, configure_logs=False)) as client:
        r = upload(client, "kb", "big.txt", b"word " * 100_000)
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "payload_too_large"
        assert client.get("/v1/namespaces/kb").status_code == 404


def test_upload_without_file_field(client: TestClient) -> None:
    r = client.post("/v1/namespaces/kb/documents", data={"other": "x"})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_request"


def test_a_bad_file_does_not_harm_existing_documents(client: TestClient) -> None:
    upload(client, "kb", "pods.md", KUBE)
    upload(client, "kb", "pods.md", b"\x00\x01\x02" * 100)  # same id, corrupt content
    doc = client.get("/v1/namespaces/kb/documents/pods.md").json()
    assert doc["title"] == "Pods"
    r = client.post("/v1/namespaces/kb/search", json={"query": "smallest deployable unit"})
    assert r.json()["results"][0]["document_id"] == "pods.md"


def test_documents_of_unknown_namespace(client: TestClient) -> None:
    r = client.get("/v1/namespaces/nope/documents")
    assert r.status_code == 404 and r.json()["error"]["code"] == "namespace_not_found"
    upload(client, "kb", "bread.md", COOKING)
    r = client.delete("/v1/namespaces/nope/documents/bread.md")
    assert r.status_code == 404 and r.json()["error"]["code"] == "namespace_not_found"


def test_document_ids_with_slashes(client: TestClient) -> None:
    r = upload(client, "kb", "pods.md", KUBE, document_id="concepts/workloads/pods.md")
    assert r.status_code == 201
    got = client.get("/v1/namespaces/kb/documents/concepts/workloads/pods.md")
    assert got.status_code == 200 and got.json()["id"] == "concepts/workloads/pods.md"


def test_multipart_stream_is_read_fully(client: TestClient) -> None:
    data = io.BytesIO(("Sentence about apples. " * 2000).encode())
    r = client.post("/v1/namespaces/kb/documents", files={"file": ("apples.txt", data)})
    assert r.status_code == 201 and r.json()["documents"][0]["chunks"] > 5


def test_listing_pages_with_a_cursor(client: TestClient) -> None:
    lines = "".join(
        json.dumps({"_id": f"doc-{i:02d}", "title": f"T{i}", "text": f"Text number {i}."}) + "\n"
        for i in range(25)
    )
    files = {"file": ("batch.jsonl", lines.encode(), "application/jsonl")}
    assert client.post("/v1/namespaces/pages/documents", files=files).status_code == 201
    seen, after = [], None
    while True:
        params = {"limit": 10, **({"after": after} if after else {})}
        page = client.get("/v1/namespaces/pages/documents", params=params).json()
        seen += [d["id"] for d in page["documents"]]
        after = page["next"]
        if after is None:
            break
        assert len(page["documents"]) == 10 and after == seen[-1]
    assert seen == [f"doc-{i:02d}" for i in range(25)]
    whole = client.get("/v1/namespaces/pages/documents").json()
    assert len(whole["documents"]) == 25 and whole["next"] is None
    for bad in ({"limit": 0}, {"limit": 1001}, {"limit": "ten"}):
        r = client.get("/v1/namespaces/pages/documents", params=bad)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
