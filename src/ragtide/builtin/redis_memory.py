"""Conversation memory in Redis, shared by every replica.

One Redis list per (namespace, session) holds the turns as compact JSON, oldest first.
Per namespace, a sorted set indexes its sessions by the time of their latest append (the
Redis server's clock, so every replica orders them alike) and a hash holds each session's
creation time and title. ``append`` is one Lua script (RPUSH, LTRIM, EXPIRE, the index
and the title), so two replicas appending to one session at the same time never lose a
turn, the session never grows past ``max_turns``, and the index never misses a session.
Index entries of sessions that expired are dropped by later appends and listings.

The connection plumbing (settings, client, error translation and the failure model) is
``ragtide.builtin._redis``'s, re-exported here for the components that import it from here.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import Field

from ragtide.builtin._redis import (
    RedisClient,
    RedisConnectionConfig,
    connect,
    glob_escape,
    key_part,
    redis_errors,
)
from ragtide.types import ChatTurn, SessionInfo

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

__all__ = [
    "RedisClient",
    "RedisConnectionConfig",
    "RedisMemoryStore",
    "connect",
    "key_part",
    "redis_errors",
    "session_index_keys",
    "session_key",
]

logger = logging.getLogger(__name__)


def session_key(prefix: str, namespace: str, session_id: str) -> str:
    """The Redis key of one session's turn list."""
    return f"{prefix}:s:{key_part(namespace)}:{key_part(session_id)}"


def session_index_keys(prefix: str, namespace: str) -> tuple[str, str]:
    """The Redis keys of a namespace's session index (sorted set) and titles (hash)."""
    return f"{prefix}:si:{key_part(namespace)}", f"{prefix}:sm:{key_part(namespace)}"


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
    if role not in ("user", "assistant", "tool") or not isinstance(content, str):
        return None
    return ChatTurn(role, content, at)


# KEYS: the session's list, the namespace's index and titles. ARGV: session id, now (""
# for the server's clock), TTL, max turns, a default title ("" for none), the turns.
# Index entries idle past the TTL (their lists expired) go, a few per append.
_APPEND = """
local now = tonumber(ARGV[2])
if not now then
    local t = redis.call('TIME')
    now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local ttl = tonumber(ARGV[3])
redis.call('RPUSH', KEYS[1], unpack(ARGV, 6))
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[4]), -1)
redis.call('EXPIRE', KEYS[1], ttl)
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - ttl), 'LIMIT', 0, 64)
for _, id in ipairs(stale) do
    redis.call('ZREM', KEYS[2], id)
    redis.call('HDEL', KEYS[3], 'c:' .. id, 't:' .. id)
end
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('HSETNX', KEYS[3], 'c:' .. ARGV[1], now)
if ARGV[5] ~= '' then redis.call('HSETNX', KEYS[3], 't:' .. ARGV[1], ARGV[5]) end
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('EXPIRE', KEYS[3], ttl)
return 1
"""

# KEYS: the session's list, the namespace's index and titles. ARGV: session id, title,
# now ("" for the server's clock), TTL. Nothing for a session that has no turns.
_RENAME = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local id = ARGV[1]
local score = redis.call('ZSCORE', KEYS[2], id)
if not score then
    local now = tonumber(ARGV[3])
    if not now then
        local t = redis.call('TIME')
        now = tonumber(t[1]) + tonumber(t[2]) / 1000000
    end
    redis.call('ZADD', KEYS[2], now, id)
    redis.call('HSETNX', KEYS[3], 'c:' .. id, now)
    score = redis.call('ZSCORE', KEYS[2], id)
