"""The dialogue flow (``ragtide.chat``) on a real in-process runtime (embedded store,
hashing embedder, extractive model, in-memory memory and answer cache): streamed answers
from the cache, stateless and filtered streams, follow-ups in a session, the prompt the
model sees, and the stage timings.

The only stand-in wraps the runtime's own chat model to record the prompts it is given."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from prometheus_client import REGISTRY

from ragtide.chat import (
    Done,
    Token,
    ToolCall,
    ToolResult,
    answer,
    search,
    stream_answer,
    tool_context,
)
from ragtide.errors import BackendUnavailable, InvalidRequest, NamespaceNotFound
from ragtide.ingest.pipeline import Ingestor
from ragtide.runtime import Runtime, build_runtime
from ragtide.settings import Settings
from ragtide.tools.builtin import SearchTool
from ragtide.types import Answer, ChatTurn, Filter, Prompt, Reply

pytestmark = pytest.mark.anyio

PODS = (
    b"# Pods\n\nA Pod is the smallest deployable unit of computing in Kubernetes. "
    b"A Pod runs one or more containers that share storage and network.\n\n"
    b"## Limits\n\nEach container in a Pod declares CPU and memory limits.\n"
)


class RecordingModel:
    """The runtime's chat model, recording each prompt it is given."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.prompts: list[Prompt] = []

    @property
    def model_id(self) -> str:
        return str(self.inner.model_id)

    async def generate(self, prompt: Prompt) -> Reply:
        self.prompts.append(prompt)
        reply: Reply = await self.inner.generate(prompt)
        return reply

    def stream(self, prompt: Prompt) -> AsyncIterator[str]:
        self.prompts.append(prompt)
        stream: AsyncIterator[str] = self.inner.stream(prompt)
        return stream


@pytest.fixture
async def rt(tmp_path: Path) -> AsyncIterator[Runtime]:
    settings = Settings(
        data_dir=tmp_path,
        embedder={"use": "hashing"},
        logging={"format": "console", "access_log": False},
    )
    runtime = build_runtime(settings)
    await runtime.start()
    async with Ingestor(runtime) as ingestor:
        await ingestor.ingest_bytes("kb", "pods.md", PODS)
    runtime.chat_model = RecordingModel(runtime.chat_model)
    yield runtime
    await runtime.aclose()


def _model(rt: Runtime) -> RecordingModel:
    assert isinstance(rt.chat_model, RecordingModel)
    return rt.chat_model


async def _stream(rt: Runtime, message: str, **kwargs: Any) -> tuple[str, Answer]:
    tokens: list[str] = []
    done: Answer | None = None
    async for event in await stream_answer(rt, "kb", message, **kwargs):
        if isinstance(event, Token):
            tokens.append(event.text)
        elif isinstance(event, Done):
            done = event.answer
    assert done is not None
    return "".join(tokens), done


async def _turns(rt: Runtime, session: str) -> list[tuple[str, str]]:
    return [(t.role, t.content) for t in await rt.memory.load("kb", session, 50)]


async def test_a_streamed_answer_from_the_cache_is_the_cached_answer(rt: Runtime) -> None:
    first = await answer(rt, "kb", "What is a Pod?", session_id="s1")
    assert first.citations  # answered from the documents, and cached
    retrieved = _stage_count("retrieve", "hybrid")
    text, again = await _stream(rt, "What is a Pod?", session_id="s2")
    assert len(_model(rt).prompts) == 1  # the model was not asked again
    assert _stage_count("retrieve", "hybrid") == retrieved  # nor the store searched
    assert text == again.text == first.text
    assert (again.session_id, again.intent) == ("s2", first.intent)
    assert again.citations == first.citations and again.grounding == first.grounding
    assert await _turns(rt, "s2") == [("user", "What is a Pod?"), ("assistant", first.text)]
    cached = await answer(rt, "kb", "What is a Pod?", session_id="s3")
    assert (cached.session_id, cached.intent, cached.text) == ("s3", first.intent, first.text)


