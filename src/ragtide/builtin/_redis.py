"""The Redis plumbing every Redis-backed component shares: connection settings, a client
with bounded timeouts and retries, its lifecycle, and the translation of redis errors.

The ``redis`` package is an optional extra. It is imported only when a client is
created or an error is translated, so ``redis_cache`` and ``ratelimit`` can share these
helpers while their in-process variants still work without the extra.

Failure model: every Redis operation either completes or raises ``BackendUnavailable``
(``from`` the redis exception) within roughly
``(retries + 1) * (socket_connect_timeout_s + socket_timeout_s)``. Only connection errors
are retried (bounded by ``retries``), never timeouts: a retried write (``EXEC``, a
script) whose first reply was lost could apply twice, and a slow server should not be
hit twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from ragtide.errors import BackendUnavailable, ConfigError

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "RedisClient",
    "RedisConnectionConfig",
    "connect",
    "glob_escape",
    "key_part",
    "redis_errors",
]


class RedisConnectionConfig(BaseModel):
    """Connection settings shared by every Redis-backed component."""

    url: str = Field("redis://127.0.0.1:6379/0", description="redis:// or rediss:// URL.")
    key_prefix: str = Field("ragtide", min_length=1, description="Prefix of every key.")
    socket_timeout_s: float = Field(1.0, gt=0, description="Per-command read/write timeout.")
    socket_connect_timeout_s: float = Field(1.0, gt=0)
    health_check_interval_s: int = Field(
        30, ge=0, description="PING an idle pooled connection before reuse (0: never)."
    )
    retries: int = Field(1, ge=0, le=5, description="Retries after a connection error.")
    retry_after_s: float = Field(
        5.0, gt=0, description="Retry-After hint carried by BackendUnavailable."
    )


def connect(config: RedisConnectionConfig) -> Redis:
    """A lazily connecting ``redis.asyncio`` client with bounded timeouts and retries."""
    try:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import ExponentialWithJitterBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError
    except ImportError as exc:
        raise ConfigError("Redis components need the extra: pip install 'ragtide[redis]'") from exc

    return Redis.from_url(
        config.url,
        decode_responses=True,
        socket_timeout=config.socket_timeout_s,
        socket_connect_timeout=config.socket_connect_timeout_s,
        health_check_interval=config.health_check_interval_s,
        retry=Retry(
            ExponentialWithJitterBackoff(base=0.05, cap=0.5),
            config.retries,
            supported_errors=(RedisConnectionError,),
        ),
    )


@asynccontextmanager
async def redis_errors(operation: str, retry_after: float) -> AsyncIterator[None]:
    """Translate any redis exception raised inside into ``BackendUnavailable``."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    try:
        yield
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise BackendUnavailable(
            f"redis {operation} failed: {type(exc).__name__}", retry_after=retry_after
        ) from exc
    except RedisError as exc:  # READONLY after a failover, OOM, ...: still the backend's fault
        raise BackendUnavailable(
            f"redis {operation} was refused: {type(exc).__name__}", retry_after=retry_after
        ) from exc


class RedisClient:
    """The client lifecycle every Redis-backed component shares.

    ``start`` creates the client (connections open on first use, so it never blocks),
    ``aclose`` closes it, ``_redis`` refuses use before ``start``, ``_ping`` is a readiness
    probe that raises ``BackendUnavailable``.
    """

    def __init__(self, connection: RedisConnectionConfig) -> None:
        self._connection = connection
        self._client: Redis | None = None

    async def start(self) -> None:
        if self._client is None:
            self._client = connect(self._connection)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    @property
    def _redis(self) -> Redis:
        if self._client is None:
            raise RuntimeError(f"{type(self).__name__}.start() must be awaited before use")
        return self._client

    async def _ping(self) -> None:
        async with redis_errors("ping", self._connection.retry_after_s):
            await self._redis.ping()


def key_part(text: str) -> str:
    """Escape ``text`` so it cannot contain ':' and keys built from parts stay unambiguous."""
    return text.replace("%", "%25").replace(":", "%3A")


def glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis glob pattern."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)
