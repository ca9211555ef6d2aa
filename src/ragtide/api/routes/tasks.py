"""Dialogue tasks: submit a chat turn or an ingestion job to the workers, read its outcome.

The router has its own lifespan (FastAPI runs it inside the app's, after the runtime
started): with ``rabbitmq.url`` set it builds the result store and a publisher that
connects on first use; without it, every task route answers 501 ``tasks_disabled``.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError
from starlette.responses import Response

from ragtide.api.deps import JSONResponse, body_errors, call, principal, require_json
from ragtide.api.errors import responses
from ragtide.api.schemas import NamespacePath
from ragtide.components import ResultStore
from ragtide.errors import InvalidRequest, TaskNotFound, TasksDisabled
from ragtide.registry import Registry
from ragtide.webhooks import check_callback_url
from ragtide.worker.client import TaskClient
from ragtide.worker.tasks import ChatTaskRequest, IngestTaskRequest, TaskRequest, public

__all__ = ["router"]


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.tasks = None
    rt = getattr(app.state, "runtime", None)
    if rt is None or rt.settings.rabbitmq.url is None:
        yield
        return
    from ragtide.worker.broker import Publisher  # aio-pika only when tasks are enabled

    settings = rt.settings
    results = Registry.from_entry_points(settings.plugins.allow).build(
        ResultStore, settings.result_store
    )
    start = getattr(results, "start", None)
    if start is not None:
        await start()
    client = TaskClient(results, Publisher(settings.rabbitmq))
    app.state.tasks = client
    try:
        yield
    finally:
        app.state.tasks = None
        await client.aclose()


router = APIRouter(prefix="/v1/namespaces/{namespace}/tasks", tags=["tasks"], lifespan=_lifespan)


def _client(request: Request) -> TaskClient:
    client: TaskClient | None = getattr(request.app.state, "tasks", None)
    if client is None:
        raise TasksDisabled("tasks are disabled on this server: it has no rabbitmq.url")
    return client


@functools.cache
def _requests() -> TypeAdapter[ChatTaskRequest | IngestTaskRequest]:
    return TypeAdapter(TaskRequest)


def _parse(body: bytes) -> ChatTaskRequest | IngestTaskRequest:
    """The body, validated strictly ("5" is not a number): 422 when it is not a task."""
    try:
        return _requests().validate_json(body, strict=True)
    except ValidationError as exc:
        raise RequestValidationError(body_errors(exc)) from None


def _body_schema() -> dict[str, Any]:
    # One schema for the union: its $defs (the two requests, InlineDocument) are hoisted
    # into components/schemas, with the discriminator's mapping, when the document is built.
    schema = _requests().json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _location(namespace: str, task_id: str) -> str:
    return f"/v1/namespaces/{namespace}/tasks/{task_id}"


@router.post(
    "",
    status_code=202,
    openapi_extra=_body_schema(),
    responses=responses(401, 403, 404, 409, 413, 415, 422, 429, 500, 501, 503),
)
async def submit_task(namespace: NamespacePath, request: Request) -> Response:
    """Queue a chat turn (``kind: chat``) or an ingestion job (``kind: ingest``).

    202 with the task's id and status, and its URL in ``Location``. The same
    ``idempotency_key`` again names the same task (``Idempotent-Replayed: true``).
    """
    who = await principal(request)
    client = _client(request)
    await require_json(request)
    body = _parse(await request.body())
    chat_task = isinstance(body, ChatTaskRequest)
    c = await call(request, "read" if chat_task else "write", "chat" if chat_task else "write")
    opened = await c.open(namespace, "chat" if chat_task else "write")
    await c.rt.require_namespace(opened.key)
    if isinstance(body, ChatTaskRequest):
        limit = c.rt.settings.chat.max_message_chars
        if not body.message.strip():
            raise InvalidRequest("message must not be empty")
        if len(body.message) > limit:
            raise InvalidRequest(f"message is longer than {limit} characters")
        await c.tenants.check_daily(who.tenant)
    else:
        size = sum(len(d.text.encode()) for d in body.documents)
        await c.tenants.check_storage(who.tenant, documents=len(body.documents), bytes_=size)
    if body.callback_url is not None:
        await check_callback_url(str(body.callback_url), c.rt.settings.webhooks)
    submitted = await client.submit(opened.key, body, opened.filter)
    record = submitted.record
    headers = {"Location": _location(namespace, record["task_id"])}
    if not submitted.created:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(public(record), 202, headers=headers)


@router.get("/{task_id}", responses=responses(401, 403, 404, 422, 500, 501, 503))
async def get_task(namespace: NamespacePath, task_id: str, request: Request) -> Response:
    """A task's status (queued, running, done, failed), its result or its error."""
    c = await call(request, "read")
    client = _client(request)
    opened = await c.open(namespace, "read")
    await c.rt.require_namespace(opened.key)
    record = await client.get(opened.key, task_id) if len(task_id) <= 128 else None
    if record is None:
        raise TaskNotFound(namespace, task_id)
    return JSONResponse(public(record))
