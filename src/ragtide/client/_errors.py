"""The client's exceptions: one class per kind of API error, each carrying the stable code."""

from __future__ import annotations

from typing import Any

import httpx

__all__ = [
    "BadRequest",
    "Conflict",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "QuotaExceeded",
    "RagtideAPIError",
    "RagtideClientError",
    "RagtideConnectionError",
    "RateLimited",
    "ServerError",
    "ServiceUnavailable",
    "Unauthenticated",
    "UnsupportedMediaType",
    "UpstreamError",
    "error_from_response",
    "error_from_status",
]


class RagtideClientError(Exception):
    """Base of everything the client raises."""


class RagtideConnectionError(RagtideClientError):
    """The server could not be reached, or the connection broke (after any retries)."""


class RagtideAPIError(RagtideClientError):
    """The API answered with an error: ``status``, the stable ``code`` and a ``message``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.request_id = request_id


class BadRequest(RagtideAPIError):
    """422 (and other 4xx without a class): invalid_request, invalid_namespace, …"""


class Unauthenticated(RagtideAPIError):
    """401: no credential, or one that is unknown, revoked or expired."""


class Forbidden(RagtideAPIError):
    """403: forbidden (the key lacks the scope) or permission_denied (a policy said no)."""


class NotFound(RagtideAPIError):
    """404: namespace_not_found, document_not_found, session_not_found, …"""


class Conflict(RagtideAPIError):
    """409: idempotency_key_reused."""


class PayloadTooLarge(RagtideAPIError):
    """413."""


class UnsupportedMediaType(RagtideAPIError):
    """415: an unknown file type."""


class RateLimited(RagtideAPIError):
    """429 rate_limited; ``retry_after`` says when to come back."""


class QuotaExceeded(RateLimited):
    """429 quota_exceeded: a daily or storage quota of the tenant is used up."""


class ServerError(RagtideAPIError):
    """5xx without a class of its own (plugin_failed, tasks_disabled, …)."""


class UpstreamError(ServerError):
    """502/504: the chat model's upstream failed or timed out."""


class ServiceUnavailable(ServerError):
    """503 backend_unavailable (or starting, or draining)."""


_BY_STATUS: dict[int, type[RagtideAPIError]] = {
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    429: RateLimited,
    502: UpstreamError,
    503: ServiceUnavailable,
    504: UpstreamError,
}


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    import datetime as dt

    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def error_from_status(
    status: int,
    code: str,
    message: str,
    *,
    retry_after: float | None = None,
    request_id: str | None = None,
) -> RagtideAPIError:
    cls: type[RagtideAPIError]
    if code == "quota_exceeded":
        cls = QuotaExceeded
    elif status in _BY_STATUS:
        cls = _BY_STATUS[status]
    elif status >= 500:
        cls = ServerError
    else:
        cls = BadRequest
    return cls(status, code, message, retry_after=retry_after, request_id=request_id)


def error_from_response(response: httpx.Response) -> RagtideAPIError:
    """The exception for an error response (its body read): ``{"error": {"code", "message"}}``."""
    code, message = "", ""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = str(body["error"].get("code") or "")
        message = str(body["error"].get("message") or "")
    if not code:  # not Ragtide's error body (a proxy's page, say)
        code = "http_error"
        message = response.text[:200].strip() or response.reason_phrase
    return error_from_status(
        response.status_code,
        code,
        message,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        request_id=response.headers.get("x-request-id"),
    )
