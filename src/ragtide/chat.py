"""The dialogue flow: one turn in, one cited answer out.

    turn ─▶ history ─▶ intent (+ condensed query) ─▶ embed ─▶ retrieve ─▶ generate ─▶ save

``answer()`` and ``stream_answer()`` are the whole pipeline; every stage is a
component from the ``Runtime`` and is timed by ``stage()``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from ragtide.errors import InvalidRequest
from ragtide.observability import CHAT_TURNS, stage
from ragtide.prompts import cited_indexes
from ragtide.runtime import Runtime
from ragtide.types import (
    Answer,
    ChatTurn,
    Citation,
    Filter,
    Hit,
    Prompt,
    RetrievalRequest,
)

__all__ = ["Done", "Token", "answer", "citations_for", "new_session_id", "search", "stream_answer"]

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


async def _prepare(
    rt: Runtime, namespace: str, session_id: str, message: str, filter: Filter
) -> Prompt:
    await rt.require_namespace(namespace)
    if not message.strip():
        raise InvalidRequest("message must not be empty")
    if len(message) > rt.settings.chat.max_message_chars:
        raise InvalidRequest(
            f"message is longer than {rt.settings.chat.max_message_chars} characters"
        )
    async with stage("history", rt.names.get("memory", "?")):
        history = await rt.memory.load(namespace, session_id, rt.settings.chat.history_turns)
    async with stage("intent", rt.names.get("intent", "?")):
        intent = await rt.intent.detect(message, history)
    hits: list[Hit] = []
    if intent.needs_retrieval:
        hits = await search(rt, namespace, intent.query, rt.settings.retrieval.top_k, filter)
    return Prompt(message=message, intent=intent, history=history, hits=hits)


def citations_for(hits: Sequence[Hit], cited: Sequence[int]) -> tuple[Citation, ...]:
    """The hits a reply cited, keeping their 1-based ``[n]`` index."""
    out = []
    for index in sorted(set(cited)):
        if 1 <= index <= len(hits):
            hit = hits[index - 1]
            out.append(
                Citation(
                    index,
                    hit.chunk.document_id,
                    hit.chunk.id,
                    hit.chunk.title,
                    hit.chunk.text,
                    hit.score,
                )
            )
    return tuple(out)


async def answer(
    rt: Runtime,
    namespace: str,
    message: str,
    session_id: str | None = None,
    filter: Filter = EVERYTHING,
) -> Answer:
    """Answer one turn of a session and save both sides of it."""
    session_id = session_id or new_session_id()
    prompt = await _prepare(rt, namespace, session_id, message, filter)
    async with stage("generate", rt.names.get("chat_model", "?")):
        reply = await rt.chat_model.generate(prompt)
    async with stage("save", rt.names.get("memory", "?")):
        await rt.memory.append(
            namespace, session_id, ChatTurn.user(message), ChatTurn.assistant(reply.text)
        )
    citations = citations_for(prompt.hits, reply.cited)
    CHAT_TURNS.labels(prompt.intent.kind, "cited" if citations else "uncited").inc()
    return Answer(session_id, reply.text, citations, prompt.intent)


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
) -> AsyncIterator[Token | Done]:
    """Like ``answer()``, but yields the text as it is generated and the answer last.

    Everything that can be refused (unknown namespace, bad message) is checked before
    this returns, so an edge can still answer with an error status. The turn is saved
    only once the whole answer was produced: a client that goes away mid-stream leaves
    the session as it was.
    """
    session_id = session_id or new_session_id()
    prompt = await _prepare(rt, namespace, session_id, message, filter)

    async def events() -> AsyncIterator[Token | Done]:
        pieces: list[str] = []
        async with stage("generate", rt.names.get("chat_model", "?")):
            async for piece in rt.chat_model.stream(prompt):
                pieces.append(piece)
                yield Token(piece)
        text = "".join(pieces)
        async with stage("save", rt.names.get("memory", "?")):
            await rt.memory.append(
                namespace, session_id, ChatTurn.user(message), ChatTurn.assistant(text)
            )
        citations = citations_for(prompt.hits, cited_indexes(text, len(prompt.hits)))
        CHAT_TURNS.labels(prompt.intent.kind, "cited" if citations else "uncited").inc()
        yield Done(Answer(session_id, text, citations, prompt.intent))

    return events()
