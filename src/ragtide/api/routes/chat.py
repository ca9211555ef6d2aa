"""Chat turns (JSON or server-sent events), sessions and retrieval-only search."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response, StreamingResponse

from ragtide import chat
from ragtide.api.deps import JSONResponse, json_body, json_body_schema, rate_limit, runtime
from ragtide.api.errors import status_for
from ragtide.api.schemas import (
    ChatRequest,
    SearchRequest,
    render_answer,
    render_citation,
    render_hit,
    render_turn,
)
from ragtide.errors import InvalidRequest, RagtideError, SessionNotFound
from ragtide.runtime import Runtime

router = APIRouter(prefix="/v1/namespaces/{namespace}", tags=["chat"])

Rt = Annotated[Runtime, Depends(runtime)]


def _event(name: str, data: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


@router.post("/chat", openapi_extra=json_body_schema(ChatRequest))
async def chat_turn(namespace: str, request: Request) -> Response:
    """Answer one turn. With ``stream``: events ``token``*, ``citations``, ``done``."""
    rt = await runtime(request)
    body = await json_body(request, ChatRequest)
    await rate_limit(request)
    if not body.stream:
        answer = await chat.answer(rt, namespace, body.message, body.session_id)
        return JSONResponse(render_answer(answer))
    events = await chat.stream_answer(rt, namespace, body.message, body.session_id)

    async def sse() -> AsyncIterator[bytes]:
        try:
            async for event in events:
                if isinstance(event, chat.Token):
                    yield _event("token", {"text": event.text})
                else:
                    answer = event.answer
                    yield _event(
                        "citations",
                        {
                            "session_id": answer.session_id,
                            "citations": [render_citation(c) for c in answer.citations],
                        },
                    )
                    yield _event("done", render_answer(answer))
        except RagtideError as exc:  # headers are gone: report in-band
            yield _event(
                "error", {"code": exc.code, "message": exc.message, "status": status_for(exc)}
            )

    return StreamingResponse(
        sse(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post("/search", openapi_extra=json_body_schema(SearchRequest))
async def search(namespace: str, request: Request) -> Response:
    """Retrieval only: the best chunks for ``query``, best first."""
    rt = await runtime(request)
    body = await json_body(request, SearchRequest)
    await rate_limit(request)
    if body.top_k > rt.settings.retrieval.max_top_k:
        raise InvalidRequest(f"top_k must be at most {rt.settings.retrieval.max_top_k}")
    hits = await chat.search(rt, namespace, body.query, body.top_k)
    return JSONResponse({"results": [render_hit(h) for h in hits]})


@router.get("/sessions/{session_id}")
async def get_session(namespace: str, session_id: str, rt: Rt) -> Response:
    await rt.require_namespace(namespace)
    turns = await rt.memory.load(namespace, session_id, limit=10_000)
    if not turns:
        raise SessionNotFound(namespace, session_id)
    return JSONResponse(
        {"namespace": namespace, "session_id": session_id, "turns": [render_turn(t) for t in turns]}
    )


@router.delete("/sessions/{session_id}", status_code=204)
async def delete_session(namespace: str, session_id: str, rt: Rt) -> Response:
    await rt.require_namespace(namespace)
    if not await rt.memory.delete(namespace, session_id):
        raise SessionNotFound(namespace, session_id)
    return Response(status_code=204)
