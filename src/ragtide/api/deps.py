"""Small helpers the routes share: the runtime, JSON responses, content-type checks.

Dependencies are ``async def`` on purpose: FastAPI runs plain ``def`` dependencies in a
thread pool, a thread hop per request that cost more than the whole search.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from ragtide.builtin.ratelimit import rate_key
from ragtide.errors import BackendUnavailable, RateLimited, UnsupportedMediaType
from ragtide.ingest.pipeline import Ingestor
from ragtide.observability import RATE_LIMITED
from ragtide.runtime import Runtime

__all__ = [
    "JSONResponse",
    "enforce_rate_limit",
    "ingestor",
    "json_body",
    "json_body_schema",
    "rate_limit",
    "require_json",
    "runtime",
]


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


async def runtime(request: Request) -> Runtime:
    rt: Runtime | None = getattr(request.app.state, "runtime", None)
    if rt is None or not rt.started:
        raise BackendUnavailable("the service is starting", retry_after=1)
    return rt


async def ingestor(request: Request) -> Ingestor:
    await runtime(request)
    ing: Ingestor = request.app.state.ingestor
    return ing


async def require_json(request: Request) -> None:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"expected Content-Type application/json, got {content_type or 'none'}"
        )


logger = logging.getLogger(__name__)


async def rate_limit(request: Request) -> None:
    """Dependency: the rate limit of the path's namespace (see ``enforce_rate_limit``)."""
    rt = await runtime(request)
    await enforce_rate_limit(rt, request, request.path_params.get("namespace", ""))


async def enforce_rate_limit(rt: Runtime, request: Request, namespace: str) -> None:
    """Admit the request or raise ``RateLimited``, per (namespace, client).

    The client is the bearer credential when there is one, else the peer address. A
    limiter that is down admits the request (``rate_limit.fail_open``), logged and
    counted, so an outage of Redis does not become an outage of the service.
    """
    if rt.limiter is None:
        return
    client = request.headers.get("authorization") or (
        request.client.host if request.client else "unknown"
    )
    try:
        decision = await rt.limiter.check(rate_key(namespace, client))
    except BackendUnavailable:
        if not rt.settings.rate_limit.fail_open:
            raise
        RATE_LIMITED.labels("fail_open").inc()
        logger.warning("rate limiter unavailable, admitting")
        return
    if not decision.allowed:
        RATE_LIMITED.labels("refused").inc()
        raise RateLimited(
            f"too many requests for namespace {namespace!r}; retry in {decision.retry_after:.1f}s",
            retry_after=decision.retry_after,
        )


M = TypeVar("M", bound=BaseModel)


async def json_body(request: Request, model: type[M]) -> M:
    """Parse and validate a JSON body in one pass (pydantic's own JSON parser).

    The hot routes use this instead of a FastAPI body parameter: it skips a ``json.loads``
    into Python objects and a second validation pass; errors are reported the same way.
    """
    await require_json(request)
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


def json_body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a body that ``json_body`` reads."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }
