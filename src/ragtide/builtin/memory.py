"""In-process conversation memory for the embedded default (one process, nothing shared)."""

from __future__ import annotations

import heapq
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable

from pydantic import BaseModel, Field

from ragtide.observability import BUDGET_BYTES, BUDGET_EVICTIONS
from ragtide.types import ChatTurn, SessionInfo

__all__ = ["SESSION_OVERHEAD_BYTES", "TURN_OVERHEAD_BYTES", "InMemoryMemoryStore", "turn_bytes"]

# What a turn costs beyond its text: the ChatTurn object, its str header, its float, the
# list slot. A session adds its key tuple, id strings, list, OrderedDict node, entry in its
# namespace's index and its title (at most ``SessionInfo.TITLE_MAX`` characters, 4 UTF-8
# bytes each at most). Rough on purpose: the budget is a ceiling for the operator, not an
# exact RSS.
TURN_OVERHEAD_BYTES = 200
SESSION_OVERHEAD_BYTES = 400 + 4 * SessionInfo.TITLE_MAX

_live: weakref.WeakSet[InMemoryMemoryStore] = weakref.WeakSet()
BUDGET_BYTES.labels("sessions").set_function(lambda: sum(s.used_bytes for s in list(_live)))
_EVICTED_BYTES = BUDGET_EVICTIONS.labels("sessions", "bytes")
_EVICTED_COUNT = BUDGET_EVICTIONS.labels("sessions", "entries")


def turn_bytes(turn: ChatTurn) -> int:
    """The bytes a turn is accounted for: its UTF-8 text plus a fixed overhead."""
    return len(turn.content.encode("utf-8")) + TURN_OVERHEAD_BYTES


class _Session:
    __slots__ = ("created", "nbytes", "title", "touched", "turns", "updated")

    def __init__(self, touched: float, turns: list[ChatTurn], nbytes: int) -> None:
        self.touched, self.turns, self.nbytes = touched, turns, nbytes
        self.title = ""  # a rename's, else the first user message's (SessionInfo.title_of)
        self.created = self.updated = time.time()  # wall clock, for listings

    def info(self, session_id: str) -> SessionInfo:
        return SessionInfo(session_id, self.title, len(self.turns), self.created, self.updated)


