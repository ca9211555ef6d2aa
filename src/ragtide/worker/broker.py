"""RabbitMQ plumbing shared by the API (publishing) and the worker (consuming).

Topology, declared identically by both sides (so either may start first):

- ``<queue>``: a durable **quorum** queue. Quorum queues count every return of a
  message (a nack, a consumer that closed its channel or died) in ``x-delivery-count``,
  which is what bounds the attempts of a task even when it kills its worker. Messages
  are persistent; the broker confirms a publish only once the queue has it.
- ``<queue>.dead``: the dead-letter queue (durable, quorum). A rejected message moves
  there through the default exchange, with ``x-death`` saying where from and why.

The API publishes with publisher confirms and ``mandatory``: ``publish`` returns only
when the broker has taken the message, and raises ``BackendUnavailable`` otherwise
(down, slow past ``publish_timeout_s``, unroutable, or nacked).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from ragtide.errors import BackendUnavailable, ConfigError
from ragtide.settings import RabbitSettings
from ragtide.worker.tasks import TaskMessage

if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractQueue

__all__ = [
    "NAMESPACE_HEADER",
    "Publisher",
    "amqp_errors",
    "connect",
    "dead_letter_queue",
    "declare",
    "queue_arguments",
    "queue_depth",
]

logger = logging.getLogger(__name__)

NAMESPACE_HEADER = "x-ragtide-namespace"
KIND_HEADER = "x-ragtide-kind"
RETRY_AFTER_S = 5.0


def dead_letter_queue(queue: str) -> str:
    return f"{queue}.dead"


def queue_arguments(queue: str) -> dict[str, Any]:
    """The task queue's arguments; they must be equal wherever it is declared."""
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dead_letter_queue(queue),
    }


@asynccontextmanager
async def amqp_errors(operation: str) -> AsyncIterator[None]:
    """Translate what aio-pika raises when the broker is away into ``BackendUnavailable``."""
    from aiormq.exceptions import AMQPError, ChannelInvalidStateError

    try:
        yield
    except (AMQPError, ChannelInvalidStateError, OSError, TimeoutError) as exc:
        raise BackendUnavailable(
            f"rabbitmq {operation} failed: {type(exc).__name__}", retry_after=RETRY_AFTER_S
        ) from exc


async def connect(config: RabbitSettings, name: str) -> AbstractConnection:
    """One connection, bounded by ``connect_timeout_s``; ``BackendUnavailable`` on failure."""
    try:
        import aio_pika
    except ImportError as exc:
        raise ConfigError("tasks need the extra: pip install 'ragtide[rabbitmq]'") from exc
    if config.url is None:
        raise ConfigError("rabbitmq.url is not set")
    async with amqp_errors("connect"):
        return await aio_pika.connect(
            config.url,
            timeout=config.connect_timeout_s,
            client_properties={"connection_name": name},
        )


async def declare(channel: AbstractChannel, queue: str) -> AbstractQueue:
    """Declare the dead-letter queue and the task queue (idempotent); return the latter."""
    async with amqp_errors("declare"):
        await channel.declare_queue(
            dead_letter_queue(queue), durable=True, arguments={"x-queue-type": "quorum"}
        )
        return await channel.declare_queue(queue, durable=True, arguments=queue_arguments(queue))


async def queue_depth(channel: AbstractChannel, queue: str) -> int:
    """Ready messages in ``queue`` (a passive declare: it creates nothing)."""
    async with amqp_errors("passive declare"):
        declared = await channel.declare_queue(queue, passive=True)
    result = declared.declaration_result
    return int(result.message_count or 0)


class Publisher:
    """The API's side: a lazily opened connection that publishes with confirms.

    The connection is opened on the first publish and again after it was lost, so a
    broker that is down makes a submission fail fast (503) instead of the whole API.
    """

    def __init__(self, config: RabbitSettings) -> None:
        self._config = config
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._lock = asyncio.Lock()

    async def _ready_channel(self) -> AbstractChannel:
        channel = self._channel
        if channel is not None and not channel.is_closed:
            return channel
        async with self._lock:
            if self._channel is not None and not self._channel.is_closed:
                return self._channel
            await self._reset()
            connection = await connect(self._config, "ragtide-api")
            try:
                async with amqp_errors("open channel"):
                    channel = await connection.channel(
                        publisher_confirms=True, on_return_raises=True
                    )
                await declare(channel, self._config.queue)
            except BaseException:
                await connection.close()
                raise
            self._connection, self._channel = connection, channel
            return channel

    async def publish(self, message: TaskMessage) -> None:
        """Return once the broker confirmed that the queue holds ``message``."""
        import aio_pika

        channel = await self._ready_channel()
        amqp_message = aio_pika.Message(
            message.encode(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message.task_id,
            timestamp=time.time(),
            headers={NAMESPACE_HEADER: message.namespace, KIND_HEADER: message.kind},
        )
        try:
            async with amqp_errors("publish"):
                await channel.default_exchange.publish(
                    amqp_message,
                    routing_key=self._config.queue,
                    mandatory=True,
                    timeout=self._config.publish_timeout_s,
                )
        except BackendUnavailable:
            await self._reset()  # start over on a fresh connection next time
            raise

    async def _reset(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and not connection.is_closed:
            try:
                async with amqp_errors("close"):
                    await connection.close()
            except BackendUnavailable:
                logger.debug("rabbitmq connection was already gone")

    async def aclose(self) -> None:
        async with self._lock:
            await self._reset()
