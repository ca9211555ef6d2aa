"""One delivery of a task, run so that its effect happens once however often it is delivered.

The broker gives at-least-once delivery: a message is redelivered when its worker
nacks it, dies, or loses its connection before the ack. ``TaskRunner.handle`` turns
that into "at most one answer and one saved turn per task" with the result store:

1. The API writes the record (``queued``) *before* publishing, with ``create`` (SET NX),
   so every genuine message has a record, and one idempotency key is one task.
2. A delivery first reads the record. ``done`` or ``failed``: the work is finished,
   ack and stop (``duplicate``). No record: the API withdrew the task (its publish was
   not confirmed and the client got a 503) or it expired; it is not answered but kept in
   the dead-letter queue (``orphaned``).
3. A chat turn runs ``chat.answer()``, exactly the API's flow, on the same ``Runtime``
   except that the memory store's ``append`` is *deferred*: the turns it would save
   (with their timestamps) are captured instead. The answer and those turns are then
   written to the record in one ``put``: the **commit**. Until the commit exists,
   nothing the task did is visible (the answer cache aside, which is idempotent), so a
   worker killed before it can simply be redelivered and answer afresh.
4. With the commit stored, its turns are applied to the memory store, the record becomes
   ``done`` (the commit dropped) and only then is the message acked.

Killed between 3 and 4, the next delivery finds the commit and does not answer again; it
applies the committed turns unless the session already holds them. ``MemoryStore.append``
is atomic, and a turn is identified by (role, content, timestamp) with the timestamp
taken when it was first produced, so "already holds them" is decidable: the turns are
appended at most once, with the answer that was committed. Killed after 4, the next
delivery sees ``done`` and only acks. The argument needs one thing from the broker: a
message is delivered to one consumer at a time, which RabbitMQ guarantees while that
consumer's channel is open; a worker that lost its channel stops before committing
(``still_ours``). Ingestion needs no commit: a document whose content hash is stored is
skipped, so running a job twice writes each document once.

Failures: ``BackendUnavailable`` (a store or the result store is down) is raised to the
caller, which keeps the delivery and retries it when the backend is back: an outage
does not use up attempts. An error that retrying cannot fix (an unknown namespace, a bad
message) fails the task at once; any other error requeues it until ``max_attempts``
deliveries failed. A delivery beyond ``max_attempts`` (its predecessors crashed their
worker) fails without running, unless a commit is stored: then it only finishes that.
A failed task is recorded ``failed`` with its reason before its message goes to the
dead-letter queue.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ragtide import chat
from ragtide.api.schemas import render_answer, render_outcome
from ragtide.components import MemoryStore, ResultStore
from ragtide.errors import (
    BackendUnavailable,
    ConfigError,
    DocumentRejected,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    UnsupportedMediaType,
)
from ragtide.ingest.pipeline import Ingestor
from ragtide.observability import stage
from ragtide.runtime import Runtime
from ragtide.types import ChatTurn, SessionInfo, split_namespace_key, validate_namespace_key
from ragtide.worker.tasks import (
    FINISHED,
    ChatTaskRequest,
    TaskMessage,
    decode_message,
    describe_error,
    documents_jsonl,
    qualified,
)

__all__ = ["DeferredMemory", "Delivery", "Outcome", "TaskRunner", "Verdict", "apply_turns"]

logger = logging.getLogger(__name__)

# Errors that another attempt cannot fix: the task fails at once.
PERMANENT: tuple[type[Exception], ...] = (
    InvalidRequest,
    NotFound,
    PermissionDenied,
    DocumentRejected,
    PayloadTooLarge,
    UnsupportedMediaType,
    ConfigError,
)
LOOKBACK_TURNS = 10_000  # how far back a resumed commit looks for its turns


class Verdict(enum.Enum):
    ACK = "ack"  # finished (now or before): remove the message
    REQUEUE = "requeue"  # this attempt failed: deliver it again
    DEAD = "dead"  # failed for good: reject it to the dead-letter queue
    ABANDON = "abandon"  # the channel is gone: the broker redelivers it elsewhere


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the runner needs of one broker delivery."""

    body: bytes
    attempt: int  # 1 for the first delivery
    message_id: str | None = None
    namespace: str | None = None  # from the message headers, for undecodable bodies


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    kind: str  # chat, ingest or unknown (metric label)
    outcome: str  # done, failed, retry, duplicate, orphaned, abandoned (metric label)
    record: dict[str, Any] | None = None  # the finished record, for the callback
    reason: str | None = None  # why it was dead-lettered (metric label)


class _Abandoned(Exception):
    """The delivery's channel closed: stop before committing anything."""


