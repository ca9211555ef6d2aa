"""Sessions listed and renamed, and a document's chunks, over HTTP: paging, validation,
the caller's tenant and access policies (the stores' own contracts are in tests/contract)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ragtide.api.app import create_app
from ragtide.types import SessionInfo
from tests.api.conftest import (
    COOKING,
    KUBE,
    JWTIssuer,
    auth_settings,
    new_key,
    put_tenant,
    upload,
    upload_as,
)


def chat(client: TestClient, ns: str, message: str, session: str, **kw: Any) -> None:
    body = {"message": message, "session_id": session}
    r = client.post(f"/v1/namespaces/{ns}/chat", json=body, **kw)
    assert r.status_code == 200, r.text


def sessions(client: TestClient, ns: str = "kb", **kw: Any) -> list[dict[str, Any]]:
    r = client.get(f"/v1/namespaces/{ns}/sessions", **kw)
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["sessions"]
    return found


# --- sessions ---------------------------------------------------------------------------


def test_sessions_are_listed_latest_first_with_titles(client: TestClient) -> None:
    upload(client, "kb", "pods.md", KUBE)
    assert sessions(client) == []
    chat(client, "kb", "What is a Pod?", "s-pods")
    chat(client, "kb", "How are  CPU\nlimits enforced?", "s-limits")
    listed = sessions(client)
    assert [s["session_id"] for s in listed] == ["s-limits", "s-pods"]
    assert [s["title"] for s in listed] == ["How are CPU limits enforced?", "What is a Pod?"]
    assert [s["turns"] for s in listed] == [2, 2]
    assert set(listed[0]) == {"session_id", "title", "turns", "created_at", "updated_at"}
    chat(client, "kb", "And memory?", "s-pods")  # updated: first again, title kept
    listed = sessions(client)
    assert [(s["session_id"], s["title"], s["turns"]) for s in listed] == [
        ("s-pods", "What is a Pod?", 4),
        ("s-limits", "How are CPU limits enforced?", 2),
    ]
    assert listed[0]["updated_at"] > listed[0]["created_at"]


def test_sessions_page_with_next(client: TestClient) -> None:
    upload(client, "kb", "pods.md", KUBE)
    for i in range(5):
        chat(client, "kb", f"What is a Pod {i}?", f"s{i}")
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"after": after} if after else {})
        r = client.get("/v1/namespaces/kb/sessions", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        seen += [s["session_id"] for s in body["sessions"]]
        pages += 1
        after = body["next"]
        if after is None:
            break
    assert seen == ["s4", "s3", "s2", "s1", "s0"] and pages == 3


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=1001",
        "after=x",
        "after=1.5",
        "after=1.5~a%20b",
        "after=1e9~a",
        "after=-1~a",
    ],
)
def test_bad_paging_is_422(client: TestClient, query: str) -> None:
    upload(client, "kb", "pods.md", KUBE)
    r = client.get(f"/v1/namespaces/kb/sessions?{query}")
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_request"


def test_rename(client: TestClient) -> None:
    upload(client, "kb", "pods.md", KUBE)
    chat(client, "kb", "What is a Pod?", "s1")
    r = client.patch("/v1/namespaces/kb/sessions/s1", json={"title": "  Pods\n and  limits "})
    assert r.status_code == 200, r.text
    assert r.json()["title"] == "Pods and limits"
    assert (r.json()["session_id"], r.json()["turns"]) == ("s1", 2)
    chat(client, "kb", "And containers?", "s1")
    assert [s["title"] for s in sessions(client)] == ["Pods and limits"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"title": ""}, 422),
        ({"title": " \n\t "}, 422),
        ({"title": "x" * (SessionInfo.TITLE_MAX + 1)}, 422),
        ({"title": 5}, 422),
        ({"title": "ok", "extra": 1}, 422),
        ({}, 422),
    ],
)
def test_bad_titles_are_422(client: TestClient, body: dict[str, Any], status: int) -> None:
    upload(client, "kb", "pods.md", KUBE)
    chat(client, "kb", "What is a Pod?", "s1")
    r = client.patch("/v1/namespaces/kb/sessions/s1", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == "invalid_request"
    assert [s["title"] for s in sessions(client)] == ["What is a Pod?"]


def test_rename_needs_json_and_a_session(client: TestClient) -> None:
    upload(client, "kb", "pods.md", KUBE)
    r = client.patch("/v1/namespaces/kb/sessions/s1", content=b"title=x")
    assert r.status_code == 415
    r = client.patch("/v1/namespaces/kb/sessions/nobody", json={"title": "x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "session_not_found"
    r = client.patch("/v1/namespaces/missing/sessions/s1", json={"title": "x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "namespace_not_found"
    r = client.get("/v1/namespaces/missing/sessions")
    assert r.status_code == 404 and r.json()["error"]["code"] == "namespace_not_found"


def test_deleted_sessions_and_namespaces_leave_the_list(client: TestClient) -> None:
    upload(client, "kb", "pods.md", KUBE)
    chat(client, "kb", "What is a Pod?", "s1")
    chat(client, "kb", "What is a limit?", "s2")
    assert client.delete("/v1/namespaces/kb/sessions/s1").status_code == 204
    assert [s["session_id"] for s in sessions(client)] == ["s2"]
    assert client.delete("/v1/namespaces/kb").status_code == 204
    upload(client, "kb", "pods.md", KUBE)
    assert sessions(client) == []


@pytest.fixture
def two_tenants(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], dict[str, str]]]:
    with TestClient(create_app(auth_settings(tmp_path), configure_logs=False)) as client:
        put_tenant(client, "a")
        put_tenant(client, "b")
        _, a = new_key(client, "a", ["read", "write"])
        _, b = new_key(client, "b", ["read", "write"])
        assert upload_as(client, a, "docs", "pods.md", KUBE).status_code == 201
        assert upload_as(client, b, "docs", "bread.md", COOKING).status_code == 201
        assert upload_as(client, b, "b-only", "bread.md", COOKING).status_code == 201
        yield client, a, b


def test_another_tenants_sessions_are_never_listed_or_renamed(
    two_tenants: tuple[TestClient, dict[str, str], dict[str, str]],
) -> None:
    client, a, b = two_tenants
    chat(client, "docs", "How is bread baked?", "b-session", headers=b)
    assert sessions(client, "docs", headers=a) == []
    r = client.patch("/v1/namespaces/docs/sessions/b-session", json={"title": "x"}, headers=a)
    assert r.status_code == 404 and r.json()["error"]["code"] == "session_not_found"
    assert [s["title"] for s in sessions(client, "docs", headers=b)] == ["How is bread baked?"]
    for method, path, body in (
        ("GET", "/v1/namespaces/b-only/sessions", None),
        ("PATCH", "/v1/namespaces/b-only/sessions/s", {"title": "x"}),
        ("GET", "/v1/namespaces/b-only/documents/bread.md/chunks", None),
    ):
        r = client.request(method, path, headers=a, json=body)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"] == {
            "code": "namespace_not_found",
            "message": "namespace 'b-only' does not exist",
        }
    r = client.get("/v1/namespaces/docs/documents/bread.md/chunks", headers=a)
    assert r.status_code == 404 and r.json()["error"]["code"] == "document_not_found"


def test_the_new_routes_need_a_credential_and_the_read_scope(
    two_tenants: tuple[TestClient, dict[str, str], dict[str, str]],
) -> None:
    client, a, _ = two_tenants
    _, no_read = new_key(client, "a", ["write"])
    routes = [
        ("GET", "/v1/namespaces/docs/sessions", None),
        ("PATCH", "/v1/namespaces/docs/sessions/s", {"title": "x"}),
        ("GET", "/v1/namespaces/docs/documents/pods.md/chunks", None),
    ]
    for method, path, body in routes:
        r = client.request(method, path, json=body)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        r = client.request(method, path, json=body, headers=no_read)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", path
    r = client.get("/v1/namespaces/docs/documents/pods.md/chunks", headers=a)
    assert r.status_code == 200 and r.json()["chunks"]


# --- a document's chunks ----------------------------------------------------------------


LONG = b"# Guide\n\n" + b"\n\n".join(
    b"## Part %d\n\n" % i + b"Paragraph %d explains one more thing about pods. " % i * 40
    for i in range(6)
)


def test_a_documents_chunks_in_order_a_page_at_a_time(client: TestClient) -> None:
    r = upload(client, "kb", "guide.md", LONG)
    total = r.json()["documents"][0]["chunks"]  # type: ignore[attr-defined]
    assert total >= 4
    r = client.get("/v1/namespaces/kb/documents/guide.md/chunks")
    assert r.status_code == 200, r.text
    whole = r.json()
    assert whole["document_id"] == "guide.md" and whole["next"] is None
    assert [c["ordinal"] for c in whole["chunks"]] == list(range(total))
    first = whole["chunks"][0]
    assert set(first) == {"ordinal", "chunk_id", "title", "headings", "text"}
    assert first["title"] == "Guide" and "Paragraph 0" in first["text"]
    assert any(c["headings"] for c in whole["chunks"])
    paged: list[dict[str, Any]] = []
    after: int | None = None
    while True:
        params = {"limit": 3} | ({"after": after} if after is not None else {})
        page = client.get("/v1/namespaces/kb/documents/guide.md/chunks", params=params).json()
        paged += page["chunks"]
        after = page["next"]
        if after is None:
            break
    assert paged == whole["chunks"]


def test_chunks_of_a_document_id_with_slashes(client: TestClient) -> None:
    r = upload(client, "kb", "x.md", KUBE, document_id="guides/pods.md")
    assert r.status_code == 201, r.text  # type: ignore[attr-defined]
    r = client.get("/v1/namespaces/kb/documents/guides/pods.md/chunks")
    assert r.status_code == 200, r.text
    assert r.json()["document_id"] == "guides/pods.md" and r.json()["chunks"]
    assert client.get("/v1/namespaces/kb/documents/guides/pods.md").status_code == 200


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=1001", "after=-1", "after=x", "after=2147483648"]
)
def test_bad_chunk_paging_is_422(client: TestClient, query: str) -> None:
    upload(client, "kb", "pods.md", KUBE)
    r = client.get(f"/v1/namespaces/kb/documents/pods.md/chunks?{query}")
    assert r.status_code == 422, r.text


def test_chunks_of_a_missing_document_are_404(client: TestClient) -> None:
    upload(client, "kb", "pods.md", KUBE)
    r = client.get("/v1/namespaces/kb/documents/nope.md/chunks")
    assert r.status_code == 404 and r.json()["error"]["code"] == "document_not_found"


def test_chunks_follow_the_callers_access_policy(tmp_path: Path) -> None:
    issuer = JWTIssuer(tmp_path)
    settings = auth_settings(tmp_path, auth={"jwt": issuer.settings()})
    with TestClient(create_app(settings, configure_logs=False)) as client:
        put_tenant(client, "g", policies=[{"use": "groups"}])
        _, writer = new_key(client, "g", ["read", "write"])
        doc = b"# Runbook\n\nThe runbook for %s explains the handbook steps.\n"
        for name in ("staff", "ops"):
            made = upload_as(client, writer, "docs", f"{name}.md", doc % name.encode(), groups=name)
            assert made.status_code == 201, made.text
        staff = issuer.headers("g", scope="read", groups=["staff"])
        r = client.get("/v1/namespaces/docs/documents/staff.md/chunks", headers=staff)
        assert r.status_code == 200 and "staff" in r.json()["chunks"][0]["text"]
        r = client.get("/v1/namespaces/docs/documents/ops.md/chunks", headers=staff)
        assert r.status_code == 404 and r.json()["error"]["code"] == "document_not_found"
        r = client.get("/v1/namespaces/docs/documents/ops.md/chunks", headers=writer)
        assert r.status_code == 200 and "ops" in r.json()["chunks"][0]["text"]


def test_a_document_whose_id_ends_in_chunks(client: TestClient) -> None:
    """Ids may contain '/': ``…/documents/notes/chunks`` lists the chunks of ``notes``, and
    deletes the document ``notes/chunks`` (the path's Allow and its OpenAPI entry agree)."""
    upload(client, "kb", "x.md", KUBE, document_id="notes/chunks")
    upload(client, "kb", "y.md", COOKING, document_id="notes")
    r = client.get("/v1/namespaces/kb/documents/notes/chunks")
    assert r.status_code == 200 and "Bread" in r.json()["chunks"][0]["text"]
    r = client.get("/v1/namespaces/kb/documents/notes/chunks/chunks")
    assert r.status_code == 200 and "Pod" in r.json()["chunks"][0]["text"]
    assert client.delete("/v1/namespaces/kb/documents/notes/chunks").status_code == 204
    listed = client.get("/v1/namespaces/kb/documents").json()["documents"]
    assert [d["id"] for d in listed] == ["notes"]
    r = client.options("/v1/namespaces/kb/documents/notes/chunks")
    assert r.status_code == 405 and r.headers["allow"] == "DELETE, GET"
