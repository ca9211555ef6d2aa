"""The OpenAI surface, so existing clients and SDKs can talk to Ragtide unmodified.

- ``GET /v1/models`` lists the namespaces the caller's credential may read (in its own
  tenant) as OpenAI models, plus the alias ``ragtide`` for ``default`` when that exists;
  ``GET /v1/models/{model}`` shows one (404 for any other name).
- ``POST /v1/chat/completions``: ``model`` names the namespace (``"ragtide"`` means
  ``default``). The conversation comes with every request, as OpenAI clients send it, so
  these turns are stateless: nothing is read from or written to the session store.
  Answers carry their ``citations``, ``grounding`` (what the retrieved chunks support,
  as on ``/chat``) and ``tool_calls`` (the tenant's server-side tools the model called)
  as extra fields, in the final chunk when streaming (whose ``grounding`` may say the
  text was stripped or declined: the content already streamed is then superseded by
  the extra field ``answer`` of that chunk);
  ``stream_options.include_usage`` adds OpenAI's usage chunk (``choices: []``) last.
  ``n`` must be 1 (one answer per turn); client-defined ``tools`` and ``functions``
  are refused (422): tools run on the server, enabled per tenant (``tools`` in the tenant
  record). ``user`` is recorded in the log line
  of the turn (never as a metric label). ``max_tokens`` (or ``max_completion_tokens``)
  and ``temperature`` reach the configured chat model through ``Prompt.options``; the
  extractive model has no such knobs and ignores them.

Errors on these routes (only) have OpenAI's shape, a superset of the API's own (so the
contract's ``Error`` schema stays true): ``{"error": {"message", "type", "code",
"param"}}``, ``code`` being the stable code of the README's error table and ``type``
OpenAI's class of it (``invalid_request_error``, ``authentication_error``,
``permission_error``, ``not_found_error``, ``rate_limit_error``, ``api_error``), with
the same statuses and headers (Retry-After, WWW-Authenticate) as everywhere else.
Malformed requests stay 422, as on every other route (OpenAI says 400; its SDK raises
``UnprocessableEntityError`` for a 422).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ragtide import chat
from ragtide.api.deps import Call, JSONResponse, call, json_body, json_body_schema
from ragtide.api.errors import (
    _describe,
    _for_ragtide_error,
    _validation_code,
    responses,
    status_for,
)
from ragtide.api.routes.chat import EventStream, count_turn, event_stream, tool_context
from ragtide.api.schemas import NAMESPACE_PATTERN, render_citation, render_grounding
from ragtide.errors import (
    InvalidNamespace,
    InvalidRequest,
    NamespaceNotFound,
    RagtideError,
)
from ragtide.types import DEFAULT_NAMESPACE, Answer, ChatTurn, split_namespace_key

__all__ = ["ALIAS", "router"]

logger = logging.getLogger(__name__)

ALIAS = "ragtide"  # the model name of the default namespace


# --- OpenAI-shaped errors ---------------------------------------------------------------

_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def _error_type(status: int) -> str:
    return _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


class _BadParam(InvalidRequest):
    """422 ``invalid_request`` about one request field (OpenAI's ``param``)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def _param(loc: tuple[Any, ...]) -> str | None:
    """``messages[0].content`` from pydantic's ``("messages", 0, "content")`` (a body
    that ``json_body`` read) or ``("body", "messages", 0, "content")``."""
    if loc and loc[0] in ("body", "path", "query", "header"):
        loc = loc[1:]
    if not loc or isinstance(loc[0], int):
        return None
    out = str(loc[0])
    for part in loc[1:]:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _common_loc(errs: list[dict[str, Any]]) -> tuple[Any, ...]:
    """The field all ``errs`` are about: a union's alternatives each add their own tag
    (``("messages", 0, "content", "str")``); the first error's field if they differ."""
    locs = [tuple(e.get("loc", ())) for e in errs]
    common: list[Any] = []
    for parts in zip(*locs, strict=False):
        if any(p != parts[0] for p in parts):
            break
        common.append(parts[0])
    names_a_field = len(common) > (1 if common[:1] == ["body"] else 0)
    return tuple(common) if names_a_field else locs[0]


def _openai_error(
    status: int,
    code: str,
    message: str,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    error = {"message": message, "type": _error_type(status), "param": param, "code": code}
    return Response(
        orjson.dumps({"error": error}), status, headers=headers, media_type="application/json"
    )


def _from_ragtide_error(exc: RagtideError) -> Response:
    plain = _for_ragtide_error(exc)  # the status, Retry-After, WWW-Authenticate, the log
    headers = {
        k: v for k, v in plain.headers.items() if k not in ("content-length", "content-type")
    }
    param = getattr(exc, "param", None)
    if isinstance(exc, NamespaceNotFound | InvalidNamespace):
        param = "model"
    return _openai_error(plain.status_code, exc.code, exc.message, param, headers)


def _from_validation_error(exc: RequestValidationError) -> Response:
    errs = list(exc.errors())
    code, rule = _validation_code(errs)
    message = rule or "; ".join(_describe(e) for e in errs[:5]) or "invalid request"
    param = None if code == "invalid_json" or not errs else _param(_common_loc(errs))
    return _openai_error(422, code, message, param)


def _from_http_error(exc: StarletteHTTPException) -> Response:
    if exc.status_code == 400:  # a body Starlette could not parse: 422, as everywhere
        return _openai_error(422, "invalid_request", f"malformed body: {exc.detail}")
    codes = {413: "payload_too_large", 415: "unsupported_media_type", 404: "not_found"}
    code = codes.get(exc.status_code, f"http_{exc.status_code}")
    return _openai_error(exc.status_code, code, str(exc.detail), None, dict(exc.headers or {}))


class OpenAIRoute(APIRoute):
    """A route whose errors (raised while it handles the request) have OpenAI's shape.

    What the app answers before a route runs (an unknown path, a wrong method, a body
    whose Content-Length is over the limit, an overloaded replica) keeps the API's
    ``{"error": {"code", "message"}}``, which OpenAI clients read just as well.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def openai_errors(request: Request) -> Response:
            try:
                return await handle(request)
            except RagtideError as exc:
                return _from_ragtide_error(exc)
            except RequestValidationError as exc:
                return _from_validation_error(exc)
            except StarletteHTTPException as exc:
                return _from_http_error(exc)

        return openai_errors


router = APIRouter(tags=["openai"], route_class=OpenAIRoute)


# --- models -------------------------------------------------------------------------------


class OpenAIModel(BaseModel):
    model_config = ConfigDict(title="OpenAIModel")
    id: str = Field(description="The namespace, or 'ragtide' for the default namespace.")
    object: Literal["model"] = "model"
    created: int = Field(description="Always 0: namespaces do not record when they were made.")
    owned_by: str = Field(description="The caller's tenant.")


class OpenAIModelList(BaseModel):
    model_config = ConfigDict(title="OpenAIModelList")
    object: Literal["list"] = "list"
    data: list[OpenAIModel]


async def _models(c: Call) -> list[dict[str, Any]]:
    """The caller's namespaces as OpenAI models: the alias first, then by name.

    A namespace literally named ``ragtide`` is left out: that model name means ``default``.
    """
    prefix = f"{c.principal.tenant}/"
    names = sorted(
        name
        for name in (split_namespace_key(k)[1] for k in await c.rt.store.list_namespaces(prefix))
        if c.principal.may_use(name) and name != ALIAS
    )
    if DEFAULT_NAMESPACE in names:
        names.insert(0, ALIAS)
    owner = c.principal.tenant
    return [{"id": n, "object": "model", "created": 0, "owned_by": owner} for n in names]


@router.get(
    "/v1/models",
    responses={
        200: {"model": OpenAIModelList, "description": "The models this credential may use."},
        **responses(401, 403, 500, 503),
    },
)
async def list_models(request: Request) -> Response:
    """The namespaces this credential may read, as OpenAI models (``ragtide`` = default)."""
    c = await call(request, "read")
    return JSONResponse({"object": "list", "data": await _models(c)})


@router.get(
    "/v1/models/{model}",
    responses={
        200: {"model": OpenAIModel, "description": "The model."},
        **responses(401, 403, 404, 422, 500, 503),
    },
)
async def get_model(model: str, request: Request) -> Response:
    """One model of ``GET /v1/models``; 404 ``namespace_not_found`` for any other name."""
    c = await call(request, "read")
    for found in await _models(c):
        if found["id"] == model:
            return JSONResponse(found)
    raise NamespaceNotFound(model)


# --- chat completions -----------------------------------------------------------------------


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    include_usage: bool = False


def _state_rules(schema: dict[str, Any]) -> None:
    """Rules the route checks itself (for its clearer messages), stated for clients."""
    props = schema.get("properties", {})
    if "n" in props:
        props["n"] = {
            "anyOf": [{"type": "integer", "minimum": 1, "maximum": 1}, {"type": "null"}],
            "default": None,
            "title": "N",
            "description": "How many choices: only 1 is supported.",
        }


class CompletionRequest(BaseModel):
    # extra: top_p, stop, ...: ignored. strict: "yes" is not a boolean.
    model_config = ConfigDict(extra="ignore", strict=True, json_schema_extra=_state_rules)
    model: str = Field(
        description="The namespace to answer from ('ragtide' = default).",
        json_schema_extra={"pattern": NAMESPACE_PATTERN},
    )
    messages: list[Message] = Field(
        min_length=1,
        description="The conversation; the last message must be a non-empty user message.",
    )
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    user: str | None = Field(default=None, description="The end user; recorded in the logs.")
    tools: list[dict[str, Any]] | None = Field(
        default=None,
        description="Refused (422): tools run on the server, enabled per tenant.",
    )
    functions: list[dict[str, Any]] | None = Field(
        default=None,
        description="Refused (422): tools run on the server, enabled per tenant.",
    )


def _text(message: Message) -> str:
    content = message.content
    if content is None or isinstance(content, str):
        return content or ""
    for part in content:
        if part.type != "text":
            raise _BadParam("messages", f"content parts of type {part.type!r} are not supported")
    return "\n".join(part.text or "" for part in content)


def _turns(messages: list[Message]) -> tuple[str, list[ChatTurn]]:
    last = _text(messages[-1])
    if messages[-1].role != "user" or not last.strip():
        raise _BadParam("messages", "the last message must be a non-empty user message")
    history = [
        ChatTurn(m.role, text)
        for m in messages[:-1]
        if m.role in ("user", "assistant") and (text := _text(m))
    ]
    return last, history


def _check(body: CompletionRequest) -> None:
    if body.n is not None and body.n != 1:
        raise _BadParam("n", f"n={body.n} is not supported: Ragtide gives one choice (n=1)")
    for field in ("tools", "functions"):
        if getattr(body, field):
            message = (
                f"client-defined tools are not supported: leave out {field!r} (tools run "
                "on the server, enabled per tenant)"
            )
            raise _BadParam(field, message)


def _usage(answer: Answer) -> dict[str, int]:
    """OpenAI's usage from the chat model's report (0 when it reports none)."""
    prompt = int(answer.usage.get("prompt_tokens", 0))
    completion = int(answer.usage.get("completion_tokens", 0))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _chunk(
    ident: str,
    created: int,
    model: str,
    choices: list[dict[str, Any]],
    **extra: Any,
) -> bytes:
    body = {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
        **extra,
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


def _choice(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
    return [{"index": 0, "delta": delta, "finish_reason": finish}]


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
    """An OpenAI chat completion. 422 also when the last message is not a user's, for
    ``n`` other than 1, and for ``tools``. Error bodies also carry OpenAI's ``type`` and
    ``param``."""
    c = await call(request, "read", "chat")
    body = await json_body(request, CompletionRequest)
    _check(body)
    namespace = DEFAULT_NAMESPACE if body.model == ALIAS else body.model
    message, history = _turns(body.messages)
    opened = await c.open(namespace, "chat")
    await c.tenants.check_daily(c.principal.tenant)
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if body.user is not None:
        logger.info(
            "chat completion",
            extra={"end_user": body.user[:256], "model": body.model, "stream": body.stream},
        )
    options = _options(body)
    tools = tool_context(c, opened)
    if not body.stream:
        answer = await chat.answer(
            c.rt,
            opened.key,
            message,
            history=history,
            filter=opened.filter,
            options=options,
            tools=tools,
        )
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
                "usage": _usage(answer),
                **_extras(answer),
            }
        )
    events = await chat.stream_answer(
        c.rt,
        opened.key,
        message,
        history=history,
        filter=opened.filter,
        on_answer=lambda answer: count_turn(c, answer),
        options=options,
        tools=tools,
    )
    include_usage = body.stream_options is not None and body.stream_options.include_usage
    # With include_usage every chunk carries "usage": null, and one more chunk the totals.
    extra: dict[str, Any] = {"usage": None} if include_usage else {}

    async def sse() -> AsyncGenerator[bytes, None]:
        try:
            role = {"role": "assistant", "content": ""}
            yield _chunk(ident, created, body.model, _choice(role), **extra)
            async for event in events:
                if isinstance(event, chat.Token):
                    delta = {"content": event.text}
                    yield _chunk(ident, created, body.model, _choice(delta), **extra)
                elif isinstance(event, chat.Done):
                    yield _chunk(
                        ident,
                        created,
                        body.model,
                        _choice({}, "stop"),
                        answer=event.answer.text,
                        **_extras(event.answer),
                        **extra,
                    )
                    if include_usage:
                        usage = _usage(event.answer)
                        yield _chunk(ident, created, body.model, [], usage=usage)
        except RagtideError as exc:
            status = status_for(exc)
            error = {
                "message": exc.message,
                "type": _error_type(status),
                "param": None,
                "code": exc.code,
                "status": status,
            }
            yield b"data: " + orjson.dumps({"error": error}) + b"\n\n"
        finally:
            await events.aclose()
        yield b"data: [DONE]\n\n"

    return EventStream(sse())


def _extras(answer: Answer) -> dict[str, Any]:
    """Ragtide's extra fields of a completion (the final chunk of a stream)."""
    return {
        "citations": [render_citation(x) for x in answer.citations],
        "grounding": render_grounding(answer.grounding),
        "tool_calls": [dict(call) for call in answer.tool_calls],
    }


def _options(body: CompletionRequest) -> dict[str, Any]:
    """The generation options of a request, for the chat model (``Prompt.options``)."""
    options: dict[str, Any] = {}
    max_tokens = body.max_completion_tokens or body.max_tokens
    if max_tokens is not None:
        options["max_tokens"] = max_tokens
    if body.temperature is not None:
        options["temperature"] = body.temperature
    return options
