"""The dialogue flow: one turn in, one cited answer out.

    turn ─▶ history ─▶ intent (+ condensed query) ─▶ embed ─▶ retrieve
         ─▶ generate (with the tenant's tools, if any) ─▶ verify ─▶ save

``answer()`` and ``stream_answer()`` are the whole pipeline; every stage is a
component from the ``Runtime`` and is timed by ``stage()``. Every answer to a question is
verified against the retrieved hits (``ragtide.grounding``: citations checked, sentences
scored, the tenant's policy for unsupported answers applied). When the tenant enables
tools (``Runtime.tools``) and its chat model can call them (``ToolCallingModel``), the
answer comes from the bounded tool loop (``ragtide.tools.ToolEngine``); its calls are
saved in the session as ``tool`` turns and streamed as ``ToolCall``/``ToolResult``.
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
import orjson

from ragtide.caching import lookup
from ragtide.citations import Renumberer, citations_for, renumber_citations
from ragtide.errors import InvalidRequest, NamespaceNotFound, RagtideError
from ragtide.grounding import ground, numbered
from ragtide.observability import (
    ANSWER_CACHE,
    CHAT_STREAMS_ABANDONED,
    CHAT_TURNS,
    CITATIONS_DROPPED,
    GROUNDED_ANSWERS,
    LLM_TOKENS,
    TENANT_TOKENS,
    TENANT_TURNS,
    stage,
    tenant_label,
)
from ragtide.prompts import distinct_hits
from ragtide.runtime import Runtime
from ragtide.support import default_scorer
from ragtide.tools import (
    ToolCallFinished,
    ToolCallingModel,
    ToolCallStarted,
    ToolContext,
    ToolEngine,
    ToolLimits,
    ToolRun,
)
from ragtide.types import (
    Answer,
    ChatTurn,
    Citation,
    Filter,
    Grounding,
    Hit,
    Intent,
    Prompt,
    Reply,
    RetrievalRequest,
    SentenceSupport,
    split_namespace_key,
)

__all__ = [
    "Done",
    "Token",
    "ToolCall",
    "ToolResult",
    "answer",
    "citations_for",
    "new_session_id",
    "renumber_citations",
    "search",
    "stream_answer",
    "tool_context",
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
    history = [turn for turn in history if turn.role != "tool"]  # tool calls: saved, not replayed
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
    if rt.cache is None or not intent.needs_retrieval or filter or rt.tools:
        return None, None  # answers with tools may depend on the day, other namespaces…
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
    value = {
        "text": answer.text,
        "citations": [asdict(c) for c in answer.citations],
        "grounding": asdict(answer.grounding) if answer.grounding is not None else None,
    }
    try:
        await rt.cache.put(namespace, key, value)
    except RagtideError as exc:
        ANSWER_CACHE.labels("error").inc()
        logger.warning("answer not cached", extra={"error": exc.code})


async def _save(rt: Runtime, namespace: str, session_id: str, message: str, result: Answer) -> None:
    """The user's turn, the turn's tool calls (``tool`` turns, JSON) and the answer."""
    tools = [ChatTurn.tool(orjson.dumps(call).decode()) for call in result.tool_calls]
    async with stage("save", rt.names.get("memory", "?")):
        await rt.memory.append(
            namespace,
            session_id,
            ChatTurn.user(message),
            *tools,
            ChatTurn.assistant(result.text),
        )


def _from_cache(session_id: str, intent: Intent, value: dict[str, Any]) -> Answer:
    citations = tuple(Citation(**c) for c in value["citations"])
    grounding = None
    if value.get("grounding"):
        g = dict(value["grounding"])
        sentences = tuple(
            SentenceSupport(
                s["text"],
                s["supported"],
                s["support"],
                tuple(s["citations"]),
                tuple(s["attached"]),
            )
            for s in g.pop("sentences")
        )
        grounding = Grounding(**g, sentences=sentences)
    return Answer(session_id, value["text"], citations, intent, grounding=grounding)


_PIECES = re.compile(r"\S+\s*|\s+")  # word-sized pieces of a text to stream


async def answer(
    rt: Runtime,
    namespace: str,
    message: str,
    session_id: str | None = None,
    filter: Filter = EVERYTHING,
    history: Sequence[ChatTurn] | None = None,
    options: Mapping[str, Any] | None = None,
    tools: ToolContext | None = None,
) -> Answer:
    """Answer one turn of a session and save both sides of it.

    With ``history`` the turn is stateless: that conversation is used as the context and
    nothing is loaded from or saved to the memory store (OpenAI-style clients).
    ``options`` (``max_tokens``, ``temperature``) reach the chat model in the prompt.
    ``tools`` is what the tenant's tools may reach (``tool_context``: the edge builds it
    from the caller's credential); without it they reach only this turn's namespace.
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
        calls: tuple[Mapping[str, Any], ...] = ()
        async with stage("generate", rt.names.get("chat_model", "?")):
            model = _tool_model(rt)
            if model is None:
                reply = await rt.chat_model.generate(prompt)
            else:
                run = await _engine(rt).run(
                    model, prompt, rt.tools, ctx=tools or _own_tools(rt, namespace, filter)
                )
                reply, calls = run.reply, tuple(r.as_dict() for r in run.calls)
        _count_tokens(rt, namespace, reply)
        result = _verified(rt, session_id, intent, hits, reply, calls)
        await _remember(rt, namespace, key, result)
    if not stateless:
        await _save(rt, namespace, session_id, message, result)
    _count_turn(namespace, intent, result)
    return result


