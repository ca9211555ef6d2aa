"""The dialogue flow: one turn in, one cited answer out.

    turn ─▶ history ─▶ intent (+ condensed query) ─▶ embed ─▶ retrieve ─▶ generate ─▶ save

``answer()`` and ``stream_answer()`` are the whole pipeline; every stage is a
component from the ``Runtime`` and is timed by ``stage()``.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any

import anyio

from ragtide.caching import lookup
from ragtide.errors import InvalidRequest, RagtideError
from ragtide.observability import (
    ANSWER_CACHE,
    CHAT_STREAMS_ABANDONED,
    CHAT_TURNS,
    LLM_TOKENS,
    TENANT_TOKENS,
    TENANT_TURNS,
    stage,
    tenant_label,
)
from ragtide.runtime import Runtime
from ragtide.types import (
    Answer,
    ChatTurn,
    Citation,
    Filter,
    Hit,
    Intent,
    Prompt,
    Reply,
    RetrievalRequest,
    split_namespace_key,
)

__all__ = [
    "Done",
    "Token",
    "answer",
    "citations_for",
    "new_session_id",
    "renumber_citations",
    "search",
    "stream_answer",
]

logger = logging.getLogger(__name__)

EVERYTHING = Filter()  # no narrowing beyond the namespace


def new_session_id() -> str:
    return uuid.uuid4().hex


async def search(
    rt: Runtime, namespace: str, query: str, top_k: int, filter: Filter = EVERYTHING
) -> list[Hit]:
    """Retrieval only: the chunks best matching ``query`` in ``namespace``."""
    await rt.require_namespace(namespace)
    async with stage("embed", rt.names.get("embedder", "?")):
        vector = await rt.embedder.embed_query(query)
    async with stage("retrieve", rt.names.get("retriever", "?")):
        return await rt.retriever.retrieve(
            RetrievalRequest(
                namespace=namespace, text=query, vector=vector, filter=filter, top_k=top_k
            )
        )


async def _understand(
    rt: Runtime,
    namespace: str,
    session_id: str,
    message: str,
    given: Sequence[ChatTurn] | None = None,
) -> tuple[Sequence[ChatTurn], Intent]:
    await rt.require_namespace(namespace)
    if not message.strip():
        raise InvalidRequest("message must not be empty")
    if len(message) > rt.settings.chat.max_message_chars:
        raise InvalidRequest(
            f"message is longer than {rt.settings.chat.max_message_chars} characters"
        )
    history: Sequence[ChatTurn]
    if given is not None:  # a stateless turn: the client sent the conversation
        history = given[-rt.settings.chat.history_turns :] if rt.settings.chat.history_turns else []
    else:
        async with stage("history", rt.names.get("memory", "?")):
            history = await rt.memory.load(namespace, session_id, rt.settings.chat.history_turns)
    async with stage("intent", rt.names.get("intent", "?")):
        intent = await rt.intent.detect(message, history)
    return history, intent


async def _cached(
    rt: Runtime, namespace: str, intent: Intent, filter: Filter
) -> tuple[str | None, dict[str, Any] | None]:
    """(key to store the answer under, cached answer): (None, None) when not cacheable.

    Only unfiltered questions that need the documents are cached: a policy filter makes
    the answer depend on who asks. A cache that is down counts as a miss.
    """
    if rt.cache is None or not intent.needs_retrieval or filter:
        return None, None
    try:
        key, value = await lookup(rt.cache, namespace, intent.query, rt.fingerprint)
    except RagtideError as exc:
        ANSWER_CACHE.labels("error").inc()
        logger.warning("answer cache unavailable", extra={"error": exc.code})
        return None, None
    ANSWER_CACHE.labels("miss" if value is None else "hit").inc()
    return key, value


async def _remember(rt: Runtime, namespace: str, key: str | None, answer: Answer) -> None:
    if rt.cache is None or key is None:
        return
    value = {"text": answer.text, "citations": [asdict(c) for c in answer.citations]}
    try:
        await rt.cache.put(namespace, key, value)
    except RagtideError as exc:
        ANSWER_CACHE.labels("error").inc()
        logger.warning("answer not cached", extra={"error": exc.code})


async def _save(rt: Runtime, namespace: str, session_id: str, message: str, text: str) -> None:
    async with stage("save", rt.names.get("memory", "?")):
        await rt.memory.append(
            namespace, session_id, ChatTurn.user(message), ChatTurn.assistant(text)
        )


def _from_cache(session_id: str, intent: Intent, value: dict[str, Any]) -> Answer:
    citations = tuple(Citation(**c) for c in value["citations"])
    return Answer(session_id, value["text"], citations, intent)


def citations_for(hits: Sequence[Hit], cited: Sequence[int]) -> tuple[Citation, ...]:
    """The citations of a reply whose ``[k]`` markers were renumbered (``renumber_citations``).

    ``cited[k - 1]`` is the 1-based position in ``hits`` of the passage the answer cites
    as ``[k]``; the result's ``index`` is ``k``, so the citations are numbered [1]..[k]
    in the order they first appear in the answer, each naming its hit's document and
    chunk. ``score`` is the hit's retrieval score relative to the best retrieved hit's,
    in [0, 1] (1.0: the top hit; it ranks passages, it is not a probability).
    """
    top = max((h.score for h in hits), default=0.0)
    out = []
    for k, index in enumerate(dict.fromkeys(i for i in cited if 1 <= i <= len(hits)), start=1):
        hit = hits[index - 1]
        score = min(max(hit.score / top, 0.0), 1.0) if top > 0 else 0.0
        out.append(
            Citation(
                k,
                hit.chunk.document_id,
                hit.chunk.id,
                hit.chunk.title,
                hit.chunk.text,
                score,
            )
        )
    return tuple(out)


# "[2]", "[1, 3]": a marker of hit numbers, as chat models write them (ragtide.prompts).
_MARKER = re.compile(r"\[\s*(\d{1,4}(?:\s*[,;]\s*\d{1,4})*)\s*\]")
_OPEN_MARKER = re.compile(r"\[[\d\s,;]{0,40}$")  # what may still become a marker
_PIECES = re.compile(r"\S+\s*|\s+")


class _Renumberer:
    """Rewrites ``[n]`` (n: a hit's position in the prompt) as ``[k]``, k numbering the
    cited hits 1, 2, … in order of first appearance; ``cited[k - 1]`` is k's hit.

    Text is fed in pieces as a model streams it; a piece ending inside what may be a
    marker is held back until the marker closes (or cannot be one). Numbers outside
    ``1..n_hits`` are dropped from a marker; a marker with none left is kept as written.
    """

    def __init__(self, n_hits: int) -> None:
        self.n_hits = n_hits
        self.numbers: dict[int, int] = {}
        self.pending = ""

    @property
    def cited(self) -> tuple[int, ...]:
        return tuple(self.numbers)

    def feed(self, piece: str) -> str:
        text = self.pending + piece
        held = _OPEN_MARKER.search(text)
        cut = held.start() if held else len(text)
        self.pending = text[cut:]
        return _MARKER.sub(self._marker, text[:cut])

    def flush(self) -> str:
        text, self.pending = self.pending, ""
        return _MARKER.sub(self._marker, text)

    def _marker(self, match: re.Match[str]) -> str:
        found = [int(n) for n in re.findall(r"\d+", match.group(1))]
        valid = [n for n in dict.fromkeys(found) if 1 <= n <= self.n_hits]
        if not valid:
            return match.group()
        for n in valid:
            self.numbers.setdefault(n, len(self.numbers) + 1)
        return "[" + ", ".join(str(k) for k in sorted(self.numbers[n] for n in valid)) + "]"


def renumber_citations(text: str, n_hits: int) -> tuple[str, tuple[int, ...]]:
    """``text`` with its ``[n]`` markers numbered [1]..[k] in order of appearance, and
    the hit positions they stand for (``cited[k - 1]`` for ``[k]``)."""
    renumberer = _Renumberer(n_hits)
    out = renumberer.feed(text) + renumberer.flush()
    return out, renumberer.cited


async def answer(
    rt: Runtime,
    namespace: str,
    message: str,
    session_id: str | None = None,
    filter: Filter = EVERYTHING,
    history: Sequence[ChatTurn] | None = None,
    options: Mapping[str, Any] | None = None,
) -> Answer:
    """Answer one turn of a session and save both sides of it.

    With ``history`` the turn is stateless: that conversation is used as the context and
    nothing is loaded from or saved to the memory store (OpenAI-style clients).
    ``options`` (``max_tokens``, ``temperature``) reach the chat model in the prompt.
    """
    session_id = session_id or new_session_id()
    stateless = history is not None
    context, intent = await _understand(rt, namespace, session_id, message, history)
    key, cached = await _cached(rt, namespace, intent, filter)
    if cached is not None:
        result = _from_cache(session_id, intent, cached)
    else:
        hits = await _retrieve(rt, namespace, intent, filter)
        prompt = Prompt(message, intent, context, hits, dict(options or {}))
        async with stage("generate", rt.names.get("chat_model", "?")):
            reply = await rt.chat_model.generate(prompt)
        _count_tokens(rt, namespace, reply)
        text, cited = renumber_citations(reply.text, len(hits))
        citations = citations_for(hits, cited or reply.cited)
        result = Answer(session_id, text, citations, intent, dict(reply.usage))
        await _remember(rt, namespace, key, result)
    if not stateless:
        await _save(rt, namespace, session_id, message, result.text)
    _count_turn(namespace, intent, result)
    return result


def _count_turn(namespace: str, intent: Intent, result: Answer) -> None:
    CHAT_TURNS.labels(intent.kind, "cited" if result.citations else "uncited").inc()
    TENANT_TURNS.labels(tenant_label(split_namespace_key(namespace)[0])).inc()


def _count_tokens(rt: Runtime, namespace: str, reply: Reply) -> None:
    """The tokens the chat model reported (an LLM's bill); models that report none add 0."""
    component = rt.names.get("chat_model", "?")
    tenant = tenant_label(split_namespace_key(namespace)[0])
    for kind in ("prompt", "completion"):
        count = reply.usage.get(f"{kind}_tokens", 0)
        if count > 0:
            LLM_TOKENS.labels(component, kind).inc(count)
            TENANT_TOKENS.labels(tenant, kind).inc(count)


async def _retrieve(rt: Runtime, namespace: str, intent: Intent, filter: Filter) -> list[Hit]:
    if not intent.needs_retrieval:
        return []
    return await search(rt, namespace, intent.query, rt.settings.retrieval.top_k, filter)


@dataclass(frozen=True, slots=True)
class Token:
    text: str


@dataclass(frozen=True, slots=True)
class Done:
    answer: Answer


async def stream_answer(
    rt: Runtime,
    namespace: str,
    message: str,
    session_id: str | None = None,
    filter: Filter = EVERYTHING,
    history: Sequence[ChatTurn] | None = None,
    on_answer: Callable[[Answer], Awaitable[None]] | None = None,
    options: Mapping[str, Any] | None = None,
) -> AsyncGenerator[Token | Done, None]:
    """Like ``answer()``, but yields the text as it is generated and the answer last.

    Everything that can be refused (unknown namespace, bad message) is checked before
    this returns, so an edge can still answer with an error status.

    The turn is saved only once the whole answer was produced: a client that goes away
    mid-stream leaves the session as it was. Precisely, the turn is *committed* when the
    chat model's stream has ended (for an LLM: its end of stream, ``[DONE]``) and the
    consumer asks for the event after the last ``Token``. Committing saves the turn,
    caches the answer, counts it (``ragtide_chat_turns``, tokens) and awaits
    ``on_answer`` (the edge's own accounting, e.g. the tenant's daily quota) as one unit
    that cancellation does not interrupt; ``Done`` follows.

    - Stopped before the commit (the consumer is cancelled, or closes this generator
      with ``aclose()``): the chat model's stream is closed at once (an LLM's HTTP
      response is closed, so the provider sees the connection drop and stops
      generating), nothing is saved, cached or counted as a turn, and
      ``ragtide_chat_streams_abandoned`` goes up. This includes a client that received
      the last token but went away before the model signalled its end.
    - Stopped during or after the commit (e.g. the client went away after the last
      token, while ``done`` was being sent): the turn stays saved and counted although
      the client may never see ``done``. A client that did not receive ``done`` cannot
      tell which case it was in; it can look at its session (with its own session id).

    A generator that is never started does nothing and counts nothing.
    """
    session_id = session_id or new_session_id()
    stateless = history is not None
    context, intent = await _understand(rt, namespace, session_id, message, history)
    key, cached = await _cached(rt, namespace, intent, filter)
    hits = [] if cached is not None else await _retrieve(rt, namespace, intent, filter)

    async def commit(result: Answer) -> None:
        if cached is None:
            await _remember(rt, namespace, key, result)
        if not stateless:
            await _save(rt, namespace, session_id, message, result.text)
        _count_turn(namespace, intent, result)
        if on_answer is not None:
            await on_answer(result)

    async def events() -> AsyncGenerator[Token | Done, None]:
        committing = False
        try:
            if cached is not None:
                result = _from_cache(session_id, intent, cached)
                for word in _PIECES.findall(result.text):
                    yield Token(word)
            else:
                prompt = Prompt(message, intent, context, hits, dict(options or {}))
                pieces: list[str] = []
                # Markers are renumbered [1]..[k] as the text streams (a piece that ends
                # inside a possible marker is held back until it closes).
                renumber = _Renumberer(len(hits))
                async with stage("generate", rt.names.get("chat_model", "?")):
                    async with _closing(rt.chat_model.stream(prompt)) as stream:
                        async for piece in stream:
                            piece = renumber.feed(piece)
                            if piece:
                                pieces.append(piece)
                                yield Token(piece)
                        rest = renumber.flush()
                        if rest:
                            pieces.append(rest)
                            yield Token(rest)
                    # Models that report usage while streaming expose it once done.
                    usage = dict(getattr(stream, "usage", None) or {})
                text = "".join(pieces)
                citations = citations_for(hits, renumber.cited)
                _count_tokens(rt, namespace, Reply(text, (), usage))
                result = Answer(session_id, text, citations, intent, usage)
            # The answer is complete: from here on the turn happens whatever the client
            # does. Nothing between the end of the model's stream and the shield can
            # suspend unshielded, so a cancellation either landed while the model was
            # still streaming (nothing saved) or waits for the whole commit.
            committing = True
            with anyio.CancelScope(shield=True):
                await commit(result)
        except (GeneratorExit, anyio.get_cancelled_exc_class()):
            if not committing:
                CHAT_STREAMS_ABANDONED.inc()
                logger.info("chat stream abandoned", extra={"namespace": namespace})
            raise
        yield Done(result)

    return events()


@asynccontextmanager
async def _closing(stream: AsyncIterator[str]) -> AsyncIterator[AsyncIterator[str]]:
    """Close a chat model's stream however the loop over it ends (``aclose()`` if it has
    one: an async generator runs its ``finally`` blocks now, not when collected)."""
    try:
        yield stream
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            with anyio.CancelScope(shield=True):
                await close()
