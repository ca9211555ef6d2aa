"""The OpenAPI document tells the truth, and the fixes it describes hold."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import KUBE, upload

METHODS = ("get", "put", "post", "delete", "patch")
PUBLIC = {"/healthz", "/ready", "/metrics"}


@pytest.fixture
def doc(client: TestClient) -> dict[str, Any]:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    found: dict[str, Any] = r.json()
    return found


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def walk(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, dict):
        for v in value.values():
            yield from walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from walk(v)


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"unresolvable $ref {ref}"
        node = node[part]
    return node


# --- the document ----------------------------------------------------------------------


def test_every_ref_resolves(doc: dict[str, Any]) -> None:
    refs = [n["$ref"] for n in walk(doc) if isinstance(n, dict) and "$ref" in n]
    mappings = [
        target
        for n in walk(doc)
        if isinstance(n, dict) and isinstance(n.get("mapping"), dict)
        for target in n["mapping"].values()
    ]
    assert refs and mappings
    for ref in refs + mappings:
        assert "$defs" not in ref, ref
        resolve(doc, ref)
    assert not [n for n in walk(doc) if isinstance(n, dict) and "$defs" in n]


def test_the_tasks_body_names_its_inline_documents(doc: dict[str, Any]) -> None:
    body = doc["paths"]["/v1/namespaces/{namespace}/tasks"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    ingest = resolve(doc, schema["discriminator"]["mapping"]["ingest"])
    item = ingest["properties"]["documents"]["items"]
    assert resolve(doc, item["$ref"])["properties"]["id"]["pattern"]


def test_the_error_schema_is_declared_on_every_error_status(doc: dict[str, Any]) -> None:
    error = doc["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    detail = resolve(doc, error["properties"]["error"]["$ref"])
    assert set(detail["required"]) == {"code", "message"}
    for path, method, op in operations(doc):
        for status, response in op["responses"].items():
            if int(status) < 400 or path == "/ready":
                continue
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}, (path, method, status)


def test_every_protected_route_lists_401_403_and_422(doc: dict[str, Any]) -> None:
    for path, method, op in operations(doc):
        statuses = set(op["responses"])
        if path in PUBLIC:
            assert op["security"] == [] and "401" not in statuses
            continue
        assert op["security"] == [{"bearer": []}], (path, method)
        assert {"401", "403", "500", "503"} <= statuses, (path, method)
        if op.get("parameters") or op.get("requestBody"):
            assert "422" in statuses, (path, method)
        if op.get("requestBody"):
            assert {"413", "415"} <= statuses, (path, method)
        if "{" in path and method in ("get", "delete"):
            assert "404" in statuses, (path, method)
        assert "400" not in statuses
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_statuses_the_routes_really_return_are_listed(doc: dict[str, Any]) -> None:
    paths = doc["paths"]
    assert "201" in paths["/v1/namespaces/{namespace}"]["put"]["responses"]
    assert "201" in paths["/v1/namespaces/{namespace}/documents"]["post"]["responses"]
    assert "201" in paths["/v1/tenants/{tenant}"]["put"]["responses"]
    tasks = paths["/v1/namespaces/{namespace}/tasks"]["post"]["responses"]
    assert {"202", "409", "501"} <= set(tasks)
    chat = paths["/v1/namespaces/{namespace}/chat"]["post"]["responses"]
    assert {"429", "502", "504"} <= set(chat)
    assert "Retry-After" in chat["429"]["headers"] and "Retry-After" in chat["503"]["headers"]
    assert "503" in paths["/ready"]["get"]["responses"]


def test_path_parameters_state_their_rules(doc: dict[str, Any]) -> None:
    want = {
        "namespace": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
        "tenant": r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$",
        "session_id": r"^[A-Za-z0-9._-]+$",
    }
    seen = set()
    for path, method, op in operations(doc):
        for param in op.get("parameters", []):
            if param["in"] != "path":
                continue
            name, schema = param["name"], param["schema"]
            seen.add(name)
            if name in want:
                assert schema["pattern"] == want[name], (path, method)
            if name == "document_id":
                assert re.fullmatch(schema["pattern"], "guides/pods.md")
                assert not re.fullmatch(schema["pattern"], " padded")
                assert not re.fullmatch(schema["pattern"], "tab\there")
                assert not re.fullmatch(schema["pattern"], "x" * 513)
    assert {"namespace", "tenant", "session_id", "document_id"} <= seen


def test_streaming_and_metrics_content_types(doc: dict[str, Any]) -> None:
    for path in ("/v1/namespaces/{namespace}/chat", "/v1/chat/completions"):
        content = doc["paths"][path]["post"]["responses"]["200"]["content"]
        assert {"application/json", "text/event-stream"} <= set(content), path
    metrics = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain; version=0.0.4; charset=utf-8"]


def test_strict_types_and_settings_limits_are_stated(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    top_k = schemas["SearchRequest"]["properties"]["top_k"]
    assert top_k["type"] == "integer" and top_k["maximum"] == 100
    message = schemas["ChatRequest"]["properties"]["message"]
    assert message["maxLength"] > 0 and message["pattern"]
    assert schemas["ChatRequest"]["properties"]["stream"]["type"] == "boolean"


# --- the behaviour it describes --------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/v1/namespaces/kb/search", {"query": "pod", "top_k": "5"}),
        ("/v1/namespaces/kb/search", {"query": "pod", "top_k": True}),
        ("/v1/namespaces/kb/search", {"query": "pod", "top_k": 2.5}),
        ("/v1/namespaces/kb/chat", {"message": "hi", "stream": "yes"}),
        ("/v1/namespaces/kb/chat", {"message": "hi", "stream": 1}),
        ("/v1/namespaces/kb/chat", {"message": 42}),
        (
            "/v1/chat/completions",
            {"model": "kb", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"},
        ),
        ("/v1/chat/completions", {"model": "kb", "messages": [{"role": "user", "content": 5}]}),
    ],
)
def test_loose_types_are_422(client: TestClient, url: str, body: dict[str, Any]) -> None:
    upload(client, "kb", "pods.md", KUBE)
    r = client.post(url, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_request"


def test_a_whole_number_is_an_integer(client: TestClient) -> None:
    upload(client, "kb", "pods.md", KUBE)
    r = client.post("/v1/namespaces/kb/search", json={"query": "pod", "top_k": 2.0})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PATCH", "/v1/namespaces/kb", {"GET", "PUT", "DELETE"}),
        ("OPTIONS", "/v1/namespaces/kb/documents", {"GET", "POST"}),
        ("POST", "/v1/namespaces/kb/documents/a.md", {"GET", "DELETE"}),
        ("PUT", "/v1/namespaces/kb/sessions/s1", {"GET", "DELETE", "PATCH"}),
        ("POST", "/v1/tenants/a", {"GET", "PUT", "DELETE"}),
        ("GET", "/v1/namespaces/kb/search", {"POST"}),
    ],
)
def test_405_allows_every_method_of_the_path(
    client: TestClient, method: str, path: str, allow: set[str]
) -> None:
    r = client.request(method, path)
    assert r.status_code == 405
    assert r.json()["error"]["code"] == "method_not_allowed"
    listed = {m.strip() for m in r.headers["allow"].split(",")}
    assert listed - {"HEAD"} == allow


def test_a_repeated_file_field_is_422(client: TestClient) -> None:
    r = client.post(
        "/v1/namespaces/kb/documents",
        files=[("file", ("a.md", b"# A\n\nalpha\n")), ("file", ("b.md", b"# B\n\nbeta\n"))],
    )
    assert r.status_code == 422, r.text
    assert "file" in r.json()["error"]["message"]
    assert client.get("/v1/namespaces/kb").status_code == 404  # nothing was ingested
    r = client.post(
        "/v1/namespaces/kb/documents",
        files={"file": ("a.md", b"# A\n\nalpha\n")},
        data={"document_id": ["one", "two"]},
    )
    assert r.status_code == 422, r.text


@pytest.mark.parametrize(
    ("url", "raw", "message"),
    [
        (
            "/v1/namespaces/kb/search",
            b'{"query": }',
            "invalid JSON at line 1 column 11: expected value",
        ),
        ("/v1/namespaces/kb/chat", b'{"message": "hi",\n "x"', "invalid JSON at line 2 column"),
        ("/v1/chat/completions", b"{not json", "invalid JSON at line 1 column 2"),
        ("/v1/tenants/default/keys", b"", "invalid JSON at line 1 column 0: the body is empty"),
    ],
)
def test_malformed_json_is_422_and_says_where(
    client: TestClient, url: str, raw: bytes, message: str
) -> None:
    r = client.post(url, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_json"
    assert error["message"].startswith(message), error["message"]
    assert "JSON decode error" not in error["message"]


def test_a_malformed_multipart_body_is_422_not_400(client: TestClient) -> None:
    r = client.post(
        "/v1/namespaces/kb/documents",
        content=b"--xyz\r\nContent-Disposition: form-data\r\n\r\nbroken",
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert r.status_code == 422, r.text


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("GET", "/v1/namespaces/-bad", "invalid_namespace"),
        ("POST", "/v1/namespaces/bad!/search", "invalid_namespace"),
        ("GET", "/v1/namespaces/kb/sessions/a%20b", "invalid_request"),
        ("GET", "/v1/namespaces/kb/documents/%20padded", "invalid_request"),
        ("GET", "/v1/tenants/Not_A_Label", "invalid_request"),
    ],
)
def test_path_rules_are_422(client: TestClient, method: str, path: str, code: str) -> None:
    r = client.request(method, path, json={"query": "q"})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == code
