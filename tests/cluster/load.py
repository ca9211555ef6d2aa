"""A bounded load of multi-turn conversations, and the audit of what the sessions kept.

``ConversationLoad`` runs ``conversations`` clients on a thread of its own; each client
talks in sessions of ``turns`` turns, one turn after the other, and records every request
(``Turn``). A turn is *acknowledged* when the client got a 200 with its answer. The load
stops by itself after ``max_requests`` requests or ``max_seconds``.

Each request opens a new connection to nginx (no client keepalive). nginx closes idle
client connections when a reload retires a worker; a client that writes a POST on such a
connection at that instant cannot know whether it was processed, and HTTP clients do not
retry a POST. Fresh connections are always either served or never opened.

``audit()`` reads every session back and checks that each acknowledged turn (user and
assistant) is there exactly once and in order. A turn that failed may or may not be
there (a replica killed after saving it and before answering), but never twice.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx

__all__ = ["Audit", "ConversationLoad", "Turn", "acked", "audit", "message_for"]

TOPICS = (
    "How does Ragtide scale on Kubernetes",
    "And what about the readiness probe",
    "And what about draining on SIGTERM",
    "And what about the autoscaler signals",
    "And what about sessions in Redis",
    "And what about documents in PostgreSQL",
    "And what about the limits of one replica",
    "And what about the chat endpoint",
)


def message_for(conversation: int, session: int, turn: int) -> str:
    """A unique message; turns after the first are follow-ups that lean on the history."""
    return f"{TOPICS[turn % len(TOPICS)]}? ref{conversation}x{session}x{turn}"


@dataclass(slots=True)
class Turn:
    session_id: str
    index: int  # position in the session, counting failed turns too
    message: str
    started: float  # time.monotonic()
    ended: float = 0.0
    status: int | None = None  # None: no HTTP response at all
    code: str | None = None  # the error code of a Ragtide or nginx error body
    retry_after: str | None = None
    upstream: str | None = None  # X-Upstream from nginx: every replica tried, in order
    answer: str | None = None
    query: str | None = None  # the intent's (condensed) query
    error: str | None = None  # the transport exception, when there was no response

    @property
    def acknowledged(self) -> bool:
        return self.status == 200 and self.answer is not None

    @property
    def replica(self) -> str | None:
        """The replica that answered (nginx lists earlier attempts first)."""
        return self.upstream.split(",")[-1].strip() if self.upstream else None


def acked(since: float = float("-inf"), replica: str | None = None) -> Callable[[Turn], bool]:
    """Turns acknowledged that started after ``since`` (answered by ``replica``)."""

    def predicate(t: Turn) -> bool:
        return t.acknowledged and t.started > since and replica in (None, t.replica)

    return predicate


async def post_turn(
    client: httpx.AsyncClient, namespace: str, session_id: str, index: int, message: str
) -> Turn:
    turn = Turn(session_id, index, message, time.monotonic())
    try:
        r = await client.post(
            f"/v1/namespaces/{namespace}/chat",
            json={"session_id": session_id, "message": message},
        )
    except httpx.HTTPError as exc:
        turn.error = type(exc).__name__
    else:
        turn.status = r.status_code
        turn.upstream = r.headers.get("x-upstream")
        turn.retry_after = r.headers.get("retry-after")
        try:
            body = r.json()
        except ValueError:
            body = {}
        if r.status_code == 200:
            turn.answer = body["answer"]
            turn.query = body["intent"]["query"]
        elif isinstance(body, dict) and isinstance(body.get("error"), dict):
            turn.code = body["error"].get("code")
    turn.ended = time.monotonic()
    return turn


class ConversationLoad:
    """``conversations`` concurrent multi-turn chats against ``url``, on a background thread."""

    _runs = itertools.count()

    def __init__(
        self,
        url: str,
        namespace: str,
        *,
        conversations: int = 6,
        turns: int = 10,
        max_requests: int = 5000,
        max_seconds: float = 60.0,
        timeout_s: float = 10.0,
        pause_after_error_s: float = 0.05,
    ) -> None:
        self.url = url
        self.namespace = namespace
        self.conversations = conversations
        self.turns = turns
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.timeout_s = timeout_s
        self.pause_after_error_s = pause_after_error_s
        self.records: list[Turn] = []
        self.sessions: list[str] = []
        self._run = f"{time.time_ns() % 10**9}-{next(self._runs)}"
        self._issued = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="conversation-load", daemon=True)
        self._failure: BaseException | None = None

    def __enter__(self) -> ConversationLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> list[Turn]:
        self._stop.set()
        self._thread.join(self.max_seconds + self.timeout_s + 10)
        if self._thread.is_alive():
            raise AssertionError("the load did not stop")
        if self._failure is not None:
            raise AssertionError(f"the load crashed: {self._failure!r}") from self._failure
        return self.records

    def join(self, timeout: float) -> list[Turn]:
        """Wait for the load to end by itself (its request or time budget)."""
        self._thread.join(timeout)
        return self.stop()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def count(self, predicate: Callable[[Turn], bool] = lambda t: t.acknowledged) -> int:
        return sum(1 for t in list(self.records) if predicate(t))

    def wait_count(
        self, predicate: Callable[[Turn], bool], n: int, timeout: float, what: str
    ) -> None:
        """Poll until ``n`` recorded turns satisfy ``predicate``; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.count(predicate) < n:
            if not self.running:
                raise AssertionError(f"the load ended before: {what}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout}s: {what}")
            time.sleep(0.02)

    def _main(self) -> None:
        try:
            asyncio.run(self._drive())
        except BaseException as exc:  # reported by stop()
            self._failure = exc

    async def _drive(self) -> None:
        limits = httpx.Limits(max_connections=self.conversations, max_keepalive_connections=0)
        async with httpx.AsyncClient(
            base_url=self.url, timeout=self.timeout_s, limits=limits
        ) as client:
            deadline = time.monotonic() + self.max_seconds
            await asyncio.gather(
                *(self._converse(client, c, deadline) for c in range(self.conversations))
            )

    def _more(self, deadline: float) -> bool:
        return (
            not self._stop.is_set()
            and time.monotonic() < deadline
            and self._issued < self.max_requests
        )

    async def _converse(self, client: httpx.AsyncClient, c: int, deadline: float) -> None:
        for s in itertools.count():
            session_id = f"load-{self._run}-{c}-{s}"
            self.sessions.append(session_id)
            for k in range(self.turns):
                if not self._more(deadline):
                    return
                self._issued += 1
                turn = await post_turn(client, self.namespace, session_id, k, message_for(c, s, k))
                self.records.append(turn)
                if not turn.acknowledged:
                    await asyncio.sleep(self.pause_after_error_s)  # pacing, not a sync point


