"""Shed load instead of queueing it: a cap on the requests one replica serves at once.

Past ``http.max_in_flight`` requests being served, a new request is answered at once with
``503`` ``{"error": {"code": "overloaded", ...}}`` and ``Retry-After: 1``, and counted in
``ragtide_http_overloaded{limit="in_flight"}``: the HPA (and the client) see saturation
rather than a replica that hangs. Probes and scrapes (``/healthz``, ``/ready``,
``/metrics``) are never refused, so a busy replica is not restarted or taken out of
rotation for being busy. A request counts until its response (or stream) has ended.

The connection cap lives in the server (``ragtide.server``); it answers with the same
response, through :func:`overloaded_response`.
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ragtide.api.errors import error_response
from ragtide.observability import HTTP_OVERLOADED

__all__ = ["EXEMPT_PATHS", "InFlightLimitMiddleware", "overloaded_response"]

EXEMPT_PATHS = frozenset({"/healthz", "/ready", "/metrics"})
RETRY_AFTER_S = 1


def overloaded_response(what: str, *, close: bool = False) -> Response:
    """The 503 ``overloaded`` answer, with ``Retry-After`` (and ``Connection: close``)."""
    headers = {"Retry-After": str(RETRY_AFTER_S)}
    if close:
        headers["Connection"] = "close"
    return error_response(
        503, "overloaded", f"this replica is serving too many {what}; retry shortly", headers
    )


class InFlightLimitMiddleware:
    """Pure ASGI: at most ``max_in_flight`` non-probe HTTP requests are served at once."""

    def __init__(self, app: ASGIApp, *, max_in_flight: int) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self._refusals = HTTP_OVERLOADED.labels("in_flight")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            self._refusals.inc()
            await overloaded_response("requests")(scope, receive, send)
            return
        self.in_flight += 1  # one event loop: no lock needed
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
