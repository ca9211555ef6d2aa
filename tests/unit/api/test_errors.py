"""The error handlers of ``ragtide.api.errors`` on a bare FastAPI app: what each kind of
exception becomes (status, code, message, headers), the 5xx log line, ``Allow`` under a
root path, and the OpenAPI ``responses`` entries in full."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import Host, Mount

from ragtide import errors
from ragtide.api.errors import (
    Error,
    _describe,
    _for_ragtide_error,
    _validation_code,
    allowed_methods,
    install_error_handlers,
    responses,
)


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/raise/{what}")
    async def raise_(what: str) -> None:
        if what == "no-errors":
            raise RequestValidationError([])
        if what == "form":
            raise HTTPException(400, "boundary missing")
        if what == "teapot":
            raise HTTPException(418, "short and stout")
        if what == "not-acceptable":
            raise HTTPException(406, "json only")
        raise errors.QuotaExceeded("used up", retry_after=0.2)

    @app.put("/items/{item}")
    async def put_item(item: str) -> None: ...

    @app.delete("/items/{item}")
    async def delete_item(item: str) -> None: ...

    return app


def _error(r: Any) -> tuple[int, str, str]:
    body = r.json()["error"]
    return r.status_code, body["code"], body["message"]


def test_each_exception_kind_becomes_its_error() -> None:
    with TestClient(_app()) as client:
        assert _error(client.get("/raise/no-errors")) == (422, "invalid_request", "invalid request")
        assert _error(client.get("/raise/form")) == (
            422,
            "invalid_request",
            "malformed body: boundary missing",
        )
        assert _error(client.get("/raise/teapot")) == (418, "http_418", "short and stout")
        assert _error(client.get("/raise/not-acceptable")) == (406, "not_acceptable", "json only")
        quota = client.get("/raise/quota")
        assert _error(quota) == (429, "quota_exceeded", "used up")
        assert quota.headers["retry-after"] == "1"  # a fractional delay rounds up, never to 0
        assert _error(client.post("/items/a"))[:2] == (405, "method_not_allowed")


def test_errors_without_a_location_are_described_by_their_message() -> None:
    assert _describe({"type": "missing", "msg": "bad"}) == "bad"
    assert _validation_code([{"type": "missing"}]) == ("invalid_request", None)


def _warnings(caplog: pytest.LogCaptureFixture, exc: errors.RagtideError) -> list[Any]:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragtide.api.errors"):
        _for_ragtide_error(exc)
    return [r for r in caplog.records if r.name == "ragtide.api.errors"]


def test_server_errors_are_logged_with_code_and_reason(caplog: pytest.LogCaptureFixture) -> None:
    for exc in (
        errors.ConfigError("no such plugin"),  # 500, the lowest
        errors.TasksDisabled("no rabbitmq"),  # 501
        errors.UpstreamTimeout("model stalled"),  # 504
    ):
        (record,) = _warnings(caplog, exc)
        assert record.getMessage() == "request failed"
        assert (record.error, record.reason) == (exc.code, exc.message)  # type: ignore[attr-defined]
    for client_error in (errors.NotFound("gone"), errors.RateLimited("slow down")):
        assert _warnings(caplog, client_error) == []


def _request(app: FastAPI, path: str, **scope: Any) -> Request:
    return Request({"type": "http", "method": "POST", "path": path, "app": app, **scope})


def test_allow_lists_every_method_of_the_path_under_a_root_path() -> None:
    app = _app()
    assert allowed_methods(_request(app, "/items/a", root_path="")) == ["DELETE", "PUT"]
    assert allowed_methods(_request(app, "/items/a")) == ["DELETE", "PUT"]
    # ASGI puts the root path in front of the path; some servers strip it themselves
    assert allowed_methods(_request(app, "/api/items/a", root_path="/api")) == ["DELETE", "PUT"]
    assert allowed_methods(_request(app, "/items/a", root_path="/api")) == ["DELETE", "PUT"]
    assert allowed_methods(_request(app, "/nothing", root_path="/api")) == []


def test_allow_skips_routes_without_a_path_or_methods() -> None:
    app = _app()
    app.router.routes.append(Host("static.example.org", app=_app()))  # no path_regex
    app.router.routes.append(Mount("/items", app=_app()))  # a path, but no methods
    assert allowed_methods(_request(app, "/items/a")) == ["DELETE", "PUT"]


def test_openapi_responses_in_full() -> None:
    retry_after = {
        "Retry-After": {
            "description": "Seconds to wait before retrying.",
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
        }
    }
    out = responses(503, 401, 429)
    assert out[401] == {
        "model": Error,
        "description": "No credential, or one that is unknown, malformed, expired or revoked.",
        "headers": {
            "WWW-Authenticate": {
                "description": "The authentication scheme: Bearer.",
                "schema": {"type": "string"},
            }
        },
    }
    assert out[429] == {
        "model": Error,
        "description": "Over the tenant's rate or quota; retry after Retry-After seconds.",
        "headers": retry_after,
    }
    assert out[503]["headers"] == retry_after