end
redis.call('HSET', KEYS[3], 't:' .. id, ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[4])
return {redis.call('LLEN', KEYS[1]), redis.call('HGET', KEYS[3], 'c:' .. id), score}
"""

# KEYS: the titles, then one session list per ARGV session id. For each session: its
# turns, creation time and title (one reply instead of two per session).
_DESCRIBE = """
local out = {}
for i, id in ipairs(ARGV) do
    local meta = redis.call('HMGET', KEYS[1], 'c:' .. id, 't:' .. id)
    out[#out + 1] = redis.call('LLEN', KEYS[i + 1])
    out[#out + 1] = meta[1]
    out[#out + 1] = meta[2]
end
return out
"""

# KEYS: the index, the titles, then one session list per ARGV session id. Forgets the
# sessions whose list is gone, checked in the same step (an append may have revived one).
_FORGET = """
local gone = 0
for i, id in ipairs(ARGV) do
    if redis.call('EXISTS', KEYS[i + 2]) == 0 then
        gone = gone + redis.call('ZREM', KEYS[1], id)
        redis.call('HDEL', KEYS[2], 'c:' .. id, 't:' .. id)
    end
end
return gone
"""


class RedisMemoryStore(RedisClient):
    """``MemoryStore`` (entry point ``redis``): one capped, expiring Redis list per session,
    and per namespace an index of its sessions (sorted set) and their titles (hash).

    ``clock`` replaces the Redis server's clock for the index (tests; seconds since the
    epoch).
    """

    class Config(RedisConnectionConfig):
        ttl_seconds: int = Field(
            86_400, gt=0, description="Idle time before a session expires (reset on append)."
        )
        max_turns: int = Field(200, gt=0, description="Turns kept per session (oldest dropped).")

    def __init__(self, config: Config, *, clock: Callable[[], float] | None = None) -> None:
        super().__init__(config)
        self._config = config
        self._clock = clock
        self._scripts: dict[str, AsyncScript] = {}

    async def start(self) -> None:
        await super().start()
        scripts = {"append": _APPEND, "rename": _RENAME, "describe": _DESCRIBE, "forget": _FORGET}
        for name, source in scripts.items():
            self._scripts[name] = self._redis.register_script(source)

    async def aclose(self) -> None:
        self._scripts.clear()
        await super().aclose()

    def _script(self, name: str) -> AsyncScript:
        if name not in self._scripts:
            raise RuntimeError(f"{type(self).__name__}.start() must be awaited before use")
        return self._scripts[name]

    def _now(self) -> str:
        return "" if self._clock is None else repr(self._clock())

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
        script = self._script("append")
        index, titles = session_index_keys(self._config.key_prefix, namespace)
        first = next((t.content for t in turns if t.role == "user"), "")
        args: list[str | int] = [session_id, self._now(), self._config.ttl_seconds]
        args += [self._config.max_turns, SessionInfo.title_of(first), *map(_dump, turns)]
        async with redis_errors("append", self._config.retry_after_s):
            await script(keys=[self._key(namespace, session_id), index, titles], args=args)

    async def delete(self, namespace: str, session_id: str) -> bool:
        index, titles = session_index_keys(self._config.key_prefix, namespace)
        async with redis_errors("delete", self._config.retry_after_s):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(self._key(namespace, session_id))
                pipe.zrem(index, session_id)
                pipe.hdel(titles, f"c:{session_id}", f"t:{session_id}")
                removed, _, _ = await pipe.execute()
        return int(removed) > 0

    async def delete_namespace(self, namespace: str) -> int:
        """SCAN the namespace's session keys (never KEYS: it blocks Redis) and delete them,
        then its index and titles."""
        pattern = glob_escape(self._key(namespace, "")) + "*"
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
            await self._redis.delete(*session_index_keys(self._config.key_prefix, namespace))
        return removed

    async def list_sessions(
        self,
        namespace: str,
        *,
        limit: int | None = None,
        after: tuple[float, str] | None = None,
    ) -> list[SessionInfo]:
        want = math.inf if limit is None else max(limit, 0)
        describe = self._script("describe")
        index, titles = session_index_keys(self._config.key_prefix, namespace)
        found: list[SessionInfo] = []
        gone: list[str] = []
        cursor = after
        async with redis_errors("list sessions", self._config.retry_after_s):
            while len(found) < want:
                batch = int(min(want - len(found), 500))
                rows = await self._after(index, cursor, batch)
                if not rows:
                    break
                cursor = (rows[-1][1], rows[-1][0])
                ids = [session_id for session_id, _ in rows]
                lists = [self._key(namespace, session_id) for session_id in ids]
                replies = await describe(keys=[titles, *lists], args=ids)
                for (session_id, score), turns, created, title in zip(
                    rows, replies[::3], replies[1::3], replies[2::3], strict=True
                ):
                    if not turns:  # expired or deleted since it was indexed
                        gone.append(session_id)
                        continue
                    started = float(created) if created is not None else score
                    found.append(SessionInfo(session_id, title or "", turns, started, score))
                if len(rows) < batch:
                    break
            if gone:
                lists = [self._key(namespace, s) for s in gone]
                await self._script("forget")(keys=[index, titles, *lists], args=gone)
        return found

    async def _after(
        self, index: str, cursor: tuple[float, str] | None, count: int
    ) -> list[tuple[str, float]]:
        """Up to ``count`` index entries after ``cursor`` (latest first, ties by greater id)."""
        top: float | str = "+inf"
        skip = 0
        if cursor is not None:
            top, last = cursor
            # Entries with exactly the cursor's score come in descending id order: skip
            # those up to and including the cursor's id.
            ties: Any = await self._redis.zrangebyscore(index, top, top)
            skip = sum(1 for member in ties if member >= last)
        rows: Any = await self._redis.zrevrangebyscore(
            index, top, "-inf", start=skip, num=count, withscores=True
        )
        return [(str(member), float(score)) for member, score in rows]

    async def rename(self, namespace: str, session_id: str, title: str) -> SessionInfo | None:
        script = self._script("rename")
        index, titles = session_index_keys(self._config.key_prefix, namespace)
        title = title[: SessionInfo.TITLE_MAX]
        args: list[str | int] = [session_id, title, self._now(), self._config.ttl_seconds]
        async with redis_errors("rename", self._config.retry_after_s):
            found = await script(keys=[self._key(namespace, session_id), index, titles], args=args)
        if not found:
            return None
        turns, created, score = found
        started = float(created) if created else float(score)
        return SessionInfo(session_id, title, int(turns), started, float(score))