class DeferredMemory:
    """A ``MemoryStore`` that reads through and captures ``append`` instead of writing."""

    def __init__(self, inner: MemoryStore) -> None:
        self._inner = inner
        self.appends: list[tuple[str, str, tuple[ChatTurn, ...]]] = []

    async def ping(self) -> None:
        await self._inner.ping()

    async def load(self, namespace: str, session_id: str, limit: int = 20) -> list[ChatTurn]:
        return await self._inner.load(namespace, session_id, limit)

    async def append(self, namespace: str, session_id: str, *turns: ChatTurn) -> None:
        self.appends.append((namespace, session_id, turns))

    async def delete(self, namespace: str, session_id: str) -> bool:
        return await self._inner.delete(namespace, session_id)

    async def delete_namespace(self, namespace: str) -> int:
        return await self._inner.delete_namespace(namespace)

    async def list_sessions(
        self,
        namespace: str,
        *,
        limit: int | None = None,
        after: tuple[float, str] | None = None,
    ) -> list[SessionInfo]:
        return await self._inner.list_sessions(namespace, limit=limit, after=after)

    async def rename(self, namespace: str, session_id: str, title: str) -> SessionInfo | None:
        return await self._inner.rename(namespace, session_id, title)

    def to_json(self) -> list[dict[str, Any]]:
        return [
            {
                "namespace": ns,
                "session_id": sid,
                "turns": [{"role": t.role, "content": t.content, "at": t.at} for t in turns],
            }
            for ns, sid, turns in self.appends
        ]


def _turns(entry: Mapping[str, Any]) -> tuple[ChatTurn, ...]:
    return tuple(ChatTurn(t["role"], t["content"], float(t["at"])) for t in entry["turns"])


async def apply_turns(
    memory: MemoryStore, appends: Sequence[Mapping[str, Any]], *, check: bool
) -> None:
    """Append committed turns; with ``check``, skip those the session already holds."""
    for entry in appends:
        namespace, session_id, turns = entry["namespace"], entry["session_id"], _turns(entry)
        if not turns:
            continue
        if check:
            held = await memory.load(namespace, session_id, LOOKBACK_TURNS)
            if turns[0] in held:  # appends are atomic: one turn in means all are
                logger.info("committed turns already saved", extra={"turns": len(turns)})
                continue
        await memory.append(namespace, session_id, *turns)


