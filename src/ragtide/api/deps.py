"""Small helpers the routes share: the runtime, JSON responses, content-type checks.

Dependencies are ``async def`` on purpose: FastAPI runs plain ``def`` dependencies in a
thread pool, a thread hop per request that cost more than the whole search.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response

from ragtide.errors import BackendUnavailable, UnsupportedMediaType
from ragtide.ingest.pipeline import Ingestor
from ragtide.runtime import Runtime

__all__ = ["JSONResponse", "ingestor", "require_json", "runtime"]


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