def _verified(
    rt: Runtime,
    session_id: str,
    intent: Intent,
    hits: Sequence[Hit],
    reply: Reply,
    calls: tuple[Mapping[str, Any], ...] = (),
) -> Answer:
    """The answer to ``reply``: verified against ``hits`` when the turn retrieved (a
    greeting has nothing to verify), its citations renumbered [1]..[k]."""
    if not intent.needs_retrieval:
        text, cited = renumber_citations(reply.text, len(hits))
        citations = citations_for(hits, cited or reply.cited)
        return Answer(session_id, text, citations, intent, dict(reply.usage), None, calls)
    settings = rt.settings.chat
    grounded = ground(
        reply.text,
        hits,
        default_scorer(),
        policy=settings.grounding,
        threshold=settings.min_support,
        decline_text=settings.decline_text,
    )
    report = grounded.grounding
    declined = report.action == "declined"
    text, cited = renumber_citations(grounded.text, len(hits))
    if declined:
        cited = ()
    CITATIONS_DROPPED.inc(report.dropped_citations)
    outcome: str = report.action
    if outcome == "none":
        outcome = "supported" if report.supported else "unsupported"
    GROUNDED_ANSWERS.labels(outcome).inc()
    citations = citations_for(hits, cited)
    grounding = numbered(grounded, cited, declined)
    return Answer(session_id, text, citations, intent, dict(reply.usage), grounding, calls)


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
    """The hits a chat model sees: best first, a passage repeated (the same chunk, or its
    text inside a better hit's) only once, so the sources are numbered without gaps."""
    if not intent.needs_retrieval:
        return []
    hits = await search(rt, namespace, intent.query, rt.settings.retrieval.top_k, filter)
    return distinct_hits(hits)


@dataclass(frozen=True, slots=True)
class Token:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model called a tool (streamed before its result)."""

    step: int
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolResult:
    """A tool call's result, as the model got it (``ToolRecord.as_dict()``)."""

    call: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Done:
    """The answer, last. Its ``text`` is final: it may differ from the streamed tokens
    (verification attaches or drops citations; ``strip``/``decline`` change the text)."""

    answer: Answer


# --- tools -------------------------------------------------------------------------------


def _tool_model(rt: Runtime) -> ToolCallingModel | None:
    """The chat model, when the tenant enabled tools and the model can call them."""
    if not rt.tools or not isinstance(rt.chat_model, ToolCallingModel):
        return None
    return rt.chat_model


def _engine(rt: Runtime) -> ToolEngine:
    bounds = rt.settings.chat.tools
    return ToolEngine(ToolLimits(**bounds.model_dump()))


def tool_context(
    namespace: str,
    search_in: Callable[[str | None, str, int], Awaitable[Sequence[Hit]]],
    document_in: Callable[[str | None, str], Awaitable[Mapping[str, Any] | None]] | None = None,
) -> ToolContext:
    """What tools may reach in a turn: ``namespace`` is the turn's (as the caller names
    it); ``search_in``/``document_in`` resolve a namespace name (None: the turn's) with
    the caller's credential and policies, as the edge does for the caller itself."""
    return ToolContext(namespace=namespace, search=search_in, get_document=document_in)


