"""Per-tenant plugins through the API: acme's retriever and clearance policy, the built-in
``groups`` policy, and a tenant whose plugin is broken failing alone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from ragtide.api.app import create_app
from tests.api.conftest import (
    ADMIN,
    KUBE,
    JWTIssuer,
    auth_settings,
    metric_value,
    new_key,
    put_tenant,
    upload_as,
)

HANDBOOK = "\n".join(
    json.dumps(line)
    for line in [
        {
            "_id": "pub",
            "title": "Lobby",
            "text": "The handbook lobby opens at nine.",
            "clearance": "public",
        },
        {
            "_id": "int",
            "title": "Payroll",
            "text": "The handbook payroll runs monthly.",
            "clearance": "internal",
        },
        {
            "_id": "sec",
            "title": "Vault",
            "text": "The handbook vault code rotates weekly.",
            "clearance": "secret",
        },
        {"_id": "none", "title": "Loose", "text": "A handbook page nobody labelled."},
    ]
).encode()

ACME = {
    "retriever": {"use": "acme-boost", "config": {"boost_terms": ["vault"]}},
    "policies": [{"use": "acme-clearance"}],
}


@pytest.fixture
def issuer(tmp_path: Path) -> JWTIssuer:
    return JWTIssuer(tmp_path)


@pytest.fixture
def client(tmp_path: Path, issuer: JWTIssuer) -> Iterator[TestClient]:
    settings = auth_settings(tmp_path, auth={"jwt": issuer.settings()})
    with TestClient(create_app(settings, configure_logs=False)) as c:
        yield c


def _search(client: TestClient, headers: dict[str, str], query: str = "handbook") -> httpx.Response:
    return client.post(
        "/v1/namespaces/docs/search", json={"query": query, "top_k": 10}, headers=headers
    )


def _found(client: TestClient, headers: dict[str, str], query: str = "handbook") -> set[str]:
    r = _search(client, headers, query)
    assert r.status_code == 200, r.text
    return {h["document_id"] for h in r.json()["results"]}


def test_acme_clearance_and_boost_next_to_a_plain_tenant(
    client: TestClient, issuer: JWTIssuer
) -> None:
    put_tenant(client, "acme", **ACME)
    put_tenant(client, "plain")
    # acme's policy denies changes below internal clearance: ingest as a cleared user
    writer = issuer.headers("acme", scope="read write", groups=["clearance:secret"])
    assert upload_as(client, writer, "docs", "handbook.jsonl", HANDBOOK).status_code == 201
    _, plain_rw = new_key(client, "plain", ["read", "write"])
    assert upload_as(client, plain_rw, "docs", "handbook.jsonl", HANDBOOK).status_code == 201

    public = issuer.headers("acme", sub="visitor", scope="read")
    internal = issuer.headers("acme", sub="staff", scope="read", groups=["clearance:internal"])
    secret = issuer.headers("acme", sub="boss", scope="read", groups="staff clearance:secret")
    assert _found(client, public) == {"pub"}
    assert _found(client, internal) == {"pub", "int"}
    assert _found(client, secret) == {"pub", "int", "sec"}  # never the unlabelled one
    # an API key carries no groups: public clearance
    _, acme_reader = new_key(client, "acme", ["read"])
    assert _found(client, acme_reader) == {"pub"}

    # the boost retriever is acme's: the boosted term ranks first for a cleared caller
    first = _search(client, secret).json()["results"][0]
    assert first["document_id"] == "sec"
    # the policy narrows every read route, not only search
    r = client.get("/v1/namespaces/docs/documents", headers=internal)
    assert {d["id"] for d in r.json()["documents"]} == {"pub", "int"}
    r = client.get("/v1/namespaces/docs/documents/sec", headers=internal)
    assert r.status_code == 404
    assert client.get("/v1/namespaces/docs/documents/sec", headers=secret).status_code == 200
    answer = client.post(
        "/v1/namespaces/docs/chat", json={"message": "What is the vault code?"}, headers=public
    ).json()
    assert all(c["document_id"] == "pub" for c in answer["citations"])
    assert "rotates" not in answer["answer"]
    body = {"model": "docs", "messages": [{"role": "user", "content": "vault code"}]}
    r = client.post("/v1/chat/completions", json=body, headers=public)
    assert r.status_code == 200 and all(c["document_id"] == "pub" for c in r.json()["citations"])
    # and denies changes below internal
    low_writer = issuer.headers("acme", sub="intern", scope="read write")
    r = upload_as(client, low_writer, "docs", "x.md", KUBE)
    assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied"
    r = client.delete("/v1/namespaces/docs/documents/pub", headers=low_writer)
    assert r.status_code == 403
    assert _found(client, secret) == {"pub", "int", "sec"}

    # the plain tenant, same namespace name, same documents: nothing hidden
    assert _found(client, plain_rw) == {"pub", "int", "sec", "none"}
    plain_jwt = issuer.headers("plain", scope="read", groups=["clearance:internal"])
    assert _found(client, plain_jwt) == {"pub", "int", "sec", "none"}


def test_groups_policy_hides_untagged_and_other_groups(
    client: TestClient, issuer: JWTIssuer
) -> None:
    put_tenant(client, "g", policies=[{"use": "groups"}])
    _, writer = new_key(client, "g", ["read", "write"])
    doc = b"# Runbook\n\nThe runbook for %s explains the handbook steps.\n"
    assert (
        upload_as(client, writer, "docs", "staff.md", doc % b"staff", groups="staff").status_code
        == 201
    )
    assert (
        upload_as(client, writer, "docs", "ops.md", doc % b"ops", groups="ops").status_code == 201
    )
    assert (
        upload_as(client, writer, "docs", "both.md", doc % b"both", groups="ops, staff").status_code
        == 201
    )
    assert upload_as(client, writer, "docs", "open.md", doc % b"open").status_code == 201
    stored = client.get("/v1/namespaces/docs/documents/staff.md", headers=writer).json()
    assert stored["metadata"]["acl_groups"] == ["staff"]

    staff = issuer.headers("g", scope="read", groups=["staff"])
    assert _found(client, staff, "runbook handbook") == {"staff.md", "both.md"}
    r = client.get("/v1/namespaces/docs/documents", headers=staff)
    assert {d["id"] for d in r.json()["documents"]} == {"staff.md", "both.md"}
    assert client.get("/v1/namespaces/docs/documents/ops.md", headers=staff).status_code == 404
    assert client.get("/v1/namespaces/docs/documents/open.md", headers=staff).status_code == 404
    ops = issuer.headers("g", scope="read", groups="ops")
    assert _found(client, ops, "runbook handbook") == {"ops.md", "both.md"}
    nobody = issuer.headers("g", scope="read")
    r = _search(client, nobody, "runbook")
    assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied"
    # keys are not principals the policy applies to (apply_to: jwt): they see all
    assert _found(client, writer, "runbook handbook") == {
        "staff.md",
        "ops.md",
        "both.md",
        "open.md",
    }


def test_bad_groups_form_field_is_422(client: TestClient) -> None:
    put_tenant(client, "g")
    _, writer = new_key(client, "g", ["write"])
    r = upload_as(client, writer, "docs", "x.md", KUBE, groups=",".join(f"g{i}" for i in range(65)))
    assert r.status_code == 422


def _failures(client: TestClient, tenant: str, plugin: str) -> float:
    return metric_value(client, "ragtide_plugin_failures_total", tenant=tenant, plugin=plugin)


@pytest.mark.parametrize(
    ("record", "plugin"),
    [
        ({"retriever": {"use": "not-installed", "config": {}}}, "not-installed"),
        ({"retriever": {"use": "acme-boost", "config": {"boost": 2.0}}}, "acme-boost"),
        ({"policies": [{"use": "acme-clearance", "config": {"levels": ["a"]}}]}, "acme-clearance"),
        ({"policies": [{"use": "no-such-policy"}]}, "no-such-policy"),
    ],
)
def test_a_broken_plugin_fails_its_tenant_only(
    client: TestClient, record: dict[str, object], plugin: str
) -> None:
    put_tenant(client, "ok")
    _, ok = new_key(client, "ok", ["read", "write"])
    upload_as(client, ok, "docs", "pods.md", KUBE)
    r = client.put("/v1/tenants/broken", json=record, headers=ADMIN)
    if r.status_code == 422:  # refused at PUT: store it as an older replica might have
        store = client.app.state.runtime.store  # type: ignore[attr-defined]
        client.portal.call(store.put_tenant, "broken", {"id": "broken", **record}, "s" * 32)  # type: ignore[union-attr]
    else:
        assert r.status_code == 201, r.text
    _, broken = new_key(client, "broken", ["read", "write"])
    before = _failures(client, "broken", plugin)

    r = client.post("/v1/namespaces/docs/search", json={"query": "pod"}, headers=broken)
    assert r.status_code == 500, r.text
    assert r.json()["error"]["code"] == "plugin_failed"
    assert "broken" in r.json()["error"]["message"]
    assert _failures(client, "broken", plugin) > before
    r = upload_as(client, broken, "docs", "pods.md", KUBE)
    assert r.status_code == 500 and r.json()["error"]["code"] == "plugin_failed"

    assert _found(client, ok, "pod") == {"pods.md"}  # the other tenant keeps serving
    assert client.get("/v1/namespaces", headers=ok).status_code == 200

    # fixing the record heals the tenant
    assert client.put("/v1/tenants/broken", json={}, headers=ADMIN).status_code == 200
    assert upload_as(client, broken, "docs", "pods.md", KUBE).status_code == 201
    assert _found(client, broken, "pod") == {"pods.md"}


def test_allowed_plugins_limits_what_a_tenant_may_use(tmp_path: Path) -> None:
    settings = auth_settings(tmp_path, tenants={"allowed_plugins": ["groups"]})
    with TestClient(create_app(settings, configure_logs=False)) as client:
        r = client.put("/v1/tenants/acme", json=ACME, headers=ADMIN)
        assert r.status_code == 422
        assert "acme-boost" in r.json()["error"]["message"]
        assert client.get("/v1/tenants/acme", headers=ADMIN).status_code == 404
        r = client.put(
            "/v1/tenants/acme", json={"policies": [{"use": "acme-clearance"}]}, headers=ADMIN
        )
        assert r.status_code == 422
        r = client.put("/v1/tenants/acme", json={"policies": [{"use": "groups"}]}, headers=ADMIN)
        assert r.status_code == 201
