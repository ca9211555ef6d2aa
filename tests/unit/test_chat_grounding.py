"""chat.answer / stream_answer with scripted models: verification, policies and tools."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from ragtide import chat
from ragtide.builtin.extractive import ExtractiveChatModel
from ragtide.ingest.pipeline import Ingestor
from ragtide.runtime import Runtime, build_runtime
from ragtide.settings import Settings
from ragtide.tools.builtin import CalculatorTool, SearchTool
from ragtide.types import Prompt, Reply

DOC = (
    b"# Disruptions\n\nA PodDisruptionBudget limits the number of Pods of a replicated "
    b"application that are down simultaneously from voluntary disruptions.\n"
)
INVENTED = "A PodDeletionPolicy in kubeconfig deletes pods after 30 days."
QUESTION = "What does a PodDisruptionBudget limit?"


class Scripted:
    """A chat model that answers with fixed text (and streams it in small pieces); with
    ``steps`` it can also call tools (``complete``, OpenAI's wire format)."""

    model_id = "scripted"

    def __init__(self, text: str, *steps: Mapping[str, Any]) -> None:
        self.text = text
        self.steps = list(steps)
        self.requests: list[list[dict[str, Any]]] = []

    async def generate(self, prompt: Prompt) -> Reply:
        return Reply(self.text, (), {"prompt_tokens": 5, "completion_tokens": 3})

    async def stream(self, prompt: Prompt) -> AsyncIterator[str]:
        for i in range(0, len(self.text), 7):
            yield self.text[i : i + 7]

    def messages(self, prompt: Prompt) -> list[dict[str, str]]:
        return [{"role": "user", "content": prompt.message}]

    async def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] = (),
        tool_choice: str | Mapping[str, Any] | None = None,
    ) -> Mapping[str, Any]:
        self.requests.append([dict(m) for m in messages])
        if self.steps:
            return self.steps.pop(0)
        return {"message": {"role": "assistant", "content": self.text}, "usage": {}}


