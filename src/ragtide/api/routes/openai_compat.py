"""OpenAI-compatible chat completions, so existing clients and SDKs can talk to Ragtide.

``model`` names the namespace (``"ragtide"`` means ``default``). The conversation comes
with every request, as OpenAI clients send it, so these turns are stateless: nothing is
read from or written to the session store. Answers carry their ``citations`` as an
extra field, in the final chunk when streaming.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from ragtide import chat
from ragtide.api.deps import JSONResponse, call, json_body, json_body_schema
from ragtide.api.errors import responses, status_for
from ragtide.api.routes.chat import EventStream, count_turn, event_stream
from ragtide.api.schemas import NAMESPACE_PATTERN, render_citation
from ragtide.errors import InvalidRequest, RagtideError
from ragtide.types import DEFAULT_NAMESPACE, ChatTurn

router = APIRouter(tags=["openai"])


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | None = None


class CompletionRequest(BaseModel):
    # extra: temperature, top_p, ...: not ours to tune. strict: "yes" is not a boolean.
    model_config = ConfigDict(extra="ignore", strict=True)
    model: str = Field(
        description="The namespace to answer from ('ragtide' = default).",
        json_schema_extra={"pattern": NAMESPACE_PATTERN},
    )
    messages: list[Message] = Field(
        min_length=1,
        description="The conversation; the last message must be a non-empty user message.",
    )
    stream: bool = False


def _turns(messages: list[Message]) -> tuple[str, list[ChatTurn]]:
    last = messages[-1]
    if last.role != "user" or not (last.content or "").strip():
        raise InvalidRequest("the last message must be a non-empty user message")
    history = [
        ChatTurn(m.role, m.content or "")
        for m in messages[:-1]
        if m.role in ("user", "assistant") and m.content
    ]
    return last.content or "", history


def _chunk(
    ident: str,
    created: int,
    model: str,
    delta: dict[str, Any],
    finish: str | None = None,
    **extra: Any,
) -> bytes:
    body = {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


@router.post(
    "/v1/chat/completions",
    openapi_extra=json_body_schema(CompletionRequest),
    responses={
        200: {
            "description": "The completion; with ``stream``, chunks as server-sent events.",
            "content": event_stream(None),
        },
        **responses(401, 403, 404, 413, 415, 422, 429, 500, 502, 503, 504),
    },
)
async def completions(request: Request) -> Response:
    """An OpenAI chat completion. 422 also when the last message is not a user's."""
    c = await call(request, "read", "chat")
    body = await json_body(request, CompletionRequest)
    namespace = DEFAULT_NAMESPACE if body.model == "ragtide" else body.model
    message, history = _turns(body.messages)
    opened = await c.open(namespace, "chat")
    await c.tenants.check_daily(c.principal.tenant)
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if not body.stream:
        answer = await chat.answer(c.rt, opened.key, message, history=history, filter=opened.filter)
        await count_turn(c, answer)
        return JSONResponse(
            {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": body.model,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": answer.text},
                    }
                ],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                "citations": [render_citation(c) for c in answer.citations],
            }
        )
    events = await chat.stream_answer(
        c.rt,
        opened.key,
        message,
        history=history,
        filter=opened.filter,
        on_answer=lambda answer: count_turn(c, answer),
    )

    async def sse() -> AsyncGenerator[bytes, None]:
        try:
            yield _chunk(ident, created, body.model, {"role": "assistant", "content": ""})
            async for event in events:
                if isinstance(event, chat.Token):
                    yield _chunk(ident, created, body.model, {"content": event.text})
                else:
                    citations = [render_citation(x) for x in event.answer.citations]
                    yield _chunk(ident, created, body.model, {}, "stop", citations=citations)
        except RagtideError as exc:
            error = {"code": exc.code, "message": exc.message, "status": status_for(exc)}
            yield b"data: " + orjson.dumps({"error": error}) + b"\n\n"
        finally:
            await events.aclose()
        yield b"data: [DONE]\n\n"

    return EventStream(sse())


__all__ = ["router"]