async def test_a_stateless_stream_saves_nothing(rt: Runtime) -> None:
    history = [ChatTurn.user("Hello"), ChatTurn.assistant("Hi! Ask me about the documents.")]
    _, done = await _stream(rt, "What is a Pod?", session_id="s1", history=history)
    assert done.text
    assert await _turns(rt, "s1") == []
    await answer(rt, "kb", "What is a Pod?", session_id="s1", history=history)
    assert await _turns(rt, "s1") == []


async def test_a_filtered_stream_neither_retrieves_nor_reuses_what_the_filter_hides(
    rt: Runtime,
) -> None:
    await answer(rt, "kb", "What is a Pod?")  # cached, with its citations
    hidden = Filter.any_of("document_id", ["no-such-document"])
    _, done = await _stream(rt, "What is a Pod?", filter=hidden)
    assert done.citations == ()
    assert (await answer(rt, "kb", "What is a Pod?", filter=hidden)).citations == ()
    assert _model(rt).prompts[-1].hits == []  # nothing visible was retrieved
    _, shown = await _stream(rt, "What is a Pod?", filter=Filter.any_of("document_id", ["pods.md"]))
    assert shown.citations and len(_model(rt).prompts) == 4  # not from the cache either


async def test_the_model_sees_the_message_and_the_sessions_history(rt: Runtime) -> None:
    await answer(rt, "kb", "What is a Pod?", session_id="s1")
    _, done = await _stream(rt, "And what about its limits?", session_id="s1")
    prompt = _model(rt).prompts[-1]
    assert prompt.message == "And what about its limits?"
    assert [t.role for t in prompt.history] == ["user", "assistant"]
    assert (done.intent.condensed, done.intent.query) == (True, "pod limits")
    assert [role for role, _ in await _turns(rt, "s1")] == ["user", "assistant"] * 2


def _stage_count(stage: str, component: str) -> float:
    labels = {"stage": stage, "component": component}
    return REGISTRY.get_sample_value("ragtide_stage_duration_seconds_count", labels) or 0.0


async def test_stages_are_timed_under_their_component(rt: Runtime) -> None:
    save, generate = _stage_count("save", "memory"), _stage_count("generate", "extractive")
    await _stream(rt, "What does a Pod run?", session_id="s1")
    assert _stage_count("save", "memory") == save + 1
    assert _stage_count("generate", "extractive") == generate + 1


async def test_a_tool_context_carries_both_lookups() -> None:
    async def search_in(namespace: str | None, query: str, top_k: int) -> list[Any]:
        return []

    async def document_in(namespace: str | None, document_id: str) -> None:
        return None

    ctx = tool_context("kb", search_in, document_in)
    assert (ctx.namespace, ctx.search, ctx.get_document) == ("kb", search_in, document_in)
    assert tool_context("kb", search_in).get_document is None


async def test_a_streamed_answer_is_cached_for_the_next_turn(rt: Runtime) -> None:
    _, streamed = await _stream(rt, "What does a Pod share?", session_id="s1")
    again = await answer(rt, "kb", "What does a Pod share?", session_id="s2")
    assert len(_model(rt).prompts) == 1  # the second turn came from the cache
    assert (again.text, again.citations) == (streamed.text, streamed.citations)


class ToolModel:
    """A tool-calling chat model (ours, scripted): searches once, then answers."""

    model_id = "scripted-tools"

    def __init__(self, query: str, text: str = "A Pod runs containers [1].") -> None:
        self.query = query
        self.text = text
        self.tool_messages: list[str] = []

    async def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] = (),
        tool_choice: str | Mapping[str, Any] | None = None,
    ) -> Mapping[str, Any]:
        results = [str(m.get("content")) for m in messages if m.get("role") == "tool"]
        if not results:
            arguments = json.dumps({"query": self.query})
            call = {
                "id": "c1",
                "type": "function",
                "function": {"name": "search", "arguments": arguments},
            }
            return {"message": {"role": "assistant", "content": None, "tool_calls": [call]}}
        self.tool_messages += results
        return {"message": {"role": "assistant", "content": self.text}}

    async def generate(self, prompt: Prompt) -> Reply:
        raise AssertionError("a tool-calling turn goes through complete()")

    def stream(self, prompt: Prompt) -> AsyncIterator[str]:
        raise AssertionError("a tool-calling turn goes through complete()")


