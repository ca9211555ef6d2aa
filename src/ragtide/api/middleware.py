"""One pure-ASGI middleware: request id, body limit, metrics, access log, last-resort 500."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragtide.api.errors import error_response
from ragtide.observability import (
    HTTP_IN_FLIGHT,
    HTTP_LATENCY,
    HTTP_REQUESTS,
    labelled,
    new_request_id,
    request_id_var,
    tenant_var,
    write_access_log,
)

__all__ = ["RequestMiddleware"]

logger = logging.getLogger("ragtide.access")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_UNTRACKED = frozenset({"/healthz", "/ready", "/metrics"})


class RequestMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        max_upload_bytes: int,
        access_log: bool,
        json_logs: bool = True,
    ) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.max_upload = max_upload_bytes + 64 * 1024  # multipart framing
        self.access_log = access_log
        self.json_logs = json_logs

    @staticmethod
    def _route(scope: Scope) -> str:
        # FastAPI records the matched route in the (shared) scope while routing.
        return getattr(scope.get("route"), "path", None) or "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming, length = _request_headers(scope["headers"])
        request_id = incoming if _REQUEST_ID.fullmatch(incoming) else new_request_id()
        token = request_id_var.set(request_id)
        tenant_token = tenant_var.set(None)  # set by authentication, for every log line
        method, path = scope["method"], scope["path"]
        limit = self.max_upload if path.endswith("/documents") else self.max_body
        status = 500
        started = False
        start = time.perf_counter()
        # Probes and scrapes are not load: they stay out of the counts, the latencies and
        # the in-flight gauge (which a scrape would otherwise always read as at least 1).
        tracked = path not in _UNTRACKED
        if tracked:
            HTTP_IN_FLIGHT.inc()

        too_large = length is not None and length.isdigit() and int(length) > limit
        received = 0
        id_header = (b"x-request-id", request_id.encode())

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # An HTTPException, because FastAPI turns any other error raised while
                    # reading the body into a 400.
                    raise HTTPException(413, f"request body is larger than {limit} bytes")
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), id_header]
            await send(message)

        try:
            if too_large:
                response = error_response(
                    413, "payload_too_large", f"request body is larger than {limit} bytes"
                )
                await response(scope, receive, send_wrapper)
            else:
                await self.app(scope, limited_receive, send_wrapper)
        except Exception:  # the outer boundary: log it, answer 500 without a trace
            logger.exception("unhandled error", extra={"method": method, "path": path})
            if not started:
                response = error_response(500, "internal", "internal error")
                await response(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            if tracked:
                HTTP_IN_FLIGHT.dec()
                route = self._route(scope)
                labelled(HTTP_REQUESTS, method, route, str(status)).inc()
                labelled(HTTP_LATENCY, method, route).observe(elapsed)
            if self.access_log and tracked:
                principal = scope.get("ragtide.principal")
                tenant = getattr(principal, "tenant", None)
                if self.json_logs:
                    write_access_log(request_id, method, path, status, elapsed, tenant)
                else:
                    extra: dict[str, Any] = {
                        "method": method,
                        "path": path,
                        "status": status,
                        "duration_s": round(elapsed, 6),
                        "tenant": tenant,
                    }
                    logger.info("request finished", extra=extra)
            tenant_var.reset(tenant_token)
            request_id_var.reset(token)


def _request_headers(headers: list[tuple[bytes, bytes]]) -> tuple[str, bytes | None]:
    """(``X-Request-ID`` or "", ``Content-Length`` or None); the last of a repeated header
    counts, as in a dict of the headers."""
    incoming, length = b"", None
    for name, value in headers:
        if name == b"x-request-id":
            incoming = value
        elif name == b"content-length":
            length = value
    return incoming.decode("latin-1"), length
