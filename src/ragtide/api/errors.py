"""The one table from core errors to HTTP statuses, and the handlers that use it."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ragtide import errors

__all__ = [
    "STATUS",
    "Error",
    "ErrorDetail",
    "error_response",
    "install_error_handlers",
    "responses",
    "status_for",
]

logger = logging.getLogger(__name__)

STATUS: dict[type[errors.RagtideError], int] = {
    errors.RagtideError: 500,
    errors.ConfigError: 500,
    errors.InvalidRequest: 422,
    errors.Unauthenticated: 401,
    errors.NotFound: 404,
    errors.PermissionDenied: 403,
    errors.PayloadTooLarge: 413,
    errors.DocumentTooLarge: 413,
    errors.UnsupportedMediaType: 415,
    errors.DocumentRejected: 422,
    errors.DocumentTooComplex: 422,
    errors.IdempotencyKeyReused: 409,
    errors.TasksDisabled: 501,
    errors.RateLimited: 429,
    errors.UpstreamError: 502,
    errors.UpstreamTimeout: 504,
    errors.BackendUnavailable: 503,
}

_HTTP_CODES = {
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class ErrorDetail(BaseModel):
    model_config = ConfigDict(title="ErrorDetail")
    code: str = Field(description="A stable, machine-readable code, e.g. namespace_not_found.")
    message: str = Field(description="What went wrong, for a human.")


class Error(BaseModel):
    """The body of every error response."""

    model_config = ConfigDict(title="Error")
    error: ErrorDetail


_DESCRIPTIONS = {
    401: "No credential, or one that is unknown, malformed, expired or revoked.",
    403: "The credential lacks the scope or the permission for this.",
    404: "Not found (or not visible to this credential).",
    409: "The idempotency key names another request.",
    413: "The request body, or the document in it, is too large.",
    415: "The request body's Content-Type, or the document's type, is not supported.",
    422: "The request is malformed: its JSON, a parameter, a field, a name or an id.",
    429: "Over the tenant's rate or quota; retry after Retry-After seconds.",
    500: "A plugin or the server failed.",
    501: "Tasks are disabled on this server (it has no rabbitmq.url).",
    502: "The chat model's upstream failed.",
    503: "Starting, overloaded, or a backend is unavailable; retry after Retry-After seconds.",
    504: "The chat model's upstream did not answer in time.",
}

_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: each error status it can answer, with the ``Error`` body."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted(statuses):
        entry: dict[str, Any] = {"model": Error, "description": _DESCRIPTIONS[status]}
        if status in (429, 503):
            entry["headers"] = _RETRY_AFTER
        if status == 401:
            entry["headers"] = {
                "WWW-Authenticate": {
                    "description": "The authentication scheme: Bearer.",
                    "schema": {"type": "string"},
                }
            }
        out[status] = entry
    return out


def status_for(exc: errors.RagtideError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return Response(body, status, headers=headers, media_type="application/json")


def _for_ragtide_error(exc: errors.RagtideError) -> Response:
    status = status_for(exc)
    headers = None
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers = {"Retry-After": str(max(1, math.ceil(retry_after)))}
    if isinstance(exc, errors.Unauthenticated):
        headers = {**(headers or {}), "WWW-Authenticate": 'Bearer realm="ragtide"'}
    if status >= 500:
        logger.warning("request failed", extra={"error": exc.code, "reason": exc.message})
    return error_response(status, exc.code, exc.message, headers)


_JSON_AT = re.compile(
    r"^(?:Invalid JSON: )?(?P<what>.*?)(?: at line (?P<line>\d+) column (?P<col>\d+))?$"
)

# Path parameters whose rules have their own error codes (and messages) in the core.
_PATH_RULES: dict[str, tuple[str, str]] = {
    "namespace": (
        "invalid_namespace",
        "use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit",
    ),
    "tenant": (
        "invalid_request",
        "use 1-63 lower-case letters, digits or '-', starting and ending with a letter or digit",
    ),
}


def _json_message(error: dict[str, Any]) -> str:
    """``invalid JSON at line 1 column 10: expected value`` (what, and where)."""
    ctx = error.get("ctx") or {}
    raw = str(ctx.get("error") or error.get("msg") or "")
    found = _JSON_AT.match(raw)
    if found is None or not found.group("what"):
        return f"invalid JSON: {raw or 'not a JSON document'}"
    what = found.group("what")
    what = (
        "the body is empty"
        if what == "EOF while parsing a value" and found.group("col") == "0"
        else what
    )
    if found.group("line"):
        return f"invalid JSON at line {found.group('line')} column {found.group('col')}: {what}"
    return f"invalid JSON: {what}"


def _describe(error: dict[str, Any]) -> str:
    if error.get("type") == "json_invalid":
        return _json_message(error)
    parts = [str(p) for p in error.get("loc", ())]
    if parts and parts[0] in ("body", "path", "query", "header"):
        where = parts[0]
        parts = parts[1:]
        if where != "body" and parts:
            parts[0] = f"{where} parameter {parts[0]}"
    loc = ".".join(parts)
    return f"{loc}: {error.get('msg')}" if loc else str(error.get("msg"))


def _validation_code(errs: list[dict[str, Any]]) -> tuple[str, str | None]:
    """The error code, and a message when a core rule (namespace, tenant) was broken."""
    if any(e.get("type") == "json_invalid" for e in errs):
        return "invalid_json", None
    for e in errs:
        loc = tuple(e.get("loc", ()))
        if len(loc) == 2 and loc[0] == "path" and loc[1] in _PATH_RULES:
            code, rule = _PATH_RULES[str(loc[1])]
            value = e.get("input")
            shown = repr(value)[:80] if isinstance(value, str) else "value"
            return code, f"invalid {loc[1]} {shown}: {rule}"
    return "invalid_request", None


def allowed_methods(request: Request) -> list[str]:
    """Every method of every route whose path matches this request's (for ``Allow``)."""
    path, root = request.scope["path"], request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    methods: set[str] = set()

    def visit(routes: Iterable[Any]) -> None:
        for route in routes:
            nested = getattr(route, "effective_candidates", None)  # an included router
            if callable(nested):
                visit(nested())
                continue
            regex = getattr(route, "path_regex", None)
            if regex is not None and regex.match(path):
                methods.update(getattr(route, "methods", None) or ())

    visit(request.app.router.routes)
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    async def ragtide_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, errors.RagtideError)
        return _for_ragtide_error(exc)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errs = list(exc.errors())
        code, rule = _validation_code(errs)
        message = rule or "; ".join(_describe(e) for e in errs[:5]) or "invalid request"
        return error_response(422, code, message)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        status, headers = exc.status_code, dict(exc.headers or {})
        if status == 400:
            # Starlette's only 400s are bodies it could not parse (multipart, form): a
            # malformed request, which every route answers with 422.
            return error_response(422, "invalid_request", f"malformed body: {exc.detail}")
        if status == 405:
            # Each method of a path is its own route: name all of them, not the first.
            headers["Allow"] = ", ".join(allowed_methods(request))
        code = _HTTP_CODES.get(status, f"http_{status}")
        return error_response(status, code, str(exc.detail), headers)

    app.add_exception_handler(errors.RagtideError, ragtide_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