@dataclass(slots=True)
class Audit:
    sessions: int = 0
    acknowledged: int = 0  # turns the clients got a 200 for
    acknowledged_present: int = 0  # of those, found exactly once with their answer
    missing: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    wrong_answer: list[str] = field(default_factory=list)
    out_of_order: list[str] = field(default_factory=list)  # sessions
    unacknowledged_present: int = 0  # failed turns that were saved all the same
    foreign: list[str] = field(default_factory=list)  # history entries nobody sent
    malformed: list[str] = field(default_factory=list)  # sessions not user/assistant pairs

    @property
    def lost(self) -> int:
        return len(self.missing)

    def clean(self) -> bool:
        return not (
            self.missing
            or self.duplicated
            or self.wrong_answer
            or self.out_of_order
            or self.foreign
            or self.malformed
        )


def audit(url: str, namespace: str, turns: Sequence[Turn]) -> Audit:
    """Read every session of ``turns`` back through ``url`` and compare."""
    by_session: dict[str, list[Turn]] = {}
    for t in turns:
        by_session.setdefault(t.session_id, []).append(t)
    result = Audit(sessions=len(by_session))
    with httpx.Client(base_url=url, timeout=10) as client:
        for session_id, sent in by_session.items():
            sent.sort(key=lambda t: t.index)
            r = client.get(f"/v1/namespaces/{namespace}/sessions/{session_id}")
            if r.status_code == 404:
                history: list[dict[str, str]] = []
            else:
                assert r.status_code == 200, f"GET session {session_id}: {r.status_code} {r.text}"
                history = r.json()["turns"]
            _compare(session_id, sent, history, result)
    return result


def _compare(
    session_id: str, sent: list[Turn], history: list[dict[str, str]], result: Audit
) -> None:
    roles = [h["role"] for h in history]
    if len(history) % 2 or roles != ["user", "assistant"] * (len(history) // 2):
        result.malformed.append(session_id)
        return
    pairs = [(history[i]["content"], history[i + 1]["content"]) for i in range(0, len(history), 2)]
    seen = Counter(user for user, _ in pairs)
    by_message = {t.message: t for t in sent}
    for user, _ in pairs:
        if user not in by_message:
            result.foreign.append(f"{session_id}: {user[:60]}")
    for t in sent:
        if t.acknowledged:
            result.acknowledged += 1
        n = seen[t.message]
        if n > 1:
            result.duplicated.append(t.message)
        if not t.acknowledged:
            result.unacknowledged_present += min(n, 1)
            continue
        if n == 0:
            result.missing.append(t.message)
            continue
        answer = next(a for u, a in pairs if u == t.message)
        if answer != t.answer:
            result.wrong_answer.append(t.message)
        elif n == 1:
            result.acknowledged_present += 1
    order = [by_message[u].index for u, _ in pairs if u in by_message]
    if order != sorted(order):
        result.out_of_order.append(session_id)
