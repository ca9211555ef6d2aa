"""Tenants, API keys, usage, quotas and the audit log through the admin routes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from ragtide.api.app import create_app
from ragtide.auth.keys import hash_key
from ragtide.auth.keys import new_key as make_key_record
from ragtide.errors import ConfigError
from tests.api.conftest import (
    ADMIN,
    ADMIN_KEY,
    COOKING,
    KUBE,
    auth_settings,
    bearer,
    make_settings,
    new_key,
    put_tenant,
    upload_as,
)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(auth_settings(tmp_path), configure_logs=False)) as c:
        yield c


def _search(client: TestClient, headers: dict[str, str], ns: str = "docs") -> int:
    r = client.post(f"/v1/namespaces/{ns}/search", json={"query": "pod"}, headers=headers)
    return r.status_code


def _error(r: httpx.Response) -> str:
    code: str = r.json()["error"]["code"]
    return code


# --- tenants and keys ---------------------------------------------------------------------


def test_admin_creates_tenants_and_keys_that_work(client: TestClient) -> None:
    r = client.put("/v1/tenants/a", json={"name": "Tenant A"}, headers=ADMIN)
    assert r.status_code == 201
    assert r.json()["id"] == "a" and r.json()["config"]["name"] == "Tenant A"
    assert r.json()["webhook_secret"]
    assert client.put("/v1/tenants/a", json={"name": "A"}, headers=ADMIN).status_code == 200
    put_tenant(client, "b")
    assert client.get("/v1/tenants/a", headers=ADMIN).json()["config"]["name"] == "A"
    listed = client.get("/v1/tenants", headers=ADMIN).json()["tenants"]
    assert {"a", "b"} <= {t["id"] for t in listed}
    assert all("webhook_secret" not in t for t in listed)

    _, a_rw = new_key(client, "a", ["read", "write"])
    _, b_rw = new_key(client, "b", ["read", "write"])
    assert upload_as(client, a_rw, "docs", "pods.md", KUBE).status_code == 201
    assert upload_as(client, b_rw, "docs", "bread.md", COOKING).status_code == 201
    assert _search(client, a_rw) == 200 and _search(client, b_rw) == 200
    # a key of a tenant that does not exist cannot be made
    r = client.post("/v1/tenants/ghost/keys", json={"scopes": ["read"]}, headers=ADMIN)
    assert r.status_code == 404 and _error(r) == "tenant_not_found"


def test_key_is_shown_once_and_only_its_hash_is_stored(client: TestClient, tmp_path: Path) -> None:
    put_tenant(client, "a")
    r = client.post(
        "/v1/tenants/a/keys",
        json={"scopes": ["read"], "description": "ci"},
        headers=ADMIN,
    )
    assert r.status_code == 201
    created = r.json()
    key = created["key"]
    assert key.startswith("rt_") and created["prefix"] == key[:11]
    assert created["scopes"] == ["read"] and created["namespaces"] is None

    listed = client.get("/v1/tenants/a/keys", headers=ADMIN).json()["keys"]
    assert [k["id"] for k in listed] == [created["id"]]
    assert "key" not in listed[0] and "hash" not in listed[0]
    assert listed[0]["prefix"] == key[:11]
    assert key not in client.get("/v1/tenants/a/keys", headers=ADMIN).text
    assert key not in client.get("/v1/tenants/a", headers=ADMIN).text
    assert key not in client.get("/v1/tenants/a/usage", headers=ADMIN).text

    store = client.app.state.runtime.store
    record = client.portal.call(store.key_by_hash, hash_key(key))  # type: ignore[union-attr]
    assert record is not None and record.id == created["id"] and record.hash == hash_key(key)
    files = sorted(tmp_path.glob("ragtide.db*"))
    assert files, "the SQLite store keeps its database in the data dir"
    raw = b"".join(f.read_bytes() for f in files)
    assert key.encode() not in raw
    assert key[11:].encode() not in raw  # not even the secret part
    assert hash_key(key).encode() in raw


@pytest.mark.parametrize(
    "body",
    [
        {"scopes": ["superuser"]},
        {"scopes": []},
        {"scopes": ["read", "delete"]},
        {"scopes": "read"},
        {"scopes": ["read"], "namespaces": []},
        {"scopes": ["read"], "namespaces": ["Not A Namespace!"]},
        {"scopes": ["read"], "unknown": 1},
        {"scopes": ["read"], "expires_at": 1.0},
    ],
)
def test_bad_key_requests_are_422(client: TestClient, body: dict[str, object]) -> None:
    put_tenant(client, "a")
    r = client.post("/v1/tenants/a/keys", json=body, headers=ADMIN)
    assert r.status_code == 422, r.text
    assert client.get("/v1/tenants/a/keys", headers=ADMIN).json()["keys"] == []


def test_expires_at_in_the_past_is_422(client: TestClient) -> None:
    put_tenant(client, "a")
    r = client.post(
        "/v1/tenants/a/keys",
        json={"scopes": ["read"], "expires_at": time.time() - 60},
        headers=ADMIN,
    )
    assert r.status_code == 422
    assert "expires_at" in r.json()["error"]["message"]


def test_tenant_admin_manages_its_own_tenant_only(client: TestClient) -> None:
    put_tenant(client, "a")
    put_tenant(client, "b")
    b_id, _ = new_key(client, "b", ["read"])
    _, a_admin = new_key(client, "a", ["admin"])

    other_id, other = new_key(client, "a", ["read"], as_=a_admin)
    assert _search(client, other) == 404  # works (the namespace does not exist yet)
    ids = {k["id"] for k in client.get("/v1/tenants/a/keys", headers=a_admin).json()["keys"]}
    assert other_id in ids
    assert client.get("/v1/tenants/a", headers=a_admin).status_code == 200
    assert client.get("/v1/tenants/a/usage", headers=a_admin).status_code == 200
    assert client.delete(f"/v1/tenants/a/keys/{other_id}", headers=a_admin).status_code == 204
    assert _search(client, other) == 401

    # another tenant is "not found", exactly as one that does not exist
    for method, path in [
        ("GET", "/v1/tenants/b"),
        ("GET", "/v1/tenants/b/keys"),
        ("GET", "/v1/tenants/b/usage"),
        ("DELETE", f"/v1/tenants/b/keys/{b_id}"),
    ]:
        r = client.request(method, path, headers=a_admin)
        assert r.status_code == 404, (method, path, r.text)
        ghost = client.request(method, path.replace("/b", "/ghost", 1), headers=a_admin)
        assert ghost.status_code == 404
        assert r.json()["error"]["code"] == ghost.json()["error"]["code"] == "tenant_not_found"
    r = client.post("/v1/tenants/b/keys", json={"scopes": ["read"]}, headers=a_admin)
    assert r.status_code == 404
    assert [
        k["revoked_at"] for k in client.get("/v1/tenants/b/keys", headers=ADMIN).json()["keys"]
    ] == [None]

    # the platform's routes are the bootstrap admin's
    for method, path in [("GET", "/v1/tenants"), ("DELETE", "/v1/tenants/b")]:
        r = client.request(method, path, headers=a_admin)
        assert r.status_code == 403 and _error(r) == "forbidden", (method, path)
    r = client.put("/v1/tenants/c", json={}, headers=a_admin)
    assert r.status_code == 403 and _error(r) == "forbidden"
    r = client.put("/v1/tenants/a", json={"quotas": {"documents": 0}}, headers=a_admin)
    assert r.status_code == 403
    assert client.get("/v1/tenants/c", headers=ADMIN).status_code == 404


def test_scopes_are_enforced(client: TestClient) -> None:
    put_tenant(client, "a")
    _, reader = new_key(client, "a", ["read"])
    _, writer = new_key(client, "a", ["write"])
    r = upload_as(client, reader, "docs", "pods.md", KUBE)
    assert r.status_code == 403 and _error(r) == "forbidden"
    assert upload_as(client, writer, "docs", "pods.md", KUBE).status_code == 201
    assert _search(client, writer) == 403
    assert _search(client, reader) == 200
    assert client.delete("/v1/namespaces/docs", headers=reader).status_code == 403
    for headers in (reader, writer):
        r = client.get("/v1/tenants/a/keys", headers=headers)
        assert r.status_code == 403 and _error(r) == "forbidden"
        r = client.post("/v1/tenants/a/keys", json={"scopes": ["admin"]}, headers=headers)
        assert r.status_code == 403


def test_revoked_key_is_refused_at_once(client: TestClient) -> None:
    put_tenant(client, "a")
    key_id, headers = new_key(client, "a", ["read", "write"])
    upload_as(client, headers, "docs", "pods.md", KUBE)
    assert _search(client, headers) == 200  # the key check is now cached on this replica
    assert client.delete(f"/v1/tenants/a/keys/{key_id}", headers=ADMIN).status_code == 204
    r = client.post("/v1/namespaces/docs/search", json={"query": "pod"}, headers=headers)
    assert r.status_code == 401 and _error(r) == "unauthenticated"
    assert r.headers["www-authenticate"].lower().startswith("bearer")
    (listed,) = client.get("/v1/tenants/a/keys", headers=ADMIN).json()["keys"]
    assert listed["revoked_at"] is not None
    r = client.delete(f"/v1/tenants/a/keys/{key_id}", headers=ADMIN)
    assert r.status_code == 404 and _error(r) == "key_not_found"
    assert client.delete("/v1/tenants/a/keys/key_nope", headers=ADMIN).status_code == 404


def test_expired_key_is_refused(client: TestClient) -> None:
    put_tenant(client, "a")
    _, writer = new_key(client, "a", ["write"])
    upload_as(client, writer, "docs", "pods.md", KUBE)
    past = time.time() - 3600
    key, record = make_key_record("a", ["read"], expires_at=past + 60, now=past)
    store = client.app.state.runtime.store
    client.portal.call(store.add_key, record)  # type: ignore[union-attr]
    r = client.post("/v1/namespaces/docs/search", json={"query": "pod"}, headers=bearer(key))
    assert r.status_code == 401 and _error(r) == "unauthenticated"
    # a live key made the same way works: it is the expiry that refuses
    key, record = make_key_record("a", ["read"], expires_at=time.time() + 3600)
    client.portal.call(store.add_key, record)  # type: ignore[union-attr]
    assert _search(client, bearer(key)) == 200


def test_unknown_and_malformed_credentials_are_401(client: TestClient) -> None:
    put_tenant(client, "a")
    for headers in (
        {},
        bearer("rt_" + "A" * 32),
        bearer(ADMIN_KEY + "x"),
        {"Authorization": f"Basic {ADMIN_KEY}"},
        {"Authorization": "Bearer"},
    ):
        r = client.get("/v1/tenants", headers=headers)
        assert r.status_code == 401 and _error(r) == "unauthenticated", headers
        assert "www-authenticate" in r.headers


def test_deleting_a_tenant_removes_its_keys_and_namespaces(client: TestClient) -> None:
    put_tenant(client, "a")
    put_tenant(client, "b")
    _, a_rw = new_key(client, "a", ["read", "write"])
    _, b_rw = new_key(client, "b", ["read", "write"])
    for headers in (a_rw, b_rw):
        upload_as(client, headers, "docs", "pods.md", KUBE)
        upload_as(client, headers, "more", "bread.md", COOKING)
    assert client.delete("/v1/tenants/b", headers=ADMIN).status_code == 204
    r = client.get("/v1/namespaces", headers=b_rw)
    assert r.status_code == 401 and _error(r) == "unauthenticated"
    assert client.get("/v1/tenants/b", headers=ADMIN).status_code == 404
    assert client.delete("/v1/tenants/b", headers=ADMIN).status_code == 404
    store = client.app.state.runtime.store
    assert client.portal.call(store.list_namespaces, "b/") == []  # type: ignore[union-attr]
    assert client.portal.call(store.list_keys, "b") == []  # type: ignore[union-attr]
    # a tenant made again under the same id starts empty
    put_tenant(client, "b")
    _, again = new_key(client, "b", ["read"])
    assert client.get("/v1/namespaces", headers=again).json()["namespaces"] == []
    assert _search(client, again) == 404
    # a's data is untouched
    names = [
        n["namespace"] for n in client.get("/v1/namespaces", headers=a_rw).json()["namespaces"]
    ]
    assert names == ["docs", "more"]
    assert _search(client, a_rw) == 200
    r = client.delete("/v1/tenants/default", headers=ADMIN)
    assert r.status_code == 422


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"quotas": {"documents": -1}}, "quotas.documents"),
        ({"quotas": {"searches": 5}}, "quotas.searches"),
        ({"retrieval": {"top_k": 0}}, "retrieval.top_k"),
        ({"nmae": "typo"}, "nmae"),
        ({"retriever": {"config": {}}}, "retriever.use"),
        ({"policies": "groups"}, "policies"),
        ({"disabled": "sometimes"}, "disabled"),
    ],
)
def test_malformed_tenant_record_is_422_naming_the_field(
    client: TestClient, body: dict[str, object], field: str
) -> None:
    r = client.put("/v1/tenants/a", json=body, headers=ADMIN)
    assert r.status_code == 422, r.text
    assert field in r.json()["error"]["message"]
    assert client.get("/v1/tenants/a", headers=ADMIN).status_code == 404


def test_tenant_id_must_match_and_be_valid(client: TestClient) -> None:
    r = client.put("/v1/tenants/a", json={"id": "b"}, headers=ADMIN)
    assert r.status_code == 422 and "id" in r.json()["error"]["message"]
    assert client.put("/v1/tenants/Not_Valid!", json={}, headers=ADMIN).status_code == 422
    r = client.put(
        "/v1/tenants/a", content=b"{not json", headers={**ADMIN, "content-type": "application/json"}
    )
    assert r.status_code == 422


def test_secrets_in_plain_text_are_refused_and_references_accepted(client: TestClient) -> None:
    plain = {"chat_model": {"use": "openai", "config": {"model": "m", "api_key": "sk-live-123"}}}
    r = client.put("/v1/tenants/a", json=plain, headers=ADMIN)
    assert r.status_code == 422
    message = r.json()["error"]["message"]
    assert "api_key" in message and "sk-live-123" not in message
    nested = {"policies": [{"use": "groups", "config": {"auth": {"client_secret": "hunter2"}}}]}
    assert client.put("/v1/tenants/a", json=nested, headers=ADMIN).status_code == 422
    assert client.get("/v1/tenants/a", headers=ADMIN).status_code == 404

    ref = {"chat_model": {"use": "openai", "config": {"model": "m", "api_key": "${env:ACME_KEY}"}}}
    r = client.put("/v1/tenants/a", json=ref, headers=ADMIN)
    assert r.status_code == 201, r.text
    stored = client.get("/v1/tenants/a", headers=ADMIN).json()["config"]
    assert stored["chat_model"]["config"]["api_key"] == "${env:ACME_KEY}"
    file_ref = {"chat_model": {"use": "openai", "config": {"api_key": "${file:/run/key}"}}}
    assert client.put("/v1/tenants/a", json=file_ref, headers=ADMIN).status_code == 200


def test_usage_reflects_uploads(client: TestClient) -> None:
    put_tenant(client, "a")
    put_tenant(client, "b")
    _, a_rw = new_key(client, "a", ["read", "write"])
    new_key(client, "a", ["read"])
    empty = client.get("/v1/tenants/a/usage", headers=ADMIN).json()
    assert (empty["namespaces"], empty["documents"], empty["chunks"]) == (0, 0, 0)
    assert empty["stored_bytes"] == 0 and empty["keys"] == 2
    upload_as(client, a_rw, "docs", "pods.md", KUBE)
    upload_as(client, a_rw, "docs", "bread.md", COOKING)
    upload_as(client, a_rw, "other", "bread.md", COOKING)
    usage = client.get("/v1/tenants/a/usage", headers=ADMIN).json()
    assert usage["tenant"] == "a"
    assert (usage["namespaces"], usage["documents"]) == (2, 3)
    assert usage["chunks"] >= 3 and usage["stored_bytes"] > 0
    assert usage["quotas"]["namespaces"] == 100
    assert set(usage["today"]) == {"chat_turns", "llm_tokens"}
    b = client.get("/v1/tenants/b/usage", headers=ADMIN).json()
    assert (b["namespaces"], b["documents"], b["keys"]) == (0, 0, 0)
    assert client.delete("/v1/namespaces/other", headers=a_rw).status_code == 204
    after = client.get("/v1/tenants/a/usage", headers=ADMIN).json()
    assert (after["namespaces"], after["documents"]) == (1, 2)
    assert after["stored_bytes"] < usage["stored_bytes"]


# --- quotas -------------------------------------------------------------------------------


def test_namespaces_quota(client: TestClient) -> None:
    put_tenant(client, "a", quotas={"namespaces": 1})
    _, writer = new_key(client, "a", ["write"])
    assert client.put("/v1/namespaces/one", headers=writer).status_code == 201
    assert client.put("/v1/namespaces/one", headers=writer).status_code == 200  # exists: fine
    r = client.put("/v1/namespaces/two", headers=writer)
    assert r.status_code == 429 and _error(r) == "quota_exceeded"
    assert int(r.headers["retry-after"]) >= 1
    r = upload_as(client, writer, "three", "pods.md", KUBE)  # an upload that would make one
    assert r.status_code == 429 and _error(r) == "quota_exceeded"
    assert client.get("/v1/tenants/a/usage", headers=ADMIN).json()["namespaces"] == 1
    assert upload_as(client, writer, "one", "pods.md", KUBE).status_code == 201
    # another tenant has its own count
    put_tenant(client, "b")
    _, b_writer = new_key(client, "b", ["write"])
    assert client.put("/v1/namespaces/two", headers=b_writer).status_code == 201


def test_documents_quota_on_upload(client: TestClient) -> None:
    put_tenant(client, "a", quotas={"documents": 1})
    _, writer = new_key(client, "a", ["read", "write"])
    assert upload_as(client, writer, "docs", "pods.md", KUBE).status_code == 201
    r = upload_as(client, writer, "docs", "bread.md", COOKING)
    assert r.status_code == 429 and _error(r) == "quota_exceeded"
    assert int(r.headers["retry-after"]) >= 1
    r = upload_as(client, writer, "elsewhere", "bread.md", COOKING)
    assert r.status_code == 429
    docs = client.get("/v1/namespaces/docs/documents", headers=writer).json()["documents"]
    assert [d["id"] for d in docs] == ["pods.md"]
    # raising the quota lets the upload in
    put_tenant(client, "a", quotas={"documents": 2})
    assert upload_as(client, writer, "docs", "bread.md", COOKING).status_code == 201


def test_documents_quota_counts_every_document_of_a_jsonl_file(client: TestClient) -> None:
    put_tenant(client, "a", quotas={"documents": 2})
    _, writer = new_key(client, "a", ["read", "write"])
    lines = [
        json.dumps({"_id": f"d{i}", "title": f"Doc {i}", "text": f"Document number {i}."})
        for i in range(5)
    ]
    r = upload_as(client, writer, "docs", "many.jsonl", "\n".join(lines).encode())
    # Documents past the quota are refused one by one; the ones within it land.
    assert r.status_code == 201, r.text
    outcomes = r.json()["documents"]
    assert [o["status"] for o in outcomes].count("created") == 2
    refused = [o for o in outcomes if o["status"] == "rejected"]
    assert len(refused) == 3
    assert all(o["error"]["code"] == "quota_exceeded" for o in refused)
    assert client.get("/v1/tenants/a/usage", headers=ADMIN).json()["documents"] == 2


def test_documents_quota_lets_an_existing_document_be_updated(client: TestClient) -> None:
    put_tenant(client, "a", quotas={"documents": 1})
    _, writer = new_key(client, "a", ["read", "write"])
    assert upload_as(client, writer, "docs", "pods.md", KUBE).status_code == 201
    r = upload_as(client, writer, "docs", "pods.md", KUBE + b"\nMore about Pods.\n")
    assert r.status_code == 201, r.text
    assert client.get("/v1/tenants/a/usage", headers=ADMIN).json()["documents"] == 1


# --- start-up and audit -------------------------------------------------------------------


def test_open_api_on_a_public_host_is_refused_at_start(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, http={"host": "0.0.0.0"})
    with pytest.raises(ConfigError, match="without authentication"):
        with TestClient(create_app(settings, configure_logs=False)):
            pass
    for settings in (
        make_settings(tmp_path, http={"host": "0.0.0.0"}, auth={"allow_open": True}),
        auth_settings(tmp_path, http={"host": "0.0.0.0"}),
        make_settings(tmp_path, http={"host": "::1"}),
    ):
        with TestClient(create_app(settings, configure_logs=False)) as c:
            assert c.get("/healthz").status_code == 200


def test_short_admin_key_is_refused_at_start(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, auth={"enabled": True, "admin_key": "too-short"})
    with pytest.raises(ConfigError, match="at least 24"):
        with TestClient(create_app(settings, configure_logs=False)):
            pass


def test_auth_off_is_the_default_tenant_with_every_scope(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path), configure_logs=False)) as c:
        assert c.put("/v1/namespaces/docs").status_code == 201
        r = c.post("/v1/namespaces/docs/documents", files={"file": ("pods.md", KUBE)})
        assert r.status_code == 201
        assert c.post("/v1/namespaces/docs/search", json={"query": "pod"}).status_code == 200
        usage = c.get("/v1/tenants/default/usage").json()
        assert (usage["namespaces"], usage["documents"]) == (1, 1)
        # a credential that is presented is still checked
        r = c.get("/v1/namespaces", headers=bearer("rt_" + "B" * 32))
        assert r.status_code == 401


def test_audit_log_records_actions_with_the_actor_and_never_the_key(tmp_path: Path) -> None:
    log = tmp_path / "audit" / "audit.jsonl"
    settings = auth_settings(tmp_path, tenants={"audit_log": log})
    with TestClient(create_app(settings, configure_logs=False)) as client:
        put_tenant(client, "a")
        admin_id, admin_headers = new_key(client, "a", ["admin"])
        writer_id, writer = new_key(client, "a", ["write"], as_=admin_headers)
        upload_as(client, writer, "docs", "pods.md", KUBE)
        assert (
            client.delete(f"/v1/tenants/a/keys/{writer_id}", headers=admin_headers).status_code
            == 204
        )
        keys = [admin_headers["Authorization"][7:], writer["Authorization"][7:], ADMIN_KEY]
    text = log.read_text(encoding="utf-8")
    for key in keys:
        assert key not in text
    entries = [json.loads(line) for line in text.splitlines()]
    by_action: dict[str, list[dict[str, object]]] = {}
    for e in entries:
        by_action.setdefault(str(e["action"]), []).append(e)
    assert {"tenant.put", "key.create", "documents.put", "key.revoke"} <= set(by_action)

    first, second = by_action["key.create"]
    assert first["actor_kind"] == "admin" and first["key_id"] == admin_id
    assert second["actor"] == f"key:{admin_id}" and second["key_id"] == writer_id
    assert second["target_tenant"] == "a" and second["tenant"] == "a"
    (put,) = by_action["documents.put"]
    assert put["actor"] == f"key:{writer_id}" and put["tenant"] == "a"
    assert put["namespace"] == "docs" and put["documents"] == ["pods.md"]
    (revoke,) = by_action["key.revoke"]
    assert revoke["actor"] == f"key:{admin_id}" and revoke["key_id"] == writer_id
    assert all(e.get("request_id") for e in by_action["documents.put"])


def test_disabled_tenant_credentials_are_401(client: TestClient) -> None:
    put_tenant(client, "a")
    _, reader = new_key(client, "a", ["read"])
    assert client.get("/v1/namespaces", headers=reader).status_code == 200
    put_tenant(client, "a", disabled=True)
    r = client.get("/v1/namespaces", headers=reader)
    assert r.status_code == 401 and _error(r) == "unauthenticated"
    put_tenant(client, "a", disabled=False)
    assert client.get("/v1/namespaces", headers=reader).status_code == 200
