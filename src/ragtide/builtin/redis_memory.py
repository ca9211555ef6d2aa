"""Conversation memory in Redis, shared by every replica, plus the Redis plumbing we reuse.

One Redis list per (namespace, session) holds the turns as compact JSON, oldest first.
``append`` sends RPUSH, LTRIM and EXPIRE in a single MULTI/EXEC transaction, so two
replicas appending to one session at the same time never lose a turn, and the session
never grows past ``max_turns``.

The ``redis`` package is an optional extra. It is imported only when a client is
created or an error is translated, so ``redis_cache`` and ``ratelimit`` can share the
helpers below while their in-process variants still work without the extra.

Failure model: every Redis operation either completes or raises ``BackendUnavailable``
(``from`` the redis exception) within roughly
``(retries + 1) * (socket_connect_timeout_s + socket_timeout_s)``. Only connection errors
are retried (bounded by ``retries``), never timeouts: a retried ``EXEC`` whose first
reply was lost could store the turns twice, and a slow server should not be hit twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from ragtide.errors import BackendUnavailable, ConfigError
from ragtide.types import ChatTurn

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "RedisConnectionConfig",
    "RedisMemoryStore",
    "connect",
    "key_part",
    "redis_errors",
    "session_key",
]

logger = logging.getLogger(__name__)


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


def session_key(prefix: str, namespace: str, session_id: str) -> str:
    """The Redis key of one session's turn list."""
    return f"{prefix}:s:{key_part(namespace)}:{key_part(session_id)}"


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis glob pattern."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def _dump(turn: ChatTurn) -> str:
    return json.dumps(
        {"role": turn.role, "content": turn.content, "at": turn.at},
        ensure_ascii=False,
        separators=(",", ":"),
    )


def _parse(raw: str | bytes) -> ChatTurn | None:
    try:
        data: Any = json.loads(raw)
        role, content, at = data["role"], data["content"], float(data["at"])
    except (ValueError, TypeError, KeyError):
        return None
    if role not in ("user", "assistant") or not isinstance(content, str):
        return None
    return ChatTurn(role, content, at)


class RedisMemoryStore(RedisClient):
    """``MemoryStore`` (entry point ``redis``): one capped, expiring Redis list per session."""

    class Config(RedisConnectionConfig):
        ttl_seconds: int = Field(
            86_400, gt=0, description="Idle time before a session expires (reset on append)."
        )
        max_turns: int = Field(200, gt=0, description="Turns kept per session (oldest dropped).")

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._config = config

    def _key(self, namespace: str, session_id: str) -> str:
        return session_key(self._config.key_prefix, namespace, session_id)

    async def ping(self) -> None:
        await self._ping()

    async def load(self, namespace: str, session_id: str, limit: int = 20) -> list[ChatTurn]:
        if limit <= 0:
            return []
        async with redis_errors("load", self._config.retry_after_s):
            raw = await self._redis.lrange(self._key(namespace, session_id), -limit, -1)
        turns = [turn for turn in map(_parse, raw) if turn is not None]
        if len(turns) != len(raw):
            logger.warning(
                "skipped unreadable turns", extra={"namespace": namespace, "count": len(raw)}
            )
        return turns

    async def append(self, namespace: str, session_id: str, *turns: ChatTurn) -> None:
        if not turns:
            return
        key = self._key(namespace, session_id)
        async with redis_errors("append", self._config.retry_after_s):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(key, *map(_dump, turns))
                pipe.ltrim(key, -self._config.max_turns, -1)
                pipe.expire(key, self._config.ttl_seconds)
                await pipe.execute()

    async def delete(self, namespace: str, session_id: str) -> bool:
        async with redis_errors("delete", self._config.retry_after_s):
            removed: int = await self._redis.delete(self._key(namespace, session_id))
        return removed > 0

    async def delete_namespace(self, namespace: str) -> int:
        """SCAN the namespace's session keys (never KEYS: it blocks Redis) and delete them."""
        pattern = _glob_escape(self._key(namespace, "")) + "*"
        removed = 0
        async with redis_errors("delete namespace", self._config.retry_after_s):
            batch: list[str] = []
            async for key in self._redis.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    removed += await self._redis.delete(*batch)
                    batch.clear()
            if batch:
                removed += await self._redis.delete(*batch)
        return removed
