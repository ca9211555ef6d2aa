"""The task model: what clients submit, what travels on the queue, the record clients read.

A task has an id fixed at submission: random, or derived from the client's
``idempotency_key`` (the same key in the same namespace is the same task). Its record in
the ``ResultStore`` goes ``queued → running → done | failed`` (back to ``queued`` between
attempts); ``public()`` is what ``GET …/tasks/{id}`` shows. Everything here is pure.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
import uuid
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from ragtide.api.schemas import SessionId
from ragtide.errors import InvalidRequest, RagtideError
from ragtide.types import (
    DEFAULT_TENANT,
    Condition,
    Filter,
    split_namespace_key,
    validate_namespace_key,
)

__all__ = [
    "FINISHED",
    "ChatTaskRequest",
    "IngestTaskRequest",
    "InlineDocument",
    "TaskMessage",
    "TaskRequest",
    "decode_message",
    "delivery_attempt",
    "describe_error",
    "documents_jsonl",
    "fingerprint",
    "new_record",
    "parse_request",
    "public",
    "task_id_for",
]

Status = Literal["queued", "running", "done", "failed"]
FINISHED = frozenset({"done", "failed"})
MAX_DOCUMENTS = 1000

_TASK_IDS = uuid.UUID("0b6f3f0e-5a43-4f7e-9a43-2a4f2d7e8c11")  # uuid5 namespace of task ids
_PUBLIC = ("task_id", "kind", "status", "result", "error", "attempts", "created_at", "updated_at")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Submission(_Strict):
    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="The same key in the same namespace always names the same task.",
    )
    callback_url: HttpUrl | None = Field(
        None, description="POSTed the finished task (best effort, bounded timeout)."
    )


class ChatTaskRequest(_Submission):
    kind: Literal["chat"]
    message: str = Field(min_length=1, description="The user's turn.")
    session_id: SessionId | None = Field(
        None, description="Continue this session; omit to start a new one (its id is returned)."
    )


class InlineDocument(_Strict):
    id: str = Field(min_length=1, max_length=512)
    title: str = Field("", max_length=1000)
    text: str = Field(min_length=1)

    @field_validator("id")
    @classmethod
    def _printable(cls, value: str) -> str:
        if value.strip() != value or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError("use 1-512 printable characters, no leading or trailing spaces")
        return value


class IngestTaskRequest(_Submission):
    kind: Literal["ingest"]
    documents: list[InlineDocument] = Field(min_length=1, max_length=MAX_DOCUMENTS)

    @field_validator("documents")
    @classmethod
    def _unique_ids(cls, documents: list[InlineDocument]) -> list[InlineDocument]:
        ids = [d.id for d in documents]
        if len(set(ids)) != len(ids):
            raise ValueError("document ids must be unique within a task")
        return documents


TaskRequest = Annotated[ChatTaskRequest | IngestTaskRequest, Field(discriminator="kind")]


@functools.cache
def _request_adapter() -> TypeAdapter[ChatTaskRequest | IngestTaskRequest]:
    return TypeAdapter(TaskRequest)


def parse_request(body: bytes) -> ChatTaskRequest | IngestTaskRequest:
    """Validate a ``POST …/tasks`` JSON body (pydantic's ``ValidationError`` if it is bad)."""
    return _request_adapter().validate_json(body)


class TaskMessage(_Strict):
    """The body of one queue message (version 1). The session of a chat is fixed here."""

    v: Literal[1] = 1
    task_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    namespace: str  # the store key, tenant/name
    request: TaskRequest
    # The submitter's access filter (its tenant's policies), applied by the worker as the
    # API would have: [{"field": ..., "values": [...]}, ...]; empty admits everything.
    filter: list[dict[str, Any]] = Field(default_factory=list, max_length=32)

    def access_filter(self) -> Filter:
        return Filter(
            tuple(Condition(str(c["field"]), frozenset(map(str, c["values"]))) for c in self.filter)
        )

    @property
    def kind(self) -> str:
        return self.request.kind

    def encode(self) -> bytes:
        return self.model_dump_json().encode()


def decode_message(body: bytes) -> TaskMessage:
    """The message in ``body``, or ``InvalidRequest`` saying why it cannot be one."""
    try:
        message = TaskMessage.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise InvalidRequest(f"undecodable task message: {where}: {first.get('msg')}") from None
    validate_namespace_key(message.namespace)
    return message.model_copy(update={"namespace": qualified(message.namespace)})


def qualified(namespace: str) -> str:
    """A message's namespace as a store key: a bare name, from a task queued before
    namespaces belonged to tenants, is the default tenant's (as the migrations moved it)."""
    return namespace if "/" in namespace else f"{DEFAULT_TENANT}/{namespace}"


def task_id_for(namespace: str, idempotency_key: str | None) -> str:
    """A fresh id, or the one id that ``idempotency_key`` names in ``namespace``."""
    if idempotency_key is None:
        return uuid.uuid4().hex
    return uuid.uuid5(_TASK_IDS, f"{namespace}\n{idempotency_key}").hex


def fingerprint(request: ChatTaskRequest | IngestTaskRequest) -> str:
    """Identifies a request as the client sent it, to tell a retry from a reused key."""
    return hashlib.sha256(request.model_dump_json().encode()).hexdigest()[:32]


def new_record(
    message: TaskMessage, request_fingerprint: str, now: float | None = None
) -> dict[str, Any]:
    now = time.time() if now is None else now
    record: dict[str, Any] = {
        "task_id": message.task_id,
        "namespace": message.namespace,
        "kind": message.kind,
        "status": "queued",
        "result": None,
        "error": None,
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
        "fingerprint": request_fingerprint,
    }
    if isinstance(message.request, ChatTaskRequest):
        record["session_id"] = message.request.session_id
    if message.request.callback_url is not None:
        record["callback_url"] = str(message.request.callback_url)
    return record


def public(record: Mapping[str, Any]) -> dict[str, Any]:
    """What a client sees of a record: no fingerprint, callback or worker bookkeeping."""
    out = {name: record.get(name) for name in _PUBLIC}
    namespace = out.get("namespace")
    if isinstance(namespace, str):  # the tenant's name for it, not the store key
        out["namespace"] = split_namespace_key(namespace)[1]
    if "session_id" in record:
        out["session_id"] = record["session_id"]
    return out


def describe_error(exc: BaseException) -> dict[str, str]:
    """The ``error`` of a failed record: our stable code, never a trace or a secret."""
    if isinstance(exc, RagtideError):
        return {"code": exc.code, "message": exc.message}
    return {"code": "internal", "message": f"internal error ({type(exc).__name__})"}


def documents_jsonl(documents: list[InlineDocument]) -> bytes:
    """Inline documents as the JSONL the ingestion pipeline reads (``_id`` is the id)."""
    lines = (
        json.dumps({"_id": d.id, "title": d.title, "text": d.text}, ensure_ascii=False)
        for d in documents
    )
    return ("\n".join(lines) + "\n").encode()


def delivery_attempt(headers: Mapping[str, Any] | None, redelivered: bool, queue: str) -> int:
    """Which delivery of a message this is, counting from 1.

    Quorum queues (ours) count every return of a message in ``x-delivery-count``: a
    nack, and a consumer whose channel closed or whose process died (RabbitMQ 3.10 and
    later). A message that travelled through dead-lettering carries ``x-death`` entries
    with per-queue counts instead. Without either (a classic queue), ``redelivered`` only
    says "at least the second", so the lower bound 2 is all we can say.
    """
    headers = headers or {}
    count = headers.get("x-delivery-count")
    if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
        return count + 1
    deaths = headers.get("x-death")
    if isinstance(deaths, list):
        total = sum(
            int(d.get("count", 0))
            for d in deaths
            if isinstance(d, Mapping) and d.get("queue") == queue
        )
        if total > 0:
            return total + 1
    return 2 if redelivered else 1