def tool_step(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    call = {"id": f"call_{name}", "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)}}  # fmt: skip
    return {"message": {"role": "assistant", "content": None, "tool_calls": [call]}, "usage": {}}


def metric(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def rt(tmp_path: Path) -> AsyncIterator[Runtime]:
    settings = Settings(  # type: ignore[call-arg]
        data_dir=tmp_path,
        embedder={"use": "hashing"},
        answer_cache_enabled=False,
        logging={"format": "console", "access_log": False},
    )
    runtime = build_runtime(settings)
    await runtime.start()
    await Ingestor(runtime).ingest_bytes("kb", "pdb.md", DOC)
    await Ingestor(runtime).ingest_bytes("other", "pdb.md", DOC)
    try:
        yield runtime
    finally:
        await runtime.aclose()


def with_policy(rt: Runtime, policy: str) -> None:
    chat_settings = rt.settings.chat.model_copy(update={"grounding": policy})
    rt.settings = rt.settings.model_copy(update={"chat": chat_settings})


SUPPORTED = "A PodDisruptionBudget limits how many Pods are down from voluntary disruptions"


@pytest.mark.anyio
async def test_an_answer_reports_what_is_supported(rt: Runtime) -> None:
    rt.chat_model = Scripted(f"{SUPPORTED} [4]. {INVENTED}")
    dropped = metric("ragtide_citations_dropped_total")
    unsupported = metric("ragtide_grounded_answers_total", {"outcome": "unsupported"})
    result = await chat.answer(rt, "kb", QUESTION)
    assert result.text == f"{SUPPORTED} [1]. {INVENTED}"  # [4] named no hit; [1] attached
    assert [c.index for c in result.citations] == [1]
    grounding = result.grounding
    assert grounding is not None
    assert (grounding.supported, grounding.policy, grounding.action) == (
        False,
        "annotate",
        "none",
    )
    assert [(s.supported, s.citations, s.attached) for s in grounding.sentences] == [
        (True, (1,), (1,)),
        (False, (), ()),
    ]
    assert metric("ragtide_citations_dropped_total") == dropped + 1
    assert metric("ragtide_grounded_answers_total", {"outcome": "unsupported"}) == unsupported + 1


@pytest.mark.anyio
async def test_strip_saves_the_stripped_answer(rt: Runtime) -> None:
    with_policy(rt, "strip")
    rt.chat_model = Scripted(f"{INVENTED} {SUPPORTED} [1].")
    result = await chat.answer(rt, "kb", QUESTION, session_id="s1")
    assert result.text == f"{SUPPORTED} [1]."
    assert result.grounding is not None and result.grounding.action == "stripped"
    saved = await rt.memory.load("kb", "s1", 10)
    assert saved[-1].content == result.text


@pytest.mark.anyio
async def test_decline_cites_nothing(rt: Runtime) -> None:
    with_policy(rt, "decline")
    rt.chat_model = Scripted(f"{SUPPORTED} [1]. {INVENTED}")
    result = await chat.answer(rt, "kb", QUESTION)
    assert result.text == rt.settings.chat.decline_text
    assert result.citations == ()
    assert result.grounding is not None and result.grounding.action == "declined"


@pytest.mark.anyio
async def test_a_greeting_is_not_verified(rt: Runtime) -> None:
    rt.chat_model = Scripted("Hello there, friend!")
    result = await chat.answer(rt, "kb", "Hello!")
    assert result.grounding is None and result.text == "Hello there, friend!"


@pytest.mark.anyio
async def test_the_extractive_answer_reports_the_same_fields(rt: Runtime) -> None:
    rt.chat_model = ExtractiveChatModel()
    result = await chat.answer(rt, "kb", QUESTION)
    assert result.citations and result.grounding is not None
    assert result.grounding.supported
    assert all(s.supported for s in result.grounding.sentences)
    assert result.grounding.sentences[0].citations == (1,)


@pytest.mark.anyio
async def test_the_stream_sends_tokens_then_the_verified_answer(rt: Runtime) -> None:
    with_policy(rt, "strip")
    rt.chat_model = Scripted(f"{SUPPORTED} [1]. {INVENTED}")
    events = await chat.stream_answer(rt, "kb", QUESTION, session_id="s2")
    seen = [e async for e in events]
    tokens = "".join(e.text for e in seen if isinstance(e, chat.Token))
    done = seen[-1]
    assert isinstance(done, chat.Done)
    assert tokens == f"{SUPPORTED} [1]. {INVENTED}"  # as the model wrote it
    assert done.answer.text == f"{SUPPORTED} [1]."  # the final text replaces it
    assert done.answer.grounding is not None and done.answer.grounding.action == "stripped"
    assert (await rt.memory.load("kb", "s2", 10))[-1].content == done.answer.text


@pytest.mark.anyio
async def test_tools_run_when_the_tenant_enables_them(rt: Runtime) -> None:
    model = Scripted(f"{SUPPORTED} [1].", tool_step("calculator", {"expression": "6 * 7"}))
    rt.chat_model = model
    rt.tools = (CalculatorTool(),)
    result = await chat.answer(rt, "kb", QUESTION, session_id="s3")
    assert [(c["name"], c["outcome"]) for c in result.tool_calls] == [("calculator", "ok")]
    assert json.loads(result.tool_calls[0]["result"])["result"] == "42"
    assert model.requests[1][-1]["role"] == "tool"  # the result went back to the model
    assert result.grounding is not None and result.grounding.supported
    turns = await rt.memory.load("kb", "s3", 10)
    assert [t.role for t in turns] == ["user", "tool", "assistant"]
    assert json.loads(turns[1].content)["name"] == "calculator"
    # The next turn's model sees no tool turns in its history.
    second = Scripted(f"{SUPPORTED} [1].")
    rt.chat_model = second
    await chat.answer(rt, "kb", "And what else does it limit?", session_id="s3")
    assert all(m["role"] != "tool" for m in second.requests[0])


@pytest.mark.anyio
async def test_without_tools_the_model_is_not_offered_any(rt: Runtime) -> None:
    model = Scripted(f"{SUPPORTED} [1].", tool_step("calculator", {"expression": "1"}))
    rt.chat_model = model
    result = await chat.answer(rt, "kb", QUESTION)
    assert result.tool_calls == () and model.requests == []


@pytest.mark.anyio
async def test_the_default_search_tool_reaches_only_the_turns_namespace(rt: Runtime) -> None:
    model = Scripted(
        f"{SUPPORTED} [1].",
        tool_step("search", {"query": "PodDisruptionBudget", "namespace": "other"}),
        tool_step("search", {"query": "PodDisruptionBudget"}),
    )
    rt.chat_model = model
    rt.tools = (SearchTool(),)
    result = await chat.answer(rt, "kb", QUESTION)
    elsewhere, here = (json.loads(c["result"]) for c in result.tool_calls)
    assert "error" in elsewhere and "other" in elsewhere["error"]
    assert here["results"] and here["namespace"] == "kb"


@pytest.mark.anyio
async def test_the_stream_sends_tool_calls_and_results(rt: Runtime) -> None:
    rt.chat_model = Scripted(
        f"{SUPPORTED} [1].", tool_step("calculator", {"expression": "2 ** 10"})
    )
    rt.tools = (CalculatorTool(),)
    events = await chat.stream_answer(rt, "kb", QUESTION)
    seen = [e async for e in events]
    kinds = [type(e).__name__ for e in seen]
    assert kinds[:2] == ["ToolCall", "ToolResult"] and kinds[-1] == "Done"
    call, result = seen[0], seen[1]
    assert isinstance(call, chat.ToolCall) and call.name == "calculator"
    assert isinstance(result, chat.ToolResult) and result.call["outcome"] == "ok"
    tokens = "".join(e.text for e in seen if isinstance(e, chat.Token))
    assert tokens == f"{SUPPORTED} [1]."
    done = seen[-1]
    assert isinstance(done, chat.Done) and len(done.answer.tool_calls) == 1


@pytest.mark.anyio
async def test_a_cached_answer_keeps_its_grounding(tmp_path: Path) -> None:
    settings = Settings(  # type: ignore[call-arg]
        data_dir=tmp_path,
        embedder={"use": "hashing"},
        answer_cache_enabled=True,
        logging={"format": "console", "access_log": False},
    )
    runtime = build_runtime(settings)
    await runtime.start()
    try:
        await Ingestor(runtime).ingest_bytes("kb", "pdb.md", DOC)
        runtime.chat_model = Scripted(f"{SUPPORTED}. {INVENTED}")
        first = await chat.answer(runtime, "kb", QUESTION)
        runtime.chat_model = Scripted("Something else entirely.")
        second = await chat.answer(runtime, "kb", QUESTION)
        events = await chat.stream_answer(runtime, "kb", QUESTION)
        streamed = [e async for e in events][-1]
    finally:
        await runtime.aclose()
    assert second.text == first.text and second.grounding == first.grounding
    assert first.grounding is not None and first.grounding.attached_citations == 1
    assert isinstance(streamed, chat.Done) and streamed.answer.grounding == first.grounding


def test_the_policy_is_part_of_the_answer_cache_key(tmp_path: Path) -> None:
    def fingerprint(**chat_settings: Any) -> str:
        settings = Settings(  # type: ignore[call-arg]
            data_dir=tmp_path, embedder={"use": "hashing"}, chat=chat_settings
        )
        return build_runtime(settings).fingerprint

    assert fingerprint() == fingerprint(grounding="annotate")
    assert fingerprint() != fingerprint(grounding="strip")
    assert fingerprint() != fingerprint(min_support=0.7)