class InMemoryMemoryStore:
    """``MemoryStore`` (entry point ``memory``): a bounded LRU of sessions with a TTL.

    Bounded twice: by ``max_sessions`` and by ``max_bytes`` (the UTF-8 size of every turn
    plus a fixed per-turn and per-session overhead). Past either, the least recently used
    sessions go first; a session alone over the byte budget loses its oldest turns.
    Evictions are counted in ``ragtide_budget_evictions{store="sessions"}``. Titles are
    cut to ``SessionInfo.TITLE_MAX`` characters, so the per-session overhead covers them.
    """

    class Config(BaseModel):
        max_sessions: int = Field(10_000, gt=0)
        max_turns: int = Field(200, gt=0, description="Turns kept per session (oldest dropped).")
        ttl_seconds: float = Field(86_400, gt=0, description="Idle time before a session expires.")
        max_bytes: int = Field(
            64 * 1024 * 1024,
            gt=0,
            description="Byte budget of every session together (text + overhead); least "
            "recently used sessions are evicted past it.",
        )

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._clock = clock  # for idle times (tests inject one)
        self._sessions: OrderedDict[tuple[str, str], _Session] = OrderedDict()
        self._by_namespace: dict[str, dict[str, _Session]] = {}  # the same, per namespace
        self._bytes = 0
        _live.add(self)

    @property
    def used_bytes(self) -> int:
        """Bytes accounted now (never above ``max_bytes`` after an append returns)."""
        return self._bytes

    async def ping(self) -> None:
        return None

    def _drop(self, key: tuple[str, str]) -> _Session | None:
        session = self._sessions.pop(key, None)
        if session is not None:
            self._bytes -= session.nbytes
            of_namespace = self._by_namespace[key[0]]
            del of_namespace[key[1]]
            if not of_namespace:
                del self._by_namespace[key[0]]
        return session

    def _get(self, key: tuple[str, str]) -> _Session | None:
        session = self._sessions.get(key)
        if session is None:
            return None
        if self._clock() - session.touched > self._config.ttl_seconds:
            self._drop(key)
            return None
        return session

    async def load(self, namespace: str, session_id: str, limit: int = 20) -> list[ChatTurn]:
        session = self._get((namespace, session_id))
        if session is None or not session.turns or limit <= 0:
            return []
        self._sessions.move_to_end((namespace, session_id))
        return list(session.turns[-limit:])

    async def append(self, namespace: str, session_id: str, *turns: ChatTurn) -> None:
        key = (namespace, session_id)
        session = self._get(key)
        if session is None:
            overhead = SESSION_OVERHEAD_BYTES + len(namespace) + len(session_id)
            session = self._sessions[key] = _Session(0.0, [], overhead)
            self._by_namespace.setdefault(namespace, {})[session_id] = session
            self._bytes += overhead
        added = sum(turn_bytes(t) for t in turns)
        session.turns.extend(turns)
        session.nbytes += added
        self._bytes += added
        if not session.title:
            session.title = SessionInfo.title_of(
                next((t.content for t in turns if t.role == "user"), "")
            )
        excess = len(session.turns) - self._config.max_turns
        if excess > 0:
            self._trim(session, excess)
        session.touched = self._clock()
        session.updated = time.time()
        self._sessions.move_to_end(key)
        while len(self._sessions) > self._config.max_sessions:
            self._drop(next(iter(self._sessions)))
            _EVICTED_COUNT.inc()
        while self._bytes > self._config.max_bytes and len(self._sessions) > 1:
            self._drop(next(iter(self._sessions)))
            _EVICTED_BYTES.inc()
        # Alone and still over: the session itself keeps only its latest turns.
        if self._bytes > self._config.max_bytes and len(session.turns) > 1:
            over = self._bytes - self._config.max_bytes
            drop = freed = 0
            while drop < len(session.turns) - 1 and freed < over:
                freed += turn_bytes(session.turns[drop])
                drop += 1
            self._trim(session, drop)
            _EVICTED_BYTES.inc(drop)

    def _trim(self, session: _Session, count: int) -> None:
        """Drop the ``count`` oldest turns of ``session``."""
        freed = sum(turn_bytes(t) for t in session.turns[:count])
        del session.turns[:count]
        session.nbytes -= freed
        self._bytes -= freed

    async def delete(self, namespace: str, session_id: str) -> bool:
        return self._drop((namespace, session_id)) is not None

    async def delete_namespace(self, namespace: str) -> int:
        doomed = [(namespace, session_id) for session_id in self._by_namespace.get(namespace, {})]
        for key in doomed:
            self._drop(key)
        return len(doomed)

    async def list_sessions(
        self,
        namespace: str,
        *,
        limit: int | None = None,
        after: tuple[float, str] | None = None,
    ) -> list[SessionInfo]:
        now, ttl = self._clock(), self._config.ttl_seconds
        found: list[tuple[float, str, _Session]] = []
        expired: list[tuple[str, str]] = []
        for session_id, session in self._by_namespace.get(namespace, {}).items():
            if now - session.touched > ttl:
                expired.append((namespace, session_id))
            elif after is None or (session.updated, session_id) < after:
                found.append((session.updated, session_id, session))
        for key in expired:
            self._drop(key)
        # (updated, id) is unique in a namespace: the tuples never compare their sessions.
        best = heapq.nlargest(len(found) if limit is None else max(limit, 0), found)
        return [session.info(session_id) for _, session_id, session in best]

    async def rename(self, namespace: str, session_id: str, title: str) -> SessionInfo | None:
        key = (namespace, session_id)
        session = self._get(key)
        if session is None:
            return None
        session.title = title[: SessionInfo.TITLE_MAX]
        self._sessions.move_to_end(key)
        return session.info(session_id)