async def test_a_streamed_tool_turn_reports_each_call_and_saves_it(rt: Runtime) -> None:
    model = ToolModel("Pod containers")
    rt.chat_model = model  # type: ignore[assignment]
    rt.tools = (SearchTool(),)
    events = [e async for e in await stream_answer(rt, "kb", "What is a Pod?", session_id="s1")]
    call, result = events[0], events[1]
    assert isinstance(call, ToolCall) and isinstance(result, ToolResult)
    assert (call.step, call.call_id, call.name) == (1, "c1", "search")
    assert json.loads(call.arguments) == {"query": "Pod containers"}
    assert result.call["name"] == "search"
    tokens = [e.text for e in events if isinstance(e, Token)]
    done = events[-1]
    assert isinstance(done, Done) and "".join(tokens).startswith("A Pod runs containers")
    assert "pods.md" in model.tool_messages[0]  # the tool searched the turn's namespace
    roles = [role for role, _ in await _turns(rt, "s1")]
    assert roles == ["user", "tool", "assistant"]


async def test_a_tool_searches_only_what_the_turns_filter_shows(rt: Runtime) -> None:
    model = ToolModel("Pod containers")
    rt.chat_model = model  # type: ignore[assignment]
    rt.tools = (SearchTool(),)
    hidden = Filter.any_of("document_id", ["no-such-document"])
    [e async for e in await stream_answer(rt, "kb", "What is a Pod?", filter=hidden)]
    await answer(rt, "kb", "What is a Pod?", filter=hidden)
    assert len(model.tool_messages) == 2
    assert all("pods.md" not in m for m in model.tool_messages)


async def test_text_held_back_as_a_possible_marker_is_streamed_at_the_end(rt: Runtime) -> None:
    rt.chat_model = ToolModel("Pod", text="A Pod runs containers [")  # type: ignore[assignment]
    rt.tools = (SearchTool(),)
    events = [e async for e in await stream_answer(rt, "kb", "What is a Pod?")]
    assert "".join(e.text for e in events if isinstance(e, Token)) == "A Pod runs containers ["


async def test_a_streamed_greeting_has_no_citations(rt: Runtime) -> None:
    text, done = await _stream(rt, "Hello!", session_id="s1")
    assert not done.intent.needs_retrieval
    assert (done.text, done.citations, done.grounding) == (text, (), None)


def _abandoned() -> float:
    return REGISTRY.get_sample_value("ragtide_chat_streams_abandoned_total") or 0.0


