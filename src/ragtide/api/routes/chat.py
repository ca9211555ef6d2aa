"""Chat turns (JSON or server-sent events), sessions and retrieval-only search."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Annotated, Any

import anyio
import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from ragtide import chat
from ragtide.api.deps import Call, JSONResponse, call, json_body, json_body_schema
from ragtide.api.errors import responses, status_for
from ragtide.api.schemas import (
    SESSION_CURSOR_PATTERN,
    ChatAnswer,
    ChatRequest,
    NamespacePath,
    SearchRequest,
    SessionIdPath,
    SessionRename,
    render_answer,
    render_citation,
    render_hit,
    render_session,
    render_turn,
    session_cursor,
    session_cursor_value,
)
from ragtide.errors import DocumentNotFound, InvalidRequest, RagtideError, SessionNotFound
from ragtide.tenants import Opened
from ragtide.tools import ToolContext
from ragtide.types import Answer, Hit

router = APIRouter(prefix="/v1/namespaces/{namespace}", tags=["chat"])


# The 200 of a route that streams when asked (``stream: true``).
def event_stream(events: list[str] | None) -> dict[str, Any]:
    """The ``text/event-stream`` content: its schema describes one event (OpenAPI 3.1)."""
    event: dict[str, Any] = {"type": "string"}
    if events:
        event["enum"] = events
    return {
        "text/event-stream": {
            "schema": {
                "type": "object",
                "description": "One server-sent event.",
                "properties": {
                    "event": event,
                    "data": {"type": "string", "description": "JSON (or [DONE])."},
                },
                "required": ["data"],
            }
        }
    }


EVENT_STREAM = event_stream(["token", "tool_call", "tool_result", "citations", "done", "error"])


def _event(name: str, data: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


@router.post(
    "/chat",
    openapi_extra=json_body_schema(ChatRequest),
    responses={
        200: {
            "model": ChatAnswer,
            "description": "The answer; with ``stream``, events ``token``* (with tools, "
            "``tool_call`` and ``tool_result`` first), ``citations``, ``done`` (a "
            "ChatAnswer whose ``answer`` replaces the streamed tokens).",
            "content": EVENT_STREAM,
        },
        **responses(401, 403, 404, 413, 415, 422, 429, 500, 502, 503, 504),
    },
)
async def chat_turn(namespace: NamespacePath, request: Request) -> Response:
    """Answer one turn. With ``stream``: events ``token``*, ``citations``, ``done``."""
    c = await call(request, "read", "chat")
    body = await json_body(request, ChatRequest)
    opened = await c.open(namespace, "chat")
    await c.tenants.check_daily(c.principal.tenant)
    tools = tool_context(c, opened)
    if not body.stream:
        answer = await chat.answer(
            c.rt, opened.key, body.message, body.session_id, filter=opened.filter, tools=tools
        )
        await count_turn(c, answer)
        return JSONResponse(render_answer(answer))
    events = await chat.stream_answer(
        c.rt,
        opened.key,
        body.message,
        body.session_id,
        filter=opened.filter,
        on_answer=lambda answer: count_turn(c, answer),
        tools=tools,
    )

    async def sse() -> AsyncGenerator[bytes, None]:
        try:
            async for event in events:
                if isinstance(event, chat.Token):
                    yield _event("token", {"text": event.text})
                elif isinstance(event, chat.ToolCall):
                    yield _event(
                        "tool_call",
                        {
                            "step": event.step,
                            "call_id": event.call_id,
                            "name": event.name,
                            "arguments": event.arguments,
                        },
                    )
                elif isinstance(event, chat.ToolResult):
                    yield _event("tool_result", dict(event.call))
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
        finally:
            await events.aclose()

    return EventStream(sse())


class EventStream(StreamingResponse):
    """Server-sent events from an async generator that is closed however the response ends.

    When the client disconnects, Starlette cancels the response: if the cancellation
    lands inside the generator (waiting for the chat model), it unwinds it; if it lands in
    ``send``, Starlette leaves the generator suspended at a ``yield`` and it would only be
    closed when garbage-collected (and with ASGI 2.4 servers Starlette just stops on the
    failed ``send``). Closing it here, shielded, runs its ``finally`` blocks at once: the
    chat turn is abandoned and the chat model's stream (an LLM request) closed now.
    """

    def __init__(self, events: AsyncGenerator[bytes, None]) -> None:
        super().__init__(
            events,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._events.aclose()


@router.post(
    "/search",
    openapi_extra=json_body_schema(SearchRequest),
    responses=responses(401, 403, 404, 413, 415, 422, 429, 500, 503),
)
async def search(namespace: NamespacePath, request: Request) -> Response:
    """Retrieval only: the best chunks for ``query``, best first."""
    c = await call(request, "read", "search")
    body = await json_body(request, SearchRequest)
    if body.top_k > c.rt.settings.retrieval.max_top_k:
        raise InvalidRequest(f"top_k must be at most {c.rt.settings.retrieval.max_top_k}")
    opened = await c.open(namespace, "search")
    hits = await chat.search(c.rt, opened.key, body.query, body.top_k, opened.filter)
    return JSONResponse({"results": [render_hit(h) for h in hits]})


def tool_context(c: Call, opened: Opened) -> ToolContext | None:
    """What the tenant's tools may reach in this turn: only namespaces the caller's
    credential may read, through the same ``open`` (key, policies, filter) as the caller's
    own requests; a search in another namespace takes from the tenant's search rate."""
    if not c.rt.tools:
        return None

    async def target(name: str | None, action: Any) -> Opened:
        if name is None or name == opened.name:
            return opened
        found = await c.open(name, action)
        await c.rt.require_namespace(found.key)
        return found

    async def search_in(name: str | None, query: str, top_k: int) -> Sequence[Hit]:
        found = await target(name, "search")
        if found is not opened:
            await c.tenants.admit(c.principal, "search")
        top_k = min(top_k, c.rt.settings.retrieval.max_top_k)
        return await chat.search(c.rt, found.key, query, top_k, found.filter)

    async def document_in(name: str | None, document_id: str) -> Mapping[str, Any] | None:
        found = await target(name, "read")
        try:
            doc = await c.document(found, document_id)
        except DocumentNotFound:
            return None
        chunks = await c.rt.store.document_chunks(found.key, document_id, limit=50)
        return {
            "document_id": doc.id,
            "title": doc.title,
            "source": doc.source,
            "text": "\n\n".join(chunk.text for chunk in chunks),
        }

    return chat.tool_context(opened.name, search_in, document_in)


