"""The consume loop: deliveries in, ``TaskRunner`` verdicts out as acks, nacks and rejects.

- **Bounded prefetch**: at most ``rabbitmq.prefetch`` unacknowledged tasks per worker;
  each delivery runs in its own asyncio task, so that many run at once.
- **Manual acks** only once the runner stored the outcome; a message whose ack cannot be
  sent (the channel is gone) is redelivered and found finished.
- **Outages**: a backend that is down holds the delivery (retried with backoff, the
  worker not ready) instead of burning its attempts; a lost broker connection is
  reopened with backoff.
- **Drain**: ``stop()`` cancels the consumer (the broker sends nothing more), waits up to
  ``worker.grace_seconds`` for the tasks in flight, then closes the connection; what is
  still unacknowledged then goes back to the queue.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ragtide.components import ResultStore
from ragtide.errors import BackendUnavailable, RagtideError
from ragtide.observability import (
    READY,
    TASK_REDELIVERIES,
    TASK_SECONDS,
    TASKS,
    TASKS_DEAD_LETTERED,
    TASKS_QUEUE_DEPTH,
    WEBHOOKS,
)
from ragtide.runtime import Runtime
from ragtide.settings import Settings
from ragtide.types import split_namespace_key
from ragtide.worker.broker import (
    KIND_HEADER,
    NAMESPACE_HEADER,
    amqp_errors,
    connect,
    dead_letter_queue,
    declare,
    queue_depth,
)
from ragtide.worker.callback import CallbackSender
from ragtide.worker.execute import Delivery, Outcome, TaskRunner, Verdict
from ragtide.worker.tasks import delivery_attempt, public

if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

__all__ = ["Consumer"]

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0
DEPTH_TIMEOUT_S = 1.0
MAX_BACKOFF_S = 5.0


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


class Consumer:
    def __init__(
        self,
        settings: Settings,
        rt: Runtime,
        results: ResultStore,
        callback_secret: Callable[[str], Awaitable[bytes | None]] | None = None,
        tenant_runtime: Callable[[str], Awaitable[Runtime]] | None = None,
    ) -> None:
        self._rabbit = settings.rabbitmq
        self._worker = settings.worker
        self._rt = rt
        self._results = results
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self._runner = TaskRunner(
            rt,
            results,
            max_attempts=self._rabbit.max_attempts,
            worker_id=self.worker_id,
            tenant_runtime=tenant_runtime,
        )
        self._callbacks = CallbackSender(
            settings.webhooks,
            timeout_s=min(settings.webhooks.timeout_s, self._worker.callback_timeout_s),
        )
        self._callback_secret = callback_secret  # tenant id -> its webhook signing secret
        self._stop = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._depth_channel: AbstractChannel | None = None
        self._depth_lock = asyncio.Lock()
        self._connection: AbstractConnection | None = None
        self.consuming = False
        self.reason = "starting: connecting to rabbitmq"

    # --- lifecycle -------------------------------------------------------------------

    def stop(self) -> None:
        """Begin the drain (idempotent)."""
        if not self._stop.is_set():
            logger.info("draining", extra={"in_flight": len(self._inflight)})
        self._stop.set()
        READY.set(0)

    def abort(self) -> None:
        """Stop waiting: cancel the tasks in flight (their messages go back to the queue)."""
        for task in list(self._inflight):
            task.cancel()

    @property
    def draining(self) -> bool:
        return self._stop.is_set()

    async def run(self) -> None:
        """Consume until ``stop()``, reconnecting while the broker is away; then drain."""
        backoff = 0.25
        while not self._stop.is_set():
            try:
                await self._session()
                backoff = 0.25
            except BackendUnavailable as exc:
                self.reason = exc.message
                logger.warning("rabbitmq unavailable", extra={"reason": exc.message})
            if not self._stop.is_set():
                await self._sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
        await self._wait_inflight(self._worker.grace_seconds)
        await self._callbacks.aclose()

    async def _session(self) -> None:
        connection = await connect(self._rabbit, f"ragtide-worker {self.worker_id}")
        self._connection = connection
        lost = asyncio.Event()
        connection.close_callbacks.add(lambda *_: lost.set())
        refresher: asyncio.Task[None] | None = None
        try:
            async with amqp_errors("consume"):
                channel = await connection.channel()
                channel.close_callbacks.add(lambda *_: lost.set())
                await channel.set_qos(prefetch_count=self._rabbit.prefetch)
                queue = await declare(channel, self._rabbit.queue)
                self._depth_channel = await connection.channel()
                tag = await queue.consume(lambda m: self._on_message(m, channel))
            self.consuming = True
            logger.info(
                "consuming",
                extra={"queue": self._rabbit.queue, "prefetch": self._rabbit.prefetch},
            )
            refresher = asyncio.create_task(self._refresh_depth_forever())
            await self._first(self._stop, lost)
            self.consuming = False
            if lost.is_set():
                self.reason = "lost the rabbitmq connection"
                logger.warning("rabbitmq connection lost")
                return
            try:  # draining: nothing new, then finish what we have while we can still ack
                async with amqp_errors("cancel"):
                    await queue.cancel(tag, timeout=PROBE_TIMEOUT_S)
            except BackendUnavailable:
                logger.warning("consumer not cancelled; closing the connection instead")
            await self._wait_inflight(self._worker.grace_seconds)
        finally:
            self.consuming = False
            if refresher is not None:
                refresher.cancel()
            self._depth_channel = None
            self._connection = None
            if not connection.is_closed:
                try:
                    async with amqp_errors("close"):
                        await connection.close()
                except BackendUnavailable:
                    logger.debug("rabbitmq connection was already gone")

    async def _first(self, *events: asyncio.Event) -> None:
        waits = [asyncio.create_task(e.wait()) for e in events]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _sleep(self, seconds: float) -> None:
        """Wait ``seconds`` or until ``stop()``, whichever comes first."""
        try:
            async with asyncio.timeout(seconds):  # not wait_for, which can swallow a cancel
                await self._stop.wait()
        except TimeoutError:
            pass

    async def _wait_inflight(self, grace: float) -> None:
        if not self._inflight:
            return
        logger.info("waiting for tasks in flight", extra={"count": len(self._inflight)})
        _, pending = await asyncio.wait(set(self._inflight), timeout=grace)
        for task in pending:  # their messages return to the queue with the connection
            task.cancel()
        if pending:
            logger.warning(
                "tasks still running after the grace period", extra={"count": len(pending)}
            )
            await asyncio.wait(pending)

    # --- deliveries ------------------------------------------------------------------

    async def _on_message(self, message: AbstractIncomingMessage, channel: AbstractChannel) -> None:
        task = asyncio.create_task(self._guarded(message, channel))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _guarded(self, message: AbstractIncomingMessage, channel: AbstractChannel) -> None:
        try:
            await self._handle(message, channel)
        except Exception:  # the worker loop's outer boundary: log, return the message
            logger.exception("task delivery crashed", extra={"task_id": message.message_id})
            await self._settle(message, Verdict.REQUEUE)

    async def _handle(self, message: AbstractIncomingMessage, channel: AbstractChannel) -> None:
        began = time.perf_counter()
        headers = message.headers or {}
        attempt = delivery_attempt(headers, bool(message.redelivered), self._rabbit.queue)
        hint = _text(headers.get(KIND_HEADER))
        if attempt > 1:
            TASK_REDELIVERIES.labels(hint if hint in ("chat", "ingest") else "unknown").inc()
        delivery = Delivery(
            body=message.body,
            attempt=attempt,
            message_id=message.message_id,
            namespace=_text(headers.get(NAMESPACE_HEADER)),
        )

        def still_ours() -> bool:
            return not channel.is_closed

        outcome = await self._run_holding(delivery, still_ours)
        if outcome is None:  # stopping, or the channel went away while a backend was down
            await self._settle(message, Verdict.REQUEUE)
            return
        if outcome.verdict is Verdict.REQUEUE:
            await self._sleep(self._rabbit.retry_delay_s * attempt)
        await self._settle(message, outcome.verdict)
        elapsed = time.perf_counter() - began
        TASKS.labels(outcome.kind, outcome.outcome).inc()
        TASK_SECONDS.labels(outcome.kind, outcome.outcome).observe(elapsed)
        if outcome.verdict is Verdict.DEAD:
            TASKS_DEAD_LETTERED.labels(outcome.kind, outcome.reason or "failed").inc()
        logger.info(
            "task delivery handled",
            extra={
                "task_id": message.message_id,
                "kind": outcome.kind,
                "outcome": outcome.outcome,
                "attempt": attempt,
                "duration_s": round(elapsed, 4),
            },
        )
        await self._callback(outcome)

    async def _run_holding(self, delivery: Delivery, still_ours: Any) -> Outcome | None:
        """Run the delivery; while a backend is down, keep it and try again."""
        delay = 0.1
        while True:
            try:
                return await self._runner.handle(delivery, still_ours)
            except BackendUnavailable as exc:
                logger.warning(
                    "backend unavailable, holding the task",
                    extra={"task_id": delivery.message_id, "reason": exc.message},
                )
                if self._stop.is_set() or not still_ours():
                    return None
                await self._sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)

    async def _settle(self, message: AbstractIncomingMessage, verdict: Verdict) -> None:
        try:
            async with amqp_errors("settle"):
                if verdict is Verdict.ACK:
                    await message.ack()
                elif verdict is Verdict.REQUEUE:
                    await message.nack(requeue=True)
                elif verdict is Verdict.DEAD:
                    await message.reject(requeue=False)
        except BackendUnavailable as exc:  # the outcome is stored: a redelivery finds it
            logger.warning(
                "could not settle a delivery; the broker will redeliver it",
                extra={
                    "task_id": message.message_id,
                    "verdict": verdict.value,
                    "reason": exc.message,
                },
            )

    async def _callback(self, outcome: Outcome) -> None:
        """Best effort, after the ack: signed with the tenant's secret when it has one."""
        record = outcome.record
        url = record.get("callback_url") if record else None
        if record is None or not isinstance(url, str):
            return
        secret: bytes | None = None
        if self._callback_secret is not None:
            tenant = split_namespace_key(str(record.get("namespace", "")))[0]
            try:
                secret = await self._callback_secret(tenant)
            except Exception:  # the callback's outer boundary: the task is settled already
                logger.exception(
                    "callback not sent: no signing secret",
                    extra={"task_id": record.get("task_id"), "tenant": tenant},
                )
                WEBHOOKS.labels("failed").inc()
                return
        await self._callbacks.send(url, public(record), secret=secret)

    # --- probes and metrics ----------------------------------------------------------

    async def ready_reason(self) -> str | None:
        """None when ready: consuming, and the result store and every store answer."""
        reason: str | None = None
        if self._stop.is_set():
            reason = "draining"
        elif not self.consuming:
            reason = self.reason
        elif not self._rt.started:
            reason = "starting: components are loading"
        else:
            try:
                async with asyncio.timeout(PROBE_TIMEOUT_S):
                    await self._results.ping()
                async with asyncio.timeout(PROBE_TIMEOUT_S):
                    await self._rt.check_ready()
            except RagtideError as exc:
                reason = exc.message
            except TimeoutError:
                reason = f"a dependency did not answer within {PROBE_TIMEOUT_S}s"
        READY.set(0 if reason else 1)
        return reason

    async def refresh_depth(self) -> None:
        """Set the queue depth gauges from a passive declare (skipped when not connected)."""
        connection = self._connection
        if connection is None or connection.is_closed:
            return
        async with self._depth_lock:
            for name in (self._rabbit.queue, dead_letter_queue(self._rabbit.queue)):
                try:
                    channel = self._depth_channel
                    if channel is None or channel.is_closed:
                        async with amqp_errors("open channel"):
                            channel = self._depth_channel = await connection.channel()
                    async with asyncio.timeout(DEPTH_TIMEOUT_S):
                        depth = await queue_depth(channel, name)
                except (BackendUnavailable, TimeoutError):
                    logger.debug("queue depth not refreshed", extra={"queue": name})
                    continue
                TASKS_QUEUE_DEPTH.labels(name).set(depth)

    async def _refresh_depth_forever(self) -> None:
        while True:
            await self.refresh_depth()
            await asyncio.sleep(self._worker.depth_interval_s)