async def test_a_stream_closed_before_the_end_saves_nothing_and_says_so(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    before = _abandoned()
    with caplog.at_level(logging.INFO, logger="ragtide.chat"):
        events = await stream_answer(rt, "kb", "What is a Pod?", session_id="s1")
        assert isinstance(await events.__anext__(), Token)
        await events.aclose()
    assert _abandoned() == before + 1
    assert await _turns(rt, "s1") == []
    (record,) = [r for r in caplog.records if r.name == "ragtide.chat"]
    assert (record.levelno, record.getMessage()) == (logging.INFO, "chat stream abandoned")
    assert record.namespace == "kb"  # type: ignore[attr-defined]


class GatedMemory:
    """The runtime's memory store; an append waits for ``gate`` (to cancel mid-commit)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def load(self, *args: Any) -> Any:
        return await self.inner.load(*args)

    async def append(self, *args: Any) -> None:
        self.entered.set()
        await self.gate.wait()
        await self.inner.append(*args)


async def test_a_stream_cancelled_while_committing_still_saves_the_turn(rt: Runtime) -> None:
    memory = GatedMemory(rt.memory)
    rt.memory = memory  # type: ignore[assignment]
    before = _abandoned()

    async def consume() -> None:
        async for _ in await stream_answer(rt, "kb", "What is a Pod?", session_id="s1"):
            pass

    # cancelled as Starlette cancels a stream whose client went away: its task group's scope
    async with anyio.create_task_group() as group:
        group.start_soon(consume)
        await memory.entered.wait()
        group.cancel_scope.cancel()
        memory.gate.set()
    assert [role for role, _ in await _turns(rt, "s1")] == ["user", "assistant"]
    assert _abandoned() == before  # committed: not an abandoned stream


class DownOnWrite:
    """The runtime's answer cache, failing every write as a cache that went down does."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def put(self, namespace: str, key: str, value: Any) -> None:
        raise BackendUnavailable("redis put failed: ConnectionError")


async def test_an_answer_that_cannot_be_cached_is_still_given_and_saved(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    rt.cache = DownOnWrite(rt.cache)  # type: ignore[assignment]
    errors = REGISTRY.get_sample_value("ragtide_answer_cache_total", {"result": "error"}) or 0.0
    with caplog.at_level(logging.WARNING, logger="ragtide.chat"):
        result = await answer(rt, "kb", "What is a Pod?", session_id="s1")
    assert result.citations and [r for r, _ in await _turns(rt, "s1")] == ["user", "assistant"]
    after = REGISTRY.get_sample_value("ragtide_answer_cache_total", {"result": "error"})
    assert after == errors + 1
    (record,) = [r for r in caplog.records if r.name == "ragtide.chat"]
    assert (record.getMessage(), record.error) == ("answer not cached", "backend_unavailable")  # type: ignore[attr-defined]


class Scripted:
    """A chat model answering every turn with ``text`` (recording the prompts)."""

    model_id = "scripted"

    def __init__(self, text: str) -> None:
        self.text = text
        self.prompts: list[Prompt] = []

    async def generate(self, prompt: Prompt) -> Reply:
        self.prompts.append(prompt)
        return Reply(self.text, (), {})

    async def stream(self, prompt: Prompt) -> AsyncIterator[str]:
        self.prompts.append(prompt)
        yield self.text


def _chat_settings(rt: Runtime, **update: Any) -> None:
    rt.settings = rt.settings.model_copy(
        update={"chat": rt.settings.chat.model_copy(update=update)}
    )


async def test_answer_gives_the_model_the_message_and_options_and_times_it(rt: Runtime) -> None:
    generate = _stage_count("generate", "extractive")
    await answer(rt, "kb", "What does a Pod run?", options={"max_tokens": 7, "temperature": 0.2})
    prompt = _model(rt).prompts[-1]
    assert prompt.message == "What does a Pod run?"
    assert dict(prompt.options) == {"max_tokens": 7, "temperature": 0.2}
    assert _stage_count("generate", "extractive") == generate + 1


async def test_a_greeting_keeps_its_session_and_its_bracketed_text(rt: Runtime) -> None:
    # nothing was retrieved, so "[1]" names no source: kept as written, cited nothing
    rt.chat_model = Scripted("Hello [1]! Ask me about Pods.")  # type: ignore[assignment]
    result = await answer(rt, "kb", "Hello!", session_id="s7")
    assert not result.intent.needs_retrieval
    assert (result.session_id, result.text, result.citations) == (
        "s7",
        "Hello [1]! Ask me about Pods.",
        (),
    )
    _, streamed = await _stream(rt, "Hello!", session_id="s8")
    assert (streamed.session_id, streamed.text, streamed.citations) == (
        "s8",
        "Hello [1]! Ask me about Pods.",
        (),
    )


async def test_a_greeting_answered_with_tools_keeps_its_calls(rt: Runtime) -> None:
    rt.chat_model = ToolModel("Pod")  # type: ignore[assignment]
    rt.tools = (SearchTool(),)
    result = await answer(rt, "kb", "Hello!", session_id="s1")
    assert not result.intent.needs_retrieval
    assert [c["name"] for c in result.tool_calls] == ["search"]
    assert [role for role, _ in await _turns(rt, "s1")] == ["user", "tool", "assistant"]


class TwoSearches(ToolModel):
    """Asks for two searches in one step, then answers."""

    async def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] = (),
        tool_choice: str | Mapping[str, Any] | None = None,
    ) -> Mapping[str, Any]:
        if any(m.get("role") == "tool" for m in messages):
            return {"message": {"role": "assistant", "content": self.text}}
        calls = [
            {
                "id": f"c{i}",
                "type": "function",
                "function": {"name": "search", "arguments": json.dumps({"query": self.query})},
            }
            for i in (1, 2)
        ]
        return {"message": {"role": "assistant", "content": None, "tool_calls": calls}}


