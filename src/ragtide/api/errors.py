"""The one table from core errors to HTTP statuses, and the handlers that use it."""

from __future__ import annotations

import logging
import math
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ragtide import errors

__all__ = ["STATUS", "error_response", "install_error_handlers", "status_for"]

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
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


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


def _describe(error: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
    return f"{loc}: {error.get('msg')}" if loc else str(error.get("msg"))


def install_error_handlers(app: FastAPI) -> None:
    async def ragtide_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, errors.RagtideError)
        return _for_ragtide_error(exc)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errs = list(exc.errors())
        code = (
            "invalid_json"
            if any(e.get("type") == "json_invalid" for e in errs)
            else ("invalid_request")
        )
        message = "; ".join(_describe(e) for e in errs[:5]) or "invalid request"
        return error_response(422, code, message)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))

    app.add_exception_handler(errors.RagtideError, ragtide_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