class TaskRunner:
    """Runs deliveries of tasks against one ``Runtime`` and a ``ResultStore``."""

    def __init__(
        self,
        rt: Runtime,
        results: ResultStore,
        *,
        max_attempts: int,
        worker_id: str = "",
        clock: Callable[[], float] = time.time,
        tenant_runtime: Callable[[str], Awaitable[Runtime]] | None = None,
    ) -> None:
        self._rt = rt
        # A tenant's runtime (its retriever, chat model, prompt): the API's, for the same
        # answers; the process runtime when there is no directory (tests, old callers).
        self._tenant_runtime = tenant_runtime
        self._results = results
        self._max_attempts = max_attempts
        self._worker_id = worker_id
        self._clock = clock

    async def handle(
        self, delivery: Delivery, still_ours: Callable[[], bool] = lambda: True
    ) -> Outcome:
        """Run one delivery and say what to do with its message.

        Raises ``BackendUnavailable`` when a backend is down: keep the message and call
        again later.
        """
        try:
            message = decode_message(delivery.body)
        except InvalidRequest as exc:
            return await self._unreadable(delivery, exc)
        ns, task_id, kind = message.namespace, message.task_id, message.kind
        record = await self._results.get(ns, task_id)
        if record is None:
            logger.warning("task has no record", extra={"task_id": task_id, "namespace": ns})
            return Outcome(Verdict.DEAD, kind, "orphaned", reason="orphaned")
        if record.get("status") in FINISHED:
            return Outcome(Verdict.ACK, kind, "duplicate")
        if delivery.attempt > self._max_attempts and record.get("commit") is None:
            error = {
                "code": "attempts_exhausted",
                "message": f"no worker finished the task in {self._max_attempts} attempts "
                "(each one stopped while running it)",
            }
            return await self._fail(message, record, error, delivery.attempt - 1)
        try:
            record, result = await self._run(message, record, delivery.attempt, still_ours)
        except _Abandoned:
            return Outcome(Verdict.ABANDON, kind, "abandoned")
        except BackendUnavailable:
            raise
        except PERMANENT as exc:
            return await self._fail(message, record, describe_error(exc), delivery.attempt)
        except Exception as exc:  # the worker loop's boundary: any other error is retried
            logger.warning(
                "task attempt failed",
                extra={"task_id": task_id, "attempt": delivery.attempt},
                exc_info=True,
            )
            if delivery.attempt >= self._max_attempts:
                return await self._fail(message, record, describe_error(exc), delivery.attempt)
            await self._put(
                message,
                record,
                status="queued",
                error=describe_error(exc),
                attempts=delivery.attempt,
            )
            return Outcome(Verdict.REQUEUE, kind, "retry")
        done = await self._put(
            message, record, status="done", result=result, error=None, commit=None
        )
        return Outcome(Verdict.ACK, kind, "done", record=done)

    # --- running ---------------------------------------------------------------------

    async def _run(
        self,
        message: TaskMessage,
        record: dict[str, Any],
        attempt: int,
        still_ours: Callable[[], bool],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Do the task's work: (the record as last written, the result)."""
        commit = record.get("commit")
        if commit is not None:  # a predecessor answered and committed: finish its work
            await apply_turns(self._rt.memory, commit["appends"], check=True)
            return record, commit["result"]
        record = await self._put(
            message, record, status="running", attempts=attempt, worker=self._worker_id
        )
        request = message.request
        if isinstance(request, ChatTaskRequest):
            return record, await self._chat(message, request, record, still_ours)
        outcomes = await Ingestor(self._rt).ingest_bytes(
            message.namespace, f"task-{message.task_id}.jsonl", documents_jsonl(request.documents)
        )
        documents = [render_outcome(o) for o in outcomes]
        return record, {"namespace": message.namespace, "documents": documents}

    async def _chat(
        self,
        message: TaskMessage,
        request: ChatTaskRequest,
        record: dict[str, Any],
        still_ours: Callable[[], bool],
    ) -> dict[str, Any]:
        deferred = DeferredMemory(self._rt.memory)
        base = self._rt
        if self._tenant_runtime is not None:
            base = await self._tenant_runtime(split_namespace_key(message.namespace)[0])
        rt = dataclasses.replace(base, memory=deferred)
        answer = await chat.answer(
            rt,
            message.namespace,
            request.message,
            request.session_id,
            filter=message.access_filter(),
        )
        result, appends = render_answer(answer), deferred.to_json()
        if not still_ours():
            raise _Abandoned
        await self._put(message, record, commit={"result": result, "appends": appends})
        if not still_ours():
            raise _Abandoned
        async with stage("save", self._rt.names.get("memory", "?")):
            await apply_turns(self._rt.memory, appends, check=False)
        return result

    # --- records ---------------------------------------------------------------------

    async def _put(
        self, message: TaskMessage, record: dict[str, Any], **changes: Any
    ) -> dict[str, Any]:
        updated = {**record, **changes, "updated_at": self._clock()}
        if updated.get("commit") is None:
            updated.pop("commit", None)
        await self._results.put(message.namespace, message.task_id, updated)
        return updated

    async def _fail(
        self, message: TaskMessage, record: dict[str, Any], error: dict[str, str], attempts: int
    ) -> Outcome:
        failed = await self._put(
            message, record, status="failed", error=error, attempts=attempts, commit=None
        )
        logger.warning(
            "task failed",
            extra={"task_id": message.task_id, "error": error["code"], "attempts": attempts},
        )
        reason = "attempts" if error["code"] == "attempts_exhausted" else "failed"
        return Outcome(Verdict.DEAD, message.kind, "failed", record=failed, reason=reason)

    async def _unreadable(self, delivery: Delivery, exc: InvalidRequest) -> Outcome:
        """A body that is no task: record why (when the headers say which task) and give up."""
        logger.warning("undecodable task", extra={"task_id": delivery.message_id})
        ns, task_id = delivery.namespace, delivery.message_id
        if ns is not None and task_id is not None and 0 < len(task_id) <= 128:
            try:
                ns = qualified(validate_namespace_key(ns))
            except InvalidRequest:
                return Outcome(Verdict.DEAD, "unknown", "failed", reason="undecodable")
            now = self._clock()
            record = (await self._results.get(ns, task_id)) or {
                "task_id": task_id,
                "namespace": ns,
                "kind": None,
                "created_at": now,
                "result": None,
            }
            failed = {
                **record,
                "status": "failed",
                "error": describe_error(exc),
                "attempts": delivery.attempt,
                "updated_at": now,
            }
            failed.pop("commit", None)
            await self._results.put(ns, task_id, failed)
            return Outcome(Verdict.DEAD, "unknown", "failed", record=failed, reason="undecodable")
        return Outcome(Verdict.DEAD, "unknown", "failed", reason="undecodable")