async def test_the_tool_loop_keeps_to_the_configured_bounds(rt: Runtime) -> None:
    tools = rt.settings.chat.tools.model_copy(update={"max_calls_per_step": 1})
    _chat_settings(rt, tools=tools)
    rt.chat_model = TwoSearches("Pod")  # type: ignore[assignment]
    rt.tools = (SearchTool(),)
    result = await answer(rt, "kb", "What is a Pod?")
    assert [c["outcome"] for c in result.tool_calls] == ["ok", "skipped"]
    events = [e async for e in await stream_answer(rt, "kb", "What is a Pod?")]
    outcomes = [e.call["outcome"] for e in events if isinstance(e, ToolResult)]
    assert outcomes == ["ok", "skipped"]


async def test_verification_uses_the_configured_threshold_and_decline_text(rt: Runtime) -> None:
    _chat_settings(rt, min_support=0.75, grounding="decline", decline_text="Not in the docs.")
    rt.chat_model = Scripted("A Pod is a kind of boat that sails to Mars every winter.")  # type: ignore[assignment]
    result = await answer(rt, "kb", "What is a Pod?")
    assert result.grounding is not None
    assert (result.grounding.threshold, result.grounding.action) == (0.75, "declined")
    assert (result.text, result.citations) == ("Not in the docs.", ())


async def test_a_decline_text_that_looks_like_a_citation_cites_nothing(rt: Runtime) -> None:
    _chat_settings(rt, grounding="decline", decline_text="See the documents [1].")
    rt.chat_model = Scripted("A Pod is a kind of boat that sails to Mars every winter.")  # type: ignore[assignment]
    result = await answer(rt, "kb", "What is a Pod?")
    assert result.text == "See the documents [1]."
    assert result.citations == ()


def _grounded(outcome: str) -> float:
    labels = {"outcome": outcome}
    return REGISTRY.get_sample_value("ragtide_grounded_answers_total", labels) or 0.0


async def test_each_verified_answer_is_counted_by_its_outcome(rt: Runtime) -> None:
    before = {o: _grounded(o) for o in ("supported", "unsupported", "declined")}
    first = await answer(rt, "kb", "What is a Pod?")  # the extractive model: supported
    assert first.grounding is not None and first.grounding.supported
    assert _grounded("supported") == before["supported"] + 1
    _chat_settings(rt, grounding="decline")
    rt.chat_model = Scripted("A Pod is a kind of boat that sails to Mars every winter.")  # type: ignore[assignment]
    await answer(rt, "kb", "What does a Pod run?")
    assert _grounded("declined") == before["declined"] + 1
    assert _grounded("supported") == before["supported"] + 1
    assert _grounded("unsupported") == before["unsupported"]


def _cache_count(result: str) -> float:
    return REGISTRY.get_sample_value("ragtide_answer_cache_total", {"result": result}) or 0.0


async def test_only_questions_that_retrieve_without_tools_are_cached(rt: Runtime) -> None:
    misses, hits = _cache_count("miss"), _cache_count("hit")
    await answer(rt, "kb", "What is a Pod?")
    assert (_cache_count("miss"), _cache_count("hit")) == (misses + 1, hits)
    await answer(rt, "kb", "What is a Pod?")
    assert (_cache_count("miss"), _cache_count("hit")) == (misses + 1, hits + 1)
    greeting = Scripted("Hi!")
    rt.chat_model = greeting  # type: ignore[assignment]
    await answer(rt, "kb", "Hello!")
    await answer(rt, "kb", "Hello!")
    assert len(greeting.prompts) == 2  # a greeting is answered afresh, never looked up
    assert (_cache_count("miss"), _cache_count("hit")) == (misses + 1, hits + 1)
    tools = ToolModel("Pod")
    rt.chat_model = tools  # type: ignore[assignment]
    rt.tools = (SearchTool(),)
    await answer(rt, "kb", "What does a Pod share?")
    await answer(rt, "kb", "What does a Pod share?")
    assert len(tools.tool_messages) == 2  # with tools, every turn runs the loop again


class DownOnRead(DownOnWrite):
    """The runtime's answer cache, failing every read as a cache that went down does."""

    async def generation(self, namespace: str) -> int:
        raise BackendUnavailable("redis get failed: ConnectionError")


