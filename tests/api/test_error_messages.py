"""What the error handlers say (ragtide.api.errors): validation messages, JSON syntax
errors, path rules, 405's Allow, Starlette's 400s as 422, and the OpenAPI responses."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from ragtide.api.errors import Error, _describe, _json_message, _validation_code, responses

NAMESPACE_RULE = "use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
TENANT_RULE = (
    "use 1-63 lower-case letters, digits or '-', starting and ending with a letter or digit"
)


@pytest.mark.parametrize(
    ("error", "message"),
    [
        ({"ctx": {"error": "Invalid JSON: expected value at line 1 column 2"}},
         "invalid JSON at line 1 column 2: expected value"),
        ({"ctx": {"error": "EOF while parsing a value at line 1 column 0"}},
         "invalid JSON at line 1 column 0: the body is empty"),
        ({"ctx": {"error": "EOF while parsing a value at line 1 column 5"}},
         "invalid JSON at line 1 column 5: EOF while parsing a value"),
        ({"ctx": {"error": "trailing comma"}}, "invalid JSON: trailing comma"),
        ({"msg": "JSON decode error"}, "invalid JSON: JSON decode error"),
        ({}, "invalid JSON: not a JSON document"),
        ({"ctx": {"error": "Invalid JSON: "}}, "invalid JSON: Invalid JSON: "),
    ],
)  # fmt: skip
def test_json_syntax_errors_say_what_and_where(error: dict[str, Any], message: str) -> None:
    assert _json_message({"type": "json_invalid", **error}) == message
    assert _describe({"type": "json_invalid", **error}) == message


@pytest.mark.parametrize(
    ("loc", "message"),
    [
        (("body", "message"), "message: bad"),
        (("body", "documents", 0, "id"), "documents.0.id: bad"),
        (("body",), "bad"),
        ((), "bad"),
        (("query", "limit"), "query parameter limit: bad"),
        (("path", "id", "x"), "path parameter id.x: bad"),
        (("header", "x-a"), "header parameter x-a: bad"),
        (("query",), "bad"),
        (("cookie", "a"), "cookie.a: bad"),
    ],
)
def test_validation_errors_name_the_field(loc: tuple[Any, ...], message: str) -> None:
    assert _describe({"type": "missing", "loc": loc, "msg": "bad"}) == message


def test_validation_codes_and_the_core_path_rules() -> None:
    assert _validation_code([{"type": "missing"}, {"type": "json_invalid"}]) == (
        "invalid_json",
        None,
    )
    assert _validation_code([{"loc": ("path", "namespace"), "input": "Bad!"}]) == (
        "invalid_namespace",
        f"invalid namespace 'Bad!': {NAMESPACE_RULE}",
    )
    long = _validation_code([{"loc": ("path", "namespace"), "input": "x" * 100}])
    assert long == ("invalid_namespace", f"invalid namespace '{'x' * 79}: {NAMESPACE_RULE}")
    assert _validation_code([{"loc": ("path", "tenant"), "input": 5}]) == (
        "invalid_request",
        f"invalid tenant value: {TENANT_RULE}",
    )
    for loc in (("path", "other"), ("path", "namespace", "x"), ("query", "namespace"), ()):
        assert _validation_code([{"loc": loc, "input": "x"}]) == ("invalid_request", None)


def test_openapi_responses_carry_the_error_body_and_headers() -> None:
    out = responses(429, 401, 404, 503)
    assert list(out) == [401, 404, 429, 503]
    assert all(entry["model"] is Error for entry in out.values())
    assert out[404] == {
        "model": Error,
        "description": "Not found (or not visible to this credential).",
    }
    assert list(out[401]["headers"]) == ["WWW-Authenticate"]
    for status in (429, 503):
        header = out[status]["headers"]["Retry-After"]
        assert header["schema"] == {"type": "string", "pattern": "^[0-9]+$"}
    assert out[503]["description"].startswith("Starting, overloaded")


def _error(r: Any) -> tuple[int, str, str]:
    body = r.json()["error"]
    return r.status_code, body["code"], body["message"]


def test_messages_through_requests(client: TestClient) -> None:
    r = client.post("/v1/namespaces/kb")
    assert _error(r) == (405, "method_not_allowed", "Method Not Allowed")
    assert r.headers["allow"] == "DELETE, GET, PUT"  # every method of the path
    assert client.delete("/healthz").headers["allow"] == "GET"
    bad_multipart = client.post(
        "/v1/namespaces/kb/documents",
        content=b"--x\r\nbad",
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    assert _error(bad_multipart)[:2] == (422, "invalid_request")
    assert _error(client.get("/v1/namespaces?limit=abc")) == (
        422,
        "invalid_request",
        "query parameter limit: Input should be a valid integer, unable to parse string as an"
        " integer",
    )
    empty = client.post(
        "/v1/namespaces/kb/chat", content=b"", headers={"content-type": "application/json"}
    )
    assert _error(empty) == (
        422,
        "invalid_json",
        "invalid JSON at line 1 column 0: the body is empty",
    )
    assert _error(client.put("/v1/namespaces/Bad!")) == (
        422,
        "invalid_namespace",
        f"invalid namespace 'Bad!': {NAMESPACE_RULE}",
    )
    two = client.post("/v1/namespaces/kb/search", json={"query": "q", "top_k": 0, "x": 1})
    status, code, message = _error(two)
    assert (status, code) == (422, "invalid_request")
    assert message.startswith("top_k: Input should be greater than 0; x: ") and "XX" not in message
    many = client.post("/v1/namespaces/kb/search", json={f"f{i}": i for i in range(8)})
    assert _error(many)[2].count("; ") == 4  # at most five errors are described


def test_a_body_field_named_query_is_named(client: TestClient) -> None:
    r = client.post("/v1/namespaces/kb/search", json={"query": ""})
    assert _error(r)[2].startswith("query: ")