async def count_turn(c: Call, answer: Answer) -> None:
    """Count a turn and its tokens against the tenant's daily quotas."""
    tenant = c.principal.tenant
    await c.tenants.count_daily(tenant, "chat_turns", 1)
    tokens = sum(answer.usage.get(k, 0) for k in ("prompt_tokens", "completion_tokens"))
    await c.tenants.count_daily(tenant, "llm_tokens", tokens)


_SESSION = responses(401, 403, 404, 422, 500, 503)


@router.get("/sessions/{session_id}", responses=_SESSION)
async def get_session(
    namespace: NamespacePath, session_id: SessionIdPath, request: Request
) -> Response:
    c = await call(request, "read")
    opened = await c.open(namespace, "read")
    await c.rt.require_namespace(opened.key)
    turns = await c.rt.memory.load(opened.key, session_id, limit=10_000)
    if not turns:
        raise SessionNotFound(namespace, session_id)
    return JSONResponse(
        {"namespace": namespace, "session_id": session_id, "turns": [render_turn(t) for t in turns]}
    )


@router.delete("/sessions/{session_id}", status_code=204, responses=_SESSION)
async def delete_session(
    namespace: NamespacePath, session_id: SessionIdPath, request: Request
) -> Response:
    c = await call(request, "read")
    opened = await c.open(namespace, "read")
    await c.rt.require_namespace(opened.key)
    if not await c.rt.memory.delete(opened.key, session_id):
        raise SessionNotFound(namespace, session_id)
    return Response(status_code=204)


@router.get("/sessions", responses=_SESSION)
async def list_sessions(
    namespace: NamespacePath,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000, description="Sessions per page.")] = 100,
    after: Annotated[
        str | None,
        Query(pattern=SESSION_CURSOR_PATTERN, description="The previous page's `next`."),
    ] = None,
) -> Response:
    """The namespace's sessions, the most recently updated first (ties: greater id first),
    a page at a time; ``next`` is null on the last page. Every credential that may read
    the namespace sees all of them, as it may read each."""
    c = await call(request, "read")
    opened = await c.open(namespace, "read")
    await c.rt.require_namespace(opened.key)
    found = await c.rt.memory.list_sessions(
        opened.key, limit=limit + 1, after=session_cursor_value(after) if after else None
    )
    page = found[:limit]
    return JSONResponse(
        {
            "namespace": namespace,
            "sessions": [render_session(s) for s in page],
            "next": session_cursor(page[-1]) if len(found) > limit else None,
        }
    )


@router.patch(
    "/sessions/{session_id}",
    openapi_extra=json_body_schema(SessionRename),
    responses=responses(401, 403, 404, 413, 415, 422, 500, 503),
)
async def rename_session(
    namespace: NamespacePath, session_id: SessionIdPath, request: Request
) -> Response:
    """Give a session a title (later turns keep it); answers the session as listed."""
    c = await call(request, "read")
    body = await json_body(request, SessionRename)
    opened = await c.open(namespace, "read")
    await c.rt.require_namespace(opened.key)
    renamed = await c.rt.memory.rename(opened.key, session_id, " ".join(body.title.split()))
    if renamed is None:
        raise SessionNotFound(namespace, session_id)
    return JSONResponse(render_session(renamed))
