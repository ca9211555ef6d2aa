"""Result stores: where task status and results live, readable by every API replica.

``RedisResultStore`` (entry point ``redis``) keeps one JSON string per task under
``<prefix>:t:<namespace>:<task id>`` with a TTL that restarts on every write; ``create``
is ``SET NX``, so one idempotency key yields one task even when two replicas receive
the same request at once. ``InMemoryResultStore`` (entry point ``memory``) is the same
behaviour inside one process, for tests: the API and a worker are separate processes,
so the settings refuse it when tasks are enabled.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

from ragtide.builtin.redis_memory import RedisClient, RedisConnectionConfig, key_part, redis_errors

__all__ = ["InMemoryResultStore", "RedisResultStore", "task_key"]

logger = logging.getLogger(__name__)

DEFAULT_TTL_S = 7 * 86_400


def task_key(prefix: str, namespace: str, task_id: str) -> str:
    """The Redis key of one task's record."""
    return f"{prefix}:t:{key_part(namespace)}:{key_part(task_id)}"


def _dump(record: Mapping[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def _load(raw: str | bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        logger.warning("ignored an unreadable task record")
        return None
    return value


class InMemoryResultStore:
    """``ResultStore`` for one process: a bounded LRU whose records expire after a TTL.

    Records are kept as JSON, like in Redis, so callers get fresh copies of the same types.
    """

    class Config(BaseModel):
        ttl_seconds: float = Field(DEFAULT_TTL_S, gt=0, description="Record lifetime.")
        max_records: int = Field(100_000, gt=0)

    def __init__(self, config: Config | None = None) -> None:
        self._config = config or self.Config()
        self._records: OrderedDict[tuple[str, str], tuple[float, str]] = OrderedDict()

    async def ping(self) -> None:
        return None

    def _live(self, key: tuple[str, str]) -> str | None:
        entry = self._records.get(key)
        if entry is None:
            return None
        expires, raw = entry
        if time.monotonic() >= expires:
            del self._records[key]
            return None
        return raw

    def _store(self, key: tuple[str, str], record: Mapping[str, Any]) -> None:
        self._records[key] = (time.monotonic() + self._config.ttl_seconds, _dump(record))
        self._records.move_to_end(key)
        while len(self._records) > self._config.max_records:
            self._records.popitem(last=False)

    async def get(self, namespace: str, task_id: str) -> dict[str, Any] | None:
        return _load(self._live((namespace, task_id)))

    async def create(self, namespace: str, task_id: str, record: Mapping[str, Any]) -> bool:
        if self._live((namespace, task_id)) is not None:
            return False
        self._store((namespace, task_id), record)
        return True

    async def put(self, namespace: str, task_id: str, record: Mapping[str, Any]) -> None:
        self._store((namespace, task_id), record)

    async def delete(self, namespace: str, task_id: str) -> bool:
        return self._records.pop((namespace, task_id), None) is not None


class RedisResultStore(RedisClient):
    """``ResultStore`` in Redis: one expiring JSON string per task."""

    class Config(RedisConnectionConfig):
        ttl_seconds: int = Field(
            DEFAULT_TTL_S, gt=0, description="Record lifetime, restarted by every update."
        )

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._config = config

    def _key(self, namespace: str, task_id: str) -> str:
        return task_key(self._config.key_prefix, namespace, task_id)

    async def ping(self) -> None:
        await self._ping()

    async def get(self, namespace: str, task_id: str) -> dict[str, Any] | None:
        async with redis_errors("get task", self._config.retry_after_s):
            raw = await self._redis.get(self._key(namespace, task_id))
        return _load(raw)

    async def create(self, namespace: str, task_id: str, record: Mapping[str, Any]) -> bool:
        key = self._key(namespace, task_id)
        async with redis_errors("create task", self._config.retry_after_s):
            created = await self._redis.set(
                key, _dump(record), nx=True, ex=self._config.ttl_seconds
            )
        return bool(created)

    async def put(self, namespace: str, task_id: str, record: Mapping[str, Any]) -> None:
        key = self._key(namespace, task_id)
        async with redis_errors("put task", self._config.retry_after_s):
            await self._redis.set(key, _dump(record), ex=self._config.ttl_seconds)

    async def delete(self, namespace: str, task_id: str) -> bool:
        async with redis_errors("delete task", self._config.retry_after_s):
            removed: int = await self._redis.delete(self._key(namespace, task_id))
        return removed > 0
