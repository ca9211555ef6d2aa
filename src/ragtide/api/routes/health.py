"""Liveness, readiness and metrics: the probes an orchestrator and Prometheus use."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4 as METRICS_TYPE
from starlette.responses import Response

from ragtide.api.deps import JSONResponse
from ragtide.errors import RagtideError
from ragtide.observability import READY

logger = logging.getLogger(__name__)

router = APIRouter(tags=["operations"])

READY_TIMEOUT_S = 2.0


_STATUS = {"type": "object", "properties": {"status": {"type": "string"}}, "required": ["status"]}
_UNREADY = {
    "type": "object",
    "properties": {"status": {"type": "string"}, "reason": {"type": "string"}},
    "required": ["status", "reason"],
}


@router.get("/healthz", responses={200: {"content": {"application/json": {"schema": _STATUS}}}})
async def healthz() -> Response:
    """The process is alive. Touches no dependency."""
    return JSONResponse({"status": "ok"})


@router.get(
    "/ready",
    responses={
        200: {"content": {"application/json": {"schema": _STATUS}}},
        503: {
            "description": "Not ready: starting, draining, or a dependency does not answer.",
            "content": {"application/json": {"schema": _UNREADY}},
        },
    },
)
async def ready(request: Request) -> Response:
    """200 once the models are loaded and every store answers; 503 with the reason otherwise."""
    state = request.app.state
    reason = None
    if getattr(state, "draining", False):
        reason = "draining"
    elif state.runtime is None or not state.runtime.started:
        reason = "starting: components are loading"
    else:
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):  # never swallows a cancellation
                await state.runtime.check_ready()
        except RagtideError as exc:
            reason = exc.message
        except TimeoutError:
            reason = f"a dependency did not answer within {READY_TIMEOUT_S}s"
        except Exception as exc:  # a probe must answer, whatever a component raised
            logger.warning("readiness check failed", exc_info=True)
            reason = f"readiness check failed: {type(exc).__name__}"
    READY.set(0 if reason else 1)
    if reason:
        return JSONResponse({"status": "unavailable", "reason": reason}, 503)
    return JSONResponse({"status": "ready"})


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus metrics, in the text exposition format.",
            "content": {METRICS_TYPE: {"schema": {"type": "string"}}},
        }
    },
)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=METRICS_TYPE)
