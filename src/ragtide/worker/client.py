"""Submitting tasks and reading them back: what the API's task routes do.

``submit`` writes the record first (``create``, so one idempotency key is one task) and
then publishes with the broker's confirm. A publish that fails deletes the record again
and raises ``BackendUnavailable``: the client sees 503 and may retry with the same key.
Should the API process die between the two steps, the record stays ``queued`` with no
message behind it; see docs/worker.md.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from ragtide.chat import new_session_id
from ragtide.components import ResultStore
from ragtide.errors import BackendUnavailable, IdempotencyKeyReused, RagtideError
from ragtide.types import Filter
from ragtide.worker.tasks import (
    ChatTaskRequest,
    IngestTaskRequest,
    TaskMessage,
    fingerprint,
    new_record,
    task_id_for,
)

__all__ = ["Submitted", "TaskClient", "TaskPublisher"]

logger = logging.getLogger(__name__)


class TaskPublisher(Protocol):
    async def publish(self, message: TaskMessage) -> None: ...

    async def aclose(self) -> None: ...


class Submitted:
    """A submission's record, and whether this request created the task."""

    __slots__ = ("created", "record")

    def __init__(self, record: dict[str, Any], created: bool) -> None:
        self.record, self.created = record, created


class TaskClient:
    def __init__(self, results: ResultStore, publisher: TaskPublisher) -> None:
        self._results = results
        self._publisher = publisher

    async def submit(
        self,
        namespace: str,
        request: ChatTaskRequest | IngestTaskRequest,
        filter: Filter | None = None,
    ) -> Submitted:
        task_id = task_id_for(namespace, request.idempotency_key)
        request_fingerprint = fingerprint(request)
        if isinstance(request, ChatTaskRequest) and request.session_id is None:
            # The session is fixed now, so every delivery of the task answers in it.
            request = request.model_copy(update={"session_id": new_session_id()})
        conditions = [
            {"field": c.field, "values": sorted(c.values)}
            for c in (filter.conditions if filter else ())
        ]
        message = TaskMessage(
            task_id=task_id, namespace=namespace, request=request, filter=conditions
        )
        record = new_record(message, request_fingerprint)
        if not await self._results.create(namespace, task_id, record):
            existing = await self._results.get(namespace, task_id)
            if existing is None:  # withdrawn or expired just now: the client may retry
                raise BackendUnavailable("the task is being withdrawn; retry", retry_after=1)
            if existing.get("fingerprint") != request_fingerprint:
                raise IdempotencyKeyReused(
                    f"idempotency key {request.idempotency_key!r} was used for another request"
                )
            return Submitted(existing, created=False)
        try:
            await self._publisher.publish(message)
        except BackendUnavailable:
            await self._withdraw(namespace, task_id)
            raise
        logger.info(
            "task submitted",
            extra={"task_id": task_id, "kind": request.kind, "namespace": namespace},
        )
        return Submitted(record, created=True)

    async def _withdraw(self, namespace: str, task_id: str) -> None:
        try:
            await self._results.delete(namespace, task_id)
        except RagtideError as exc:
            logger.warning(
                "task record not withdrawn", extra={"task_id": task_id, "error": exc.code}
            )

    async def get(self, namespace: str, task_id: str) -> dict[str, Any] | None:
        return await self._results.get(namespace, task_id)

    async def aclose(self) -> None:
        await self._publisher.aclose()
        close = getattr(self._results, "aclose", None)
        if close is not None:
            await close()
