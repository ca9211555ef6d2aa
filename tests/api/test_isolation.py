"""Tenant isolation: the attacks of the multi-tenancy issue, each failing for the attacker.

Tenants ``a`` and ``b`` both have a namespace named ``docs``; the tenant comes from the
credential only, so each sees its own ``docs`` and nothing of the other's.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from ragtide.api.app import create_app
from tests.api.conftest import (
    ADMIN,
    COOKING,
    KUBE,
    JWTIssuer,
    auth_settings,
    bearer,
    new_key,
    put_tenant,
    upload_as,
)


@dataclass
class World:
    client: TestClient
    a: dict[str, str]  # read + write key of tenant a
    b: dict[str, str]  # read + write key of tenant b
    b_session: str  # a chat session of b in its docs


def _make_world(client: TestClient) -> World:
    put_tenant(client, "a")
    put_tenant(client, "b")
    _, a = new_key(client, "a", ["read", "write"])
    _, b = new_key(client, "b", ["read", "write"])
    assert upload_as(client, a, "docs", "pods.md", KUBE).status_code == 201
    assert upload_as(client, b, "docs", "bread.md", COOKING).status_code == 201
    assert upload_as(client, b, "b-only", "bread.md", COOKING).status_code == 201
    r = client.post("/v1/namespaces/docs/chat", json={"message": "How is bread baked?"}, headers=b)
    assert r.status_code == 200 and r.json()["citations"]
    return World(client, a, b, r.json()["session_id"])


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with TestClient(create_app(auth_settings(tmp_path), configure_logs=False)) as client:
        yield _make_world(client)


def _ids(r: httpx.Response) -> list[str]:
    assert r.status_code == 200, r.text
    return [d["id"] for d in r.json()["documents"]]


def _not_found(r: httpx.Response, namespace: str) -> None:
    assert r.status_code == 404, r.text
    error = r.json()["error"]  # the OpenAI routes add "type" and "param" to the same body
    assert (error["code"], error["message"]) == (
        "namespace_not_found",
        f"namespace {namespace!r} does not exist",
    )


ROUTES: list[tuple[str, str, dict[str, object]]] = [
    ("GET", "/v1/namespaces", {}),
    ("GET", "/v1/namespaces/docs", {}),
    ("PUT", "/v1/namespaces/docs", {}),
    ("DELETE", "/v1/namespaces/docs", {}),
    ("GET", "/v1/namespaces/docs/documents", {}),
    ("GET", "/v1/namespaces/docs/documents/bread.md", {}),
    ("DELETE", "/v1/namespaces/docs/documents/bread.md", {}),
    ("POST", "/v1/namespaces/docs/search", {"json": {"query": "bread"}}),
    ("POST", "/v1/namespaces/docs/chat", {"json": {"message": "How is bread baked?"}}),
    ("GET", "/v1/namespaces/docs/sessions/s1", {}),
    ("DELETE", "/v1/namespaces/docs/sessions/s1", {}),
    (
        "POST",
        "/v1/chat/completions",
        {"json": {"model": "docs", "messages": [{"role": "user", "content": "bread?"}]}},
    ),
    ("GET", "/v1/tenants", {}),
    ("GET", "/v1/tenants/b/keys", {}),
]


def test_no_credential_is_401_everywhere(world: World) -> None:
    client = world.client
    for method, path, kwargs in ROUTES:
        r = client.request(method, path, **kwargs)  # type: ignore[arg-type]
        assert r.status_code == 401, (method, path, r.text)
        assert r.json()["error"]["code"] == "unauthenticated"
        assert r.headers["www-authenticate"].lower().startswith("bearer")
    r = client.post("/v1/namespaces/docs/documents", files={"file": ("x.md", b"# X\n\nevil\n")})
    assert r.status_code == 401
    # nothing changed for b
    assert _ids(client.get("/v1/namespaces/docs/documents", headers=world.b)) == ["bread.md"]


def test_each_tenant_sees_only_its_own_docs(world: World) -> None:
    client, a, b = world.client, world.a, world.b
    assert _ids(client.get("/v1/namespaces/docs/documents", headers=a)) == ["pods.md"]
    assert _ids(client.get("/v1/namespaces/docs/documents", headers=b)) == ["bread.md"]
    assert client.get("/v1/namespaces/docs", headers=a).json()["documents"] == 1
    r = client.get("/v1/namespaces/docs/documents/bread.md", headers=a)
    assert r.status_code == 404 and r.json()["error"]["code"] == "document_not_found"
    assert client.get("/v1/namespaces/docs/documents/bread.md", headers=b).status_code == 200

    hits = client.post(
        "/v1/namespaces/docs/search", json={"query": "bread flour yeast"}, headers=a
    ).json()["results"]
    assert all(h["document_id"] == "pods.md" for h in hits)
    assert "yeast" not in str(hits).lower()
    hits = client.post(
        "/v1/namespaces/docs/search", json={"query": "bread flour yeast"}, headers=b
    ).json()["results"]
    assert hits and hits[0]["document_id"] == "bread.md"

    answer = client.post(
        "/v1/namespaces/docs/chat", json={"message": "How is bread baked?"}, headers=a
    ).json()
    assert all(c["document_id"] != "bread.md" for c in answer["citations"])
    assert "yeast" not in answer["answer"].lower()


def test_completions_answer_from_the_callers_namespace_only(world: World) -> None:
    client = world.client
    body = {"model": "docs", "messages": [{"role": "user", "content": "How is bread baked?"}]}
    r = client.post("/v1/chat/completions", json=body, headers=world.a)
    assert r.status_code == 200, r.text
    assert all(c["document_id"] != "bread.md" for c in r.json()["citations"])
    assert "yeast" not in r.json()["choices"][0]["message"]["content"].lower()
    r = client.post("/v1/chat/completions", json=body, headers=world.b)
    assert [c["document_id"] for c in r.json()["citations"]][:1] == ["bread.md"]
    # b's other namespace does not exist for a
    r = client.post("/v1/chat/completions", json={**body, "model": "b-only"}, headers=world.a)
    _not_found(r, "b-only")
    # nor does a tenant-qualified name reach into b
    r = client.post("/v1/chat/completions", json={**body, "model": "b/docs"}, headers=world.a)
    assert r.status_code in (404, 422) and "yeast" not in r.text.lower()


def test_delete_cannot_reach_another_tenant(world: World) -> None:
    client, a, b = world.client, world.a, world.b
    r = client.delete("/v1/namespaces/docs/documents/bread.md", headers=a)
    assert r.status_code == 404
    _not_found(client.delete("/v1/namespaces/b-only", headers=a), "b-only")
    assert _ids(client.get("/v1/namespaces/docs/documents", headers=b)) == ["bread.md"]
    assert _ids(client.get("/v1/namespaces/b-only/documents", headers=b)) == ["bread.md"]
    # a deleting its own docs leaves b's docs alone
    assert client.delete("/v1/namespaces/docs", headers=a).status_code == 204
    _not_found(client.get("/v1/namespaces/docs", headers=a), "docs")
    assert _ids(client.get("/v1/namespaces/docs/documents", headers=b)) == ["bread.md"]
    history = client.get(f"/v1/namespaces/docs/sessions/{world.b_session}", headers=b)
    assert history.status_code == 200


def test_sessions_of_another_tenant_cannot_be_read_or_appended_to(world: World) -> None:
    client, a, b, sid = world.client, world.a, world.b, world.b_session
    before = client.get(f"/v1/namespaces/docs/sessions/{sid}", headers=b).json()["turns"]
    assert len(before) == 2
    r = client.get(f"/v1/namespaces/docs/sessions/{sid}", headers=a)
    assert r.status_code == 404 and r.json()["error"]["code"] == "session_not_found"
    r = client.delete(f"/v1/namespaces/docs/sessions/{sid}", headers=a)
    assert r.status_code == 404
    # a chat naming b's session id is a's own (new) session of that id, not b's
    r = client.post(
        "/v1/namespaces/docs/chat",
        json={"message": "What is a Pod?", "session_id": sid},
        headers=a,
    )
    assert r.status_code == 200
    after = client.get(f"/v1/namespaces/docs/sessions/{sid}", headers=b).json()["turns"]
    assert after == before
    mine = client.get(f"/v1/namespaces/docs/sessions/{sid}", headers=a).json()["turns"]
    assert [t["content"] for t in mine][:1] == ["What is a Pod?"]
    assert "bread" not in str(mine).lower()


def test_listing_shows_only_own_namespaces(world: World) -> None:
    client = world.client
    listed = client.get("/v1/namespaces", headers=world.a).json()
    assert [n["namespace"] for n in listed["namespaces"]] == ["docs"]
    assert listed["namespaces"][0]["documents"] == 1 and listed["next"] is None
    listed = client.get("/v1/namespaces", headers=world.b).json()
    assert [n["namespace"] for n in listed["namespaces"]] == ["b-only", "docs"]
    for path in ("/v1/namespaces/b-only", "/v1/namespaces/b-only/documents"):
        _not_found(client.get(path, headers=world.a), "b-only")
    r = client.post("/v1/namespaces/b-only/search", json={"query": "bread"}, headers=world.a)
    _not_found(r, "b-only")
    # what a gets for b's namespace is exactly what it gets for one that nobody has
    r1 = client.get("/v1/namespaces/b-only", headers=world.a)
    assert client.delete("/v1/namespaces/b-only", headers=world.b).status_code == 204
    r2 = client.get("/v1/namespaces/b-only", headers=world.a)
    headers = [{k: v for k, v in r.headers.items() if k != "x-request-id"} for r in (r1, r2)]
    assert (r1.status_code, r1.json(), headers[0]) == (r2.status_code, r2.json(), headers[1])


def test_listing_is_paginated(world: World) -> None:
    client, a = world.client, world.a
    for name in ("n1", "n2", "n3", "n4"):
        assert client.put(f"/v1/namespaces/{name}", headers=a).status_code == 201
    seen: list[str] = []
    after: str | None = None
    for _ in range(10):
        params: dict[str, object] = {"limit": 2, **({"after": after} if after else {})}
        page = client.get("/v1/namespaces", params=params, headers=a).json()  # type: ignore[arg-type]
        seen += [n["namespace"] for n in page["namespaces"]]
        after = page["next"]
        if after is None:
            break
    assert seen == ["docs", "n1", "n2", "n3", "n4"]
    assert client.get("/v1/namespaces", params={"limit": 0}, headers=a).status_code == 422


def test_key_limited_to_a_namespace(world: World) -> None:
    client = world.client
    assert client.put("/v1/namespaces/x", headers=world.a).status_code == 201
    assert upload_as(client, world.a, "y", "pods.md", KUBE).status_code == 201
    _, limited = new_key(client, "a", ["read", "write"], namespaces=["x"])
    assert client.get("/v1/namespaces/x", headers=limited).status_code == 200
    assert upload_as(client, limited, "x", "bread.md", COOKING).status_code == 201
    listed = client.get("/v1/namespaces", headers=limited).json()["namespaces"]
    assert [n["namespace"] for n in listed] == ["x"]

    # y exists in a, but for this key it is exactly as if it did not
    nobody = client.get("/v1/namespaces/y", headers=world.b)  # b has no y
    _not_found(nobody, "y")
    for method, path, kwargs in [
        ("GET", "/v1/namespaces/y", {}),
        ("GET", "/v1/namespaces/y/documents", {}),
        ("GET", "/v1/namespaces/y/documents/pods.md", {}),
        ("DELETE", "/v1/namespaces/y/documents/pods.md", {}),
        ("DELETE", "/v1/namespaces/y", {}),
        ("PUT", "/v1/namespaces/y", {}),
        ("POST", "/v1/namespaces/y/search", {"json": {"query": "pod"}}),
        ("POST", "/v1/namespaces/y/chat", {"json": {"message": "What is a Pod?"}}),
        ("GET", "/v1/namespaces/y/sessions/s1", {}),
    ]:
        r = client.request(method, path, headers=limited, **kwargs)  # type: ignore[arg-type]
        assert (r.status_code, r.json()) == (nobody.status_code, nobody.json()), (method, path)
    _not_found(upload_as(client, limited, "y", "evil.md", b"# Evil\n\nevil text\n"), "y")
    body = {"model": "y", "messages": [{"role": "user", "content": "What is a Pod?"}]}
    _not_found(client.post("/v1/chat/completions", json=body, headers=limited), "y")
    assert _ids(client.get("/v1/namespaces/y/documents", headers=world.a)) == ["pods.md"]


def test_random_bearers_are_401_and_get_no_rate_bucket(tmp_path: Path) -> None:
    settings = auth_settings(
        tmp_path,
        rate_limit={"enabled": True},
        tenants={"quotas": {"search_per_second": 0.01, "burst_seconds": 200}},  # a bucket of 2
    )
    with TestClient(create_app(settings, configure_logs=False)) as client:
        put_tenant(client, "a")
        _, a = new_key(client, "a", ["read", "write"])
        upload_as(client, a, "docs", "pods.md", KUBE)
        search = {"query": "pod"}
        codes = [
            client.post("/v1/namespaces/docs/search", json=search, headers=a).status_code
            for _ in range(3)
        ]
        assert codes == [200, 200, 429]
        forged_codes = set()
        for i in range(100):
            token = (
                "rt_" + secrets.token_urlsafe(24)  # shaped like a key
                if i % 2
                else secrets.token_urlsafe(8) + "." + secrets.token_urlsafe(8) + ".x"
            )
            r = client.post("/v1/namespaces/docs/search", json=search, headers=bearer(token))
            forged_codes.add(r.status_code)
            assert r.json()["error"]["code"] == "unauthenticated"
        assert forged_codes == {401}
        r = client.post("/v1/namespaces/docs/search", json=search, headers=a)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1


def test_deleting_a_namespace_removes_documents_sessions_and_cached_answers(
    world: World,
) -> None:
    client, a = world.client, world.a
    question = {"message": "What is a Pod?"}
    first = client.post("/v1/namespaces/docs/chat", json=question, headers=a).json()
    assert first["citations"] and "kubernetes" in first["answer"].lower()
    sid = first["session_id"]
    assert client.get(f"/v1/namespaces/docs/sessions/{sid}", headers=a).status_code == 200

    assert client.delete("/v1/namespaces/docs", headers=a).status_code == 204
    assert client.get(f"/v1/namespaces/docs/sessions/{sid}", headers=a).status_code == 404
    _not_found(client.get("/v1/namespaces/docs/documents", headers=a), "docs")
    assert client.get("/v1/tenants/a/usage", headers=ADMIN).json()["documents"] == 0

    # the same name made again is empty: no cached answer from the old documents
    assert client.put("/v1/namespaces/docs", headers=a).status_code == 201
    assert client.get(f"/v1/namespaces/docs/sessions/{sid}", headers=a).status_code == 404
    empty = client.post("/v1/namespaces/docs/chat", json=question, headers=a).json()
    assert empty["citations"] == []
    assert "kubernetes" not in empty["answer"].lower()

    whales = b"# Pods\n\nA Pod is a group of whales that swim and hunt together in the ocean.\n"
    assert upload_as(client, a, "docs", "pods.md", whales).status_code == 201
    again = client.post("/v1/namespaces/docs/chat", json=question, headers=a).json()
    assert "whales" in again["answer"].lower()
    assert "kubernetes" not in again["answer"].lower()
    # b's docs and sessions are untouched
    assert _ids(client.get("/v1/namespaces/docs/documents", headers=world.b)) == ["bread.md"]
    r = client.get(f"/v1/namespaces/docs/sessions/{world.b_session}", headers=world.b)
    assert r.status_code == 200


# --- JWT principals -----------------------------------------------------------------------


@pytest.fixture
def issuer(tmp_path: Path) -> JWTIssuer:
    return JWTIssuer(tmp_path)


@pytest.fixture
def jwt_world(tmp_path: Path, issuer: JWTIssuer) -> Iterator[World]:
    settings = auth_settings(tmp_path, auth={"jwt": issuer.settings()})
    with TestClient(create_app(settings, configure_logs=False)) as client:
        yield _make_world(client)


def test_jwt_reader_of_a_searches_a_only(jwt_world: World, issuer: JWTIssuer) -> None:
    client = jwt_world.client
    reader = issuer.headers("a", groups=["staff", "eng"], scope="read")
    r = client.post("/v1/namespaces/docs/search", json={"query": "pod"}, headers=reader)
    assert r.status_code == 200, r.text
    assert r.json()["results"] and {h["document_id"] for h in r.json()["results"]} == {"pods.md"}
    r = client.post("/v1/namespaces/docs/search", json={"query": "bread yeast"}, headers=reader)
    assert all(h["document_id"] == "pods.md" for h in r.json()["results"])
    assert _ids(client.get("/v1/namespaces/docs/documents", headers=reader)) == ["pods.md"]
    _not_found(client.get("/v1/namespaces/b-only", headers=reader), "b-only")

    r = upload_as(client, reader, "docs", "evil.md", b"# Evil\n\nevil text\n")
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = client.delete("/v1/namespaces/docs", headers=reader)
    assert r.status_code == 403
    assert client.get("/v1/tenants/a/keys", headers=reader).status_code == 403

    writer = issuer.headers("a", scope="read write")
    assert upload_as(client, writer, "docs", "more.md", COOKING).status_code == 201
    default_scopes = issuer.headers("a")  # no scope claim: auth.jwt.default_scopes (read)
    assert upload_as(client, default_scopes, "docs", "x.md", COOKING).status_code == 403
    assert client.get("/v1/namespaces", headers=default_scopes).status_code == 200


def test_jwt_of_a_nonexistent_tenant_or_bad_token_is_401(
    jwt_world: World, issuer: JWTIssuer, tmp_path: Path
) -> None:
    client = jwt_world.client
    search = {"query": "pod"}
    (tmp_path / "impostor").mkdir()
    impostor = JWTIssuer(tmp_path / "impostor")
    for headers in (
        issuer.headers("ghost", scope="read"),
        issuer.headers("a", scope="read", aud="someone-else"),
        issuer.headers("a", scope="read", iss="https://evil.test"),
        issuer.headers("a", scope="read", exp=1_000_000),
        bearer(impostor.token("a", scope="read")),  # signed with a key not in the JWKS
    ):
        r = client.post("/v1/namespaces/docs/search", json=search, headers=headers)
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == "unauthenticated"
    # a token naming b reaches b's docs only
    b_reader = issuer.headers("b", scope="read")
    assert _ids(client.get("/v1/namespaces/docs/documents", headers=b_reader)) == ["bread.md"]
    # a deleted tenant's tokens stop working
    assert client.delete("/v1/tenants/b", headers=ADMIN).status_code == 204
    r = client.get("/v1/namespaces", headers=issuer.headers("b", sub="other", scope="read"))
    assert r.status_code == 401