async def test_a_cache_that_cannot_be_read_is_a_miss_counted_as_an_error(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    rt.cache = DownOnRead(rt.cache)  # type: ignore[assignment]
    errors, misses = _cache_count("error"), _cache_count("miss")
    with caplog.at_level(logging.WARNING, logger="ragtide.chat"):
        _, streamed = await _stream(rt, "What is a Pod?", session_id="s1")
    assert streamed.citations and len(_model(rt).prompts) == 1
    assert (_cache_count("error"), _cache_count("miss")) == (errors + 1, misses)
    records = [r for r in caplog.records if r.name == "ragtide.chat"]
    assert [(r.getMessage(), r.error) for r in records] == [  # type: ignore[attr-defined]
        ("answer cache unavailable", "backend_unavailable")
    ]


def _turn_count(intent: str, outcome: str) -> float:
    labels = {"intent": intent, "outcome": outcome}
    return REGISTRY.get_sample_value("ragtide_chat_turns_total", labels) or 0.0


def _tenant(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


async def test_turns_are_counted_by_intent_citations_and_tenant(rt: Runtime) -> None:
    question = await answer(rt, "kb", "What is a Pod?")
    kind = question.intent.kind
    cited, turns = (
        _turn_count(kind, "cited"),
        _tenant("ragtide_tenant_chat_turns_total", tenant="default"),
    )
    await _stream(rt, "What is a Pod?")
    assert _turn_count(kind, "cited") == cited + 1
    assert _tenant("ragtide_tenant_chat_turns_total", tenant="default") == turns + 1
    rt.chat_model = Scripted("Hi!")  # type: ignore[assignment]
    greeting = await answer(rt, "kb", "Hello!")
    uncited = _turn_count(greeting.intent.kind, "uncited")
    await _stream(rt, "Hello!")
    assert _turn_count(greeting.intent.kind, "uncited") == uncited + 1
    assert _tenant("ragtide_tenant_chat_turns_total", tenant="default") == turns + 3


class Billed(Scripted):
    async def generate(self, prompt: Prompt) -> Reply:
        self.prompts.append(prompt)
        return Reply(self.text, (), {"prompt_tokens": 13, "completion_tokens": 4})


async def test_tokens_are_counted_per_tenant_and_model(rt: Runtime) -> None:
    def counts() -> tuple[float, ...]:
        return (
            _tenant("ragtide_tenant_llm_tokens_total", tenant="default", kind="prompt"),
            _tenant("ragtide_tenant_llm_tokens_total", tenant="default", kind="completion"),
            _tenant("ragtide_llm_tokens_total", component="extractive", kind="prompt"),
            _tenant("ragtide_llm_tokens_total", component="extractive", kind="completion"),
        )

    before = counts()
    rt.chat_model = Billed("A Pod runs containers [1].")  # type: ignore[assignment]
    await answer(rt, "kb", "What does a Pod run?")
    assert [a - b for a, b in zip(counts(), before, strict=True)] == [13, 4, 13, 4]


async def test_a_stateless_turn_keeps_only_the_last_history_turns(rt: Runtime) -> None:
    history = [ChatTurn.user(f"Question {i}?") for i in range(5)]
    _chat_settings(rt, history_turns=2)
    await answer(rt, "kb", "What is a Pod?", history=history)
    assert [t.content for t in _model(rt).prompts[-1].history] == ["Question 3?", "Question 4?"]
    _chat_settings(rt, history_turns=0)
    await _stream(rt, "What does a Pod share?", history=history)
    assert list(_model(rt).prompts[-1].history) == []


async def test_the_stored_history_is_loaded_up_to_the_configured_turns(rt: Runtime) -> None:
    await answer(rt, "kb", "What is a Pod?", session_id="s1")
    await answer(rt, "kb", "What does a Pod share?", session_id="s1")
    _chat_settings(rt, history_turns=1)
    await answer(rt, "kb", "What are its limits?", session_id="s1")
    assert len(_model(rt).prompts[-1].history) == 1


async def test_history_and_intent_are_timed_under_their_component(rt: Runtime) -> None:
    history, intent = _stage_count("history", "memory"), _stage_count("intent", "rules")
    embed, retrieve = _stage_count("embed", "hashing"), _stage_count("retrieve", "hybrid")
    await answer(rt, "kb", "What is a Pod?", session_id="s1")
    assert _stage_count("history", "memory") == history + 1
    assert _stage_count("intent", "rules") == intent + 1
    assert (_stage_count("embed", "hashing"), _stage_count("retrieve", "hybrid")) == (
        embed + 1,
        retrieve + 1,
    )


async def test_the_model_sees_at_most_top_k_hits(rt: Runtime) -> None:
    async with Ingestor(rt) as ingestor:
        for name in ("a", "b", "c"):
            text = f"# Pod {name}\n\nPod {name} runs containers that declare limits.\n"
            await ingestor.ingest_bytes("kb", f"{name}.md", text.encode())
    await answer(rt, "kb", "What do Pod containers declare?")
    assert len(_model(rt).prompts[-1].hits) > 2
    rt.settings = rt.settings.model_copy(
        update={"retrieval": rt.settings.retrieval.model_copy(update={"top_k": 2})}
    )
    await answer(rt, "kb", "Which limits do Pod containers declare?")
    assert len(_model(rt).prompts[-1].hits) == 2


async def test_bad_messages_are_refused_before_anything_runs(rt: Runtime) -> None:
    _chat_settings(rt, max_message_chars=20)
    with pytest.raises(InvalidRequest) as empty:
        await answer(rt, "kb", "   ")
    assert str(empty.value) == "message must not be empty"
    with pytest.raises(InvalidRequest) as long:
        await stream_answer(rt, "kb", "x" * 21)
    assert str(long.value) == "message is longer than 20 characters"
    assert (await answer(rt, "kb", "x" * 20)).text  # at the limit: answered
    assert _model(rt).prompts[-1].message == "x" * 20
    with pytest.raises(NamespaceNotFound):
        await answer(rt, "nowhere", "What is a Pod?")


class ClosableStream(Scripted):
    """Streams word by word and records whether its stream was closed (an LLM's HTTP
    response is closed in the generator's ``finally``)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.closed = False

    async def stream(self, prompt: Prompt) -> AsyncIterator[str]:
        self.prompts.append(prompt)
        try:
            for word in self.text.split(" "):
                yield word + " "
        finally:
            self.closed = True


async def test_a_stream_closed_early_closes_the_models_stream_at_once(rt: Runtime) -> None:
    model = ClosableStream("A Pod runs one or more containers [1].")
    rt.chat_model = model  # type: ignore[assignment]
    events = await stream_answer(rt, "kb", "What is a Pod?")
    assert isinstance(await events.__anext__(), Token)
    assert not model.closed
    await events.aclose()
    assert model.closed  # not left to the garbage collector


async def test_tool_turns_are_saved_but_not_replayed(rt: Runtime) -> None:
    rt.chat_model = ToolModel("Pod containers")  # type: ignore[assignment]
    rt.tools = (SearchTool(),)
    await answer(rt, "kb", "What is a Pod?", session_id="s1")
    assert [role for role, _ in await _turns(rt, "s1")] == ["user", "tool", "assistant"]
    recording = Scripted("Pods share storage [1].")
    rt.chat_model = recording  # type: ignore[assignment]
    rt.tools = ()
    await answer(rt, "kb", "What do they share?", session_id="s1")
    await _stream(rt, "And their network?", session_id="s1")
    assert [t.role for t in recording.prompts[0].history] == ["user", "assistant"]
    assert [t.role for t in recording.prompts[1].history] == ["user", "assistant"] * 2


async def test_a_turn_without_a_session_gets_a_new_one(rt: Runtime) -> None:
    first = await answer(rt, "kb", "What is a Pod?")
    _, second = await _stream(rt, "What is a Pod?")
    for session in (first.session_id, second.session_id):
        assert len(session) == 32 and int(session, 16) >= 0
        assert [role for role, _ in await _turns(rt, session)] == ["user", "assistant"]
    assert first.session_id != second.session_id


async def test_a_cancellation_raised_while_committing_is_not_an_abandoned_stream(
    rt: Runtime,
) -> None:
    async def on_answer(result: Answer) -> None:
        # the edge's accounting fails with a cancellation of its own while committing
        future = asyncio.get_running_loop().create_future()
        future.cancel()
        await future

    before = _abandoned()
    events = await stream_answer(rt, "kb", "What is a Pod?", session_id="s1", on_answer=on_answer)
    with pytest.raises(asyncio.CancelledError):
        async for _ in events:
            pass
    assert _abandoned() == before  # the turn was committed, not abandoned
    assert [role for role, _ in await _turns(rt, "s1")] == ["user", "assistant"]


async def test_cached_answers_are_keyed_by_the_settings_that_shape_them(rt: Runtime) -> None:
    await answer(rt, "kb", "What is a Pod?")
    await answer(rt, "kb", "What is a Pod?")
    assert len(_model(rt).prompts) == 1  # the second came from the cache
    rt.fingerprint = "other-settings"  # e.g. a replica with another grounding policy
    await answer(rt, "kb", "What is a Pod?")
    assert len(_model(rt).prompts) == 2  # not served what the other settings cached


async def test_single_tokens_count_and_a_model_without_usage_adds_no_series(
    rt: Runtime,
) -> None:
    class OneToken(Scripted):
        async def generate(self, prompt: Prompt) -> Reply:
            return Reply(self.text, (), {"prompt_tokens": 1, "completion_tokens": 1})

    def tokens(tenant: str, kind: str) -> float | None:
        labels = {"tenant": tenant, "kind": kind}
        return REGISTRY.get_sample_value("ragtide_tenant_llm_tokens_total", labels)

    async with Ingestor(rt) as ingestor:
        for tenant in ("one-token", "no-usage"):
            await ingestor.ingest_bytes(f"{tenant}/kb", "pods.md", PODS)
    before = [tokens("one-token", kind) or 0.0 for kind in ("prompt", "completion")]
    rt.chat_model = OneToken("A Pod runs containers [1].")  # type: ignore[assignment]
    await answer(rt, "one-token/kb", "What does a Pod run?")
    after = [tokens("one-token", kind) for kind in ("prompt", "completion")]
    assert after == [before[0] + 1, before[1] + 1]
    rt.chat_model = Scripted("A Pod runs containers [1].")  # type: ignore[assignment]
    await answer(rt, "no-usage/kb", "What does a Pod run?")
    assert (tokens("no-usage", "prompt"), tokens("no-usage", "completion")) == (None, None)


class RecordingRetriever:
    """The runtime's retriever, recording each request."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.requests: list[Any] = []

    async def retrieve(self, request: Any) -> Any:
        self.requests.append(request)
        return await self.inner.retrieve(request)


async def test_search_retrieves_with_the_embedded_query(rt: Runtime) -> None:
    retriever = RecordingRetriever(rt.retriever)
    rt.retriever = retriever  # type: ignore[assignment]
    only = Filter.any_of("document_id", ["pods.md"])
    hits = await search(rt, "kb", "Pod limits", 3, only)
    assert hits and hits[0].chunk.document_id == "pods.md"
    (request,) = retriever.requests
    assert (request.namespace, request.text, request.top_k, request.filter) == (
        "kb",
        "Pod limits",
        3,
        only,
    )
    assert list(request.vector) == list(await rt.embedder.embed_query("Pod limits"))


async def test_components_without_a_name_are_timed_and_billed_as_question_marks(
    rt: Runtime,
) -> None:
    rt.names = {}  # a Runtime assembled by hand, not by build_runtime
    rt.chat_model = Billed("A Pod runs containers [1].")  # type: ignore[assignment]
    stages = ("history", "intent", "embed", "retrieve", "generate", "save")
    before = {s: _stage_count(s, "?") for s in stages}
    billed = _tenant("ragtide_llm_tokens_total", component="?", kind="prompt")
    await answer(rt, "kb", "What does a Pod run?", session_id="s1")
    await _stream(rt, "What does a Pod share?", session_id="s1")
    assert {s: _stage_count(s, "?") - before[s] for s in stages} == dict.fromkeys(stages, 2)
    assert _tenant("ragtide_llm_tokens_total", component="?", kind="prompt") == billed + 13