def _own_tools(rt: Runtime, namespace: str, filter: Filter) -> ToolContext:
    """Tools that reach only the turn's own namespace (with its access filter)."""
    name = split_namespace_key(namespace)[1]

    async def search_own(other: str | None, query: str, top_k: int) -> Sequence[Hit]:
        if other not in (None, name):
            raise NamespaceNotFound(str(other))
        return await search(rt, namespace, query, top_k, filter)

    return tool_context(name, search_own)


async def stream_answer(
    rt: Runtime,
    namespace: str,
    message: str,
    session_id: str | None = None,
    filter: Filter = EVERYTHING,
    history: Sequence[ChatTurn] | None = None,
    on_answer: Callable[[Answer], Awaitable[None]] | None = None,
    options: Mapping[str, Any] | None = None,
    tools: ToolContext | None = None,
) -> AsyncGenerator[Token | ToolCall | ToolResult | Done, None]:
    """Like ``answer()``, but yields the text as it is generated and the answer last.

    Tokens are sent as the model writes them (their ``[n]`` renumbered on the fly); the
    verification happens once the text is complete, so ``Done.answer.text`` is the final
    text and replaces the streamed one (they differ when citations were attached or
    dropped, or the tenant's policy stripped or declined). With tools, ``ToolCall`` and
    ``ToolResult`` come as the loop runs, and the answer's text follows in word-sized
    tokens (the tool loop's model calls are not streamed).

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
            await _save(rt, namespace, session_id, message, result)
        _count_turn(namespace, intent, result)
        if on_answer is not None:
            await on_answer(result)

    async def events() -> AsyncGenerator[Token | ToolCall | ToolResult | Done, None]:
        committing = False
        try:
            if cached is not None:
                result = _from_cache(session_id, intent, cached)
                for word in _PIECES.findall(result.text):
                    yield Token(word)
            else:
                prompt = Prompt(message, intent, context, hits, dict(options or {}))
                raw: list[str] = []  # as the model wrote it, for verification
                calls: tuple[Mapping[str, Any], ...] = ()
                # Markers are renumbered [1]..[k] as the text streams (a piece that ends
                # inside a possible marker is held back until it closes).
                renumber = Renumberer(len(hits))
                model = _tool_model(rt)
                async with stage("generate", rt.names.get("chat_model", "?")):
                    if model is None:
                        async with _closing(rt.chat_model.stream(prompt)) as stream:
                            async for piece in stream:
                                raw.append(piece)
                                piece = renumber.feed(piece)
                                if piece:
                                    yield Token(piece)
                        # Models that report usage while streaming expose it once done.
                        usage = dict(getattr(stream, "usage", None) or {})
                    else:
                        run: ToolRun | None = None
                        ctx = tools or _own_tools(rt, namespace, filter)
                        loop = _engine(rt).events(model, prompt, rt.tools, ctx=ctx)
                        async with _closing(loop) as steps:
                            async for step in steps:
                                if isinstance(step, ToolCallStarted):
                                    yield ToolCall(
                                        step.step, step.call_id, step.name, step.arguments
                                    )
                                elif isinstance(step, ToolCallFinished):
                                    yield ToolResult(step.record.as_dict())
                                else:
                                    run = step
                        assert run is not None
                        calls = tuple(r.as_dict() for r in run.calls)
                        usage = dict(run.usage)
                        for word in _PIECES.findall(run.reply.text):
                            raw.append(word)
                            piece = renumber.feed(word)
                            if piece:
                                yield Token(piece)
                rest = renumber.flush()
                if rest:
                    yield Token(rest)
                reply = Reply("".join(raw), (), usage)
                _count_tokens(rt, namespace, reply)
                result = _verified(rt, session_id, intent, hits, reply, calls)
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
async def _closing(stream: AsyncIterator[Any]) -> AsyncIterator[AsyncIterator[Any]]:
    """Close a chat model's stream however the loop over it ends (``aclose()`` if it has
    one: an async generator runs its ``finally`` blocks now, not when collected)."""
    try:
        yield stream
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            with anyio.CancelScope(shield=True):
                await close()
