"""OpenAIChatModel against a real model server: llama-cpp-python with SmolLM2-135M.

The tiny model tests the protocol and the safety net, not answer quality: plain and
streamed answers, token usage (and ``ragtide_llm_tokens_total``), ``max_tokens``, a
generation longer than the timeout, the server stopping when our client goes away,
retries through a fault-injecting proxy, and tool calls in the wire format
(``chatml-function-calling``). ``scripts/llm-ensure`` installs the server and the model;
without them these tests are skipped locally and fail in CI.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client import REGISTRY

from ragtide.builtin.intent import RuleIntentDetector
from ragtide.builtin.llm_intent import LLMRewriteIntentDetector
from ragtide.builtin.openai import OpenAIChatModel
from ragtide.errors import UpstreamError, UpstreamTimeout
from ragtide.tools import ToolEngine, ToolLimits
from ragtide.tools.builtin import CalculatorTool
from ragtide.types import ChatTurn, Chunk, Hit, Intent, Prompt
from tests.llm_server import (
    RESET,
    STALL,
    Fault,
    FaultProxy,
    LlamaServer,
    fault_proxy,
    llama_server_missing,
)
from tests.polling import until

pytestmark = pytest.mark.integration

missing = llama_server_missing()
if missing is not None:
    if os.environ.get("CI"):
        raise RuntimeError(f"CI must run the model server tests: {missing}")
    pytest.skip(missing, allow_module_level=True)

# A long generation whatever the model would rather say: llama-cpp-python's `min_tokens`
# keeps the end-of-turn token from being sampled before that many tokens. LONG is
# abandoned (streamed) after a few tokens; a non-streamed request cannot be stopped
# (llama-cpp-python finishes it), so the timeout test asks for fewer: still seconds of
# work against a timeout of a quarter of a second.
LONG = 1200
LONGER_THAN_THE_TIMEOUT = 300


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    llama = LlamaServer(tmp_path_factory.mktemp("llama") / "server.log")
    llama.start()
    yield llama
    llama.stop()


@pytest.fixture(scope="module")
def proxy_server(server: LlamaServer) -> Iterator[FaultProxy]:
    with fault_proxy(server.port) as proxy:
        yield proxy


@pytest.fixture
def proxy(proxy_server: FaultProxy) -> FaultProxy:
    proxy_server.script()  # no faults, counts reset
    return proxy_server


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_prompt(message: str = "What is a Pod? Answer in one sentence.") -> Prompt:
    chunk = Chunk(
        id="c1",
        document_id="d1",
        ordinal=0,
        text="A Pod is the smallest deployable unit of computing in Kubernetes.",
        title="Pods",
    )
    return Prompt(message, Intent("question", message), (), [Hit(chunk, 1.0)])


@contextlib.asynccontextmanager
async def running(base_url: str, **overrides: Any) -> AsyncIterator[OpenAIChatModel]:
    settings: dict[str, Any] = {
        "base_url": base_url,
        "model": "smollm2",
        "temperature": 0.0,
        "max_tokens": 48,
        "timeout_s": 120.0,
        "max_retries": 0,
        "backoff_s": 0.0,
    }
    model = OpenAIChatModel(OpenAIChatModel.Config(**(settings | overrides)))
    await model.start()
    try:
        yield model
    finally:
        await model.aclose()


@pytest.mark.anyio
async def test_a_plain_answer_with_its_token_usage(server: LlamaServer) -> None:
    async with running(server.base_url) as model:
        reply = await model.generate(make_prompt())
    assert reply.text.strip()
    assert reply.usage["prompt_tokens"] > 20  # the instructions and the source
    assert 0 < reply.usage["completion_tokens"] <= 48
    assert reply.usage["total_tokens"] == (
        reply.usage["prompt_tokens"] + reply.usage["completion_tokens"]
    )


@pytest.mark.anyio
async def test_a_streamed_answer_is_the_plain_answer_in_pieces(server: LlamaServer) -> None:
    async with running(server.base_url) as model:
        plain = await model.generate(make_prompt())  # temperature 0: greedy, deterministic
        stream = model.stream(make_prompt())
        pieces = [piece async for piece in stream]
    assert len(pieces) > 1
    assert "".join(pieces) == plain.text
    # llama-cpp-python ignores stream_options; whatever a server reports is kept.
    assert set(stream.usage) <= {"prompt_tokens", "completion_tokens", "total_tokens"}


@pytest.mark.anyio
async def test_max_tokens_bounds_the_completion(server: LlamaServer) -> None:
    async with running(server.base_url, max_tokens=200) as model:
        short = await model.generate(make_prompt("Count from 1 to 100."), max_tokens=5)
        completion = await model.complete(
            [{"role": "user", "content": "Count from 1 to 100."}], max_tokens=5
        )
    assert 0 < short.usage["completion_tokens"] <= 5
    assert completion["finish_reason"] == "length"
    assert completion["usage"]["completion_tokens"] <= 5


def _tokens(kind: str) -> float:
    labels = {"component": "openai", "kind": kind}
    return REGISTRY.get_sample_value("ragtide_llm_tokens_total", labels) or 0.0


def test_a_turn_counts_the_servers_tokens(server: LlamaServer, tmp_path: Path) -> None:
    from ragtide.chat import answer
    from ragtide.ingest.pipeline import Ingestor
    from ragtide.runtime import build_runtime
    from ragtide.settings import Settings

    settings = Settings(  # type: ignore[call-arg]
        data_dir=tmp_path,
        embedder={"use": "hashing"},
        answer_cache_enabled=False,
        logging={"format": "console", "access_log": False},
        chat_model={
            "use": "openai",
            "config": {"base_url": server.base_url, "model": "smollm2", "max_tokens": 24},
        },
    )
    document = b"# Pods\n\nA Pod is the smallest deployable unit of computing in Kubernetes.\n"

    async def turn() -> dict[str, int]:
        rt = build_runtime(settings)
        await rt.start()
        try:
            await Ingestor(rt).ingest_bytes("kb", "pods.md", document)
            return dict((await answer(rt, "kb", "What is a Pod?")).usage)
        finally:
            await rt.aclose()

    before = {kind: _tokens(kind) for kind in ("prompt", "completion")}
    usage = anyio.run(turn)
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 24
    assert _tokens("prompt") - before["prompt"] == usage["prompt_tokens"]
    assert _tokens("completion") - before["completion"] == usage["completion_tokens"]


@pytest.mark.anyio
async def test_a_generation_longer_than_the_timeout_times_out(server: LlamaServer) -> None:
    # Not streamed: the server answers only once all the tokens are generated.
    n = LONGER_THAN_THE_TIMEOUT
    async with running(server.base_url, timeout_s=0.25, extra_body={"min_tokens": n}) as model:
        with pytest.raises(UpstreamTimeout, match=r"did not answer within 0\.25 s"):
            await model.generate(make_prompt("Tell a long story."), max_tokens=n)


@pytest.mark.anyio
async def test_the_server_stops_generating_when_our_client_goes_away(
    server: LlamaServer,
) -> None:
    """A streamed answer whose consumer is cancelled (as Starlette cancels a handler whose
    client went away) closes its HTTP response; llama-cpp-python notices the disconnect,
    leaves its generation loop and says so in its log (it prints that only when the loop
    was broken off, never after a generation that ran to its end)."""
    before = server.log().count("Disconnected from client")
    received: list[str] = []
    enough = anyio.Event()

    async def consume(model: OpenAIChatModel) -> None:
        async for piece in model.stream(make_prompt("Tell a long story."), max_tokens=LONG):
            received.append(piece)
            if len(received) == 3:
                enough.set()

    async with running(server.base_url, extra_body={"min_tokens": LONG}) as model:
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume, model)
            await enough.wait()
            tg.cancel_scope.cancel()
        until(
            lambda: server.log().count("Disconnected from client") > before,
            "the model server to see the client go away",
            timeout=60,
        )
        assert len(received) < LONG // 2  # cancelled well before the generation could end
        # And it is free again: the next request is served (the model is one at a time).
        reply = await model.generate(make_prompt(), max_tokens=8)
    assert reply.usage["completion_tokens"] <= 8


@pytest.mark.anyio
@pytest.mark.parametrize("streamed", [False, True])
async def test_rate_limits_server_errors_and_resets_are_retried(
    proxy: FaultProxy, streamed: bool
) -> None:
    proxy.script(Fault.status_code(429, "1"), Fault.status_code(503), RESET)
    async with running(proxy.base_url, max_retries=3, max_backoff_s=5) as model:
        if streamed:
            text = "".join([piece async for piece in model.stream(make_prompt())])
        else:
            text = (await model.generate(make_prompt())).text
    assert text.strip()
    assert proxy.hits == 4
    assert proxy.applied == ["status", "status", "reset", "pass"]
    # Retry-After: 1 was waited for (backoff_s is 0, so nothing else would wait).
    assert proxy.arrivals[1] - proxy.arrivals[0] >= 1.0


@pytest.mark.anyio
async def test_retries_are_bounded(proxy: FaultProxy) -> None:
    proxy.script(*[Fault.status_code(503, "0")] * 10)
    async with running(proxy.base_url, max_retries=2) as model:
        with pytest.raises(UpstreamError, match="HTTP 503: injected by the fault proxy"):
            await model.generate(make_prompt())
    assert proxy.hits == 3


@pytest.mark.anyio
async def test_a_retry_after_beyond_max_backoff_fails_at_once(proxy: FaultProxy) -> None:
    proxy.script(Fault.status_code(429, "120"))
    async with running(proxy.base_url, max_retries=3, max_backoff_s=10) as model:
        with pytest.raises(UpstreamError, match="rate limiting"):
            await model.generate(make_prompt())
    assert proxy.hits == 1


@pytest.mark.anyio
async def test_a_stalled_server_times_out_without_a_retry(proxy: FaultProxy) -> None:
    proxy.script(STALL)
    async with running(proxy.base_url, timeout_s=0.3, max_retries=3) as model:
        with pytest.raises(UpstreamTimeout):
            await model.generate(make_prompt())
    assert proxy.hits == 1  # the request may be running upstream: not sent twice


CALCULATOR = CalculatorTool()


@pytest.mark.anyio
async def test_a_tool_call_round_trip_in_the_wire_format(server: LlamaServer) -> None:
    spec = {
        "type": "function",
        "function": {
            "name": CALCULATOR.name,
            "description": CALCULATOR.description,
            "parameters": dict(CALCULATOR.parameters),
        },
    }
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Use the calculator for arithmetic."},
        {"role": "user", "content": "What is 6 times 7?"},
    ]
    forced = {"type": "function", "function": {"name": "calculator"}}
    async with running(server.base_url, max_tokens=64) as model:
        first = await model.complete(messages, tools=[spec], tool_choice=forced)
        [call] = first["message"]["tool_calls"]
        assert first["finish_reason"] == "tool_calls"
        assert call["type"] == "function" and call["id"]
        assert call["function"]["name"] == "calculator"
        arguments = json.loads(call["function"]["arguments"])  # the schema's grammar
        assert set(arguments) == {"expression"} and isinstance(arguments["expression"], str)
        result = await CALCULATOR.call({"expression": "6*7"}, ctx=None)  # type: ignore[arg-type]
        messages += [
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": json.dumps(result)},
        ]
        second = await model.complete(messages, tools=[spec], tool_choice="none")
    assert isinstance(second["message"]["content"], str)
    assert not second["message"].get("tool_calls")
    assert second["finish_reason"] in ("stop", "length")
    assert second["usage"]["prompt_tokens"] > 0


class FirstCallForced:
    """The real model, made to call ``calculator`` on its first turn (the tiny model's own
    choice between answering and calling a tool is not what is tested)."""

    def __init__(self, model: OpenAIChatModel) -> None:
        self.model = model
        self.model_id = model.model_id
        self.calls = 0

    async def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] = (),
        tool_choice: str | Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        self.calls += 1
        if self.calls == 1 and tool_choice == "auto":
            tool_choice = {"type": "function", "function": {"name": "calculator"}}
        return await self.model.complete(messages, tools=tools, tool_choice=tool_choice)


@pytest.mark.anyio
async def test_the_tool_engine_runs_against_the_real_server(server: LlamaServer) -> None:
    async with running(server.base_url, max_tokens=64) as model:
        forced = FirstCallForced(model)
        limits = ToolLimits(max_steps=1, deadline_s=120)
        run = await ToolEngine(limits).run(
            forced, [{"role": "user", "content": "What is 6 times 7?"}], [CALCULATOR]
        )
    [record] = run.calls
    assert record.name == "calculator" and record.step == 1
    # Whatever expression the tiny model wrote, the loop answered it (a result or an error).
    assert record.outcome in ("ok", "error")
    assert run.steps == 2 and run.stopped == "max_steps"
    assert run.reply.usage["prompt_tokens"] > 0
    assert [m["role"] for m in run.messages] == ["user", "assistant", "tool"]


# --- the dialogue flow with the real model: grounding and tools ------------------------------

KUBE_DOC = (
    b"# Disruptions\n\nA PodDisruptionBudget limits the number of Pods of a replicated "
    b"application that are down simultaneously from voluntary disruptions.\n\n"
    b"# Pods\n\nA Pod is the smallest deployable unit of computing in Kubernetes.\n"
)
# Nothing in KUBE_DOC answers this: whatever the tiny model writes is unsupported.
OFF_TOPIC = "Which company first released Kubernetes, and in which year?"


@contextlib.asynccontextmanager
async def dialogue(server: LlamaServer, tmp_path: Path, **chat: Any) -> AsyncIterator[Any]:
    from ragtide.ingest.pipeline import Ingestor
    from ragtide.runtime import build_runtime
    from ragtide.settings import Settings

    settings = Settings(  # type: ignore[call-arg]
        data_dir=tmp_path,
        embedder={"use": "hashing"},
        answer_cache_enabled=False,
        logging={"format": "console", "access_log": False},
        chat=chat,
        chat_model={
            "use": "openai",
            "config": {
                "base_url": server.base_url,
                "model": "smollm2",
                "max_tokens": 48,
                "timeout_s": 120.0,
            },
        },
    )
    rt = build_runtime(settings)
    await rt.start()
    try:
        await Ingestor(rt).ingest_bytes("kb", "k8s.md", KUBE_DOC)
        yield rt
    finally:
        await rt.aclose()


@pytest.mark.anyio
async def test_a_real_answer_is_verified_and_reported(server: LlamaServer, tmp_path: Path) -> None:
    from ragtide.chat import answer

    async with dialogue(server, tmp_path) as rt:
        result = await answer(rt, "kb", "What does a PodDisruptionBudget limit?")
        off = await answer(rt, "kb", OFF_TOPIC)
    for turn in (result, off):
        grounding = turn.grounding
        assert grounding is not None and grounding.policy == "annotate"
        assert grounding.action == "none" and grounding.sentences
        checked = [s for s in grounding.sentences if s.supported is not None]
        assert grounding.supported == (bool(checked) and all(s.supported for s in checked))
        numbers = {c.index for c in turn.citations}
        assert all(set(s.citations) <= numbers for s in grounding.sentences)
        assert all(0.0 <= s.support <= 1.0 for s in grounding.sentences)
    assert not off.grounding.supported  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_decline_and_strip_apply_to_a_real_answer(
    server: LlamaServer, tmp_path: Path
) -> None:
    from ragtide.chat import Done, answer, stream_answer

    async with dialogue(server, tmp_path, grounding="decline") as rt:
        declined = await answer(rt, "kb", OFF_TOPIC)
        events = await stream_answer(rt, "kb", OFF_TOPIC)
        done = [e async for e in events if isinstance(e, Done)].pop()
    assert declined.text == rt.settings.chat.decline_text and declined.citations == ()
    assert declined.grounding is not None and declined.grounding.action == "declined"
    assert done.answer.text == declined.text and done.answer.citations == ()

    async with dialogue(server, tmp_path / "strip", grounding="strip") as rt:
        stripped = await answer(rt, "kb", OFF_TOPIC)
    report = stripped.grounding
    assert report is not None and report.action in ("stripped", "declined")
    kept = [s.text for s in report.sentences if s.supported is not False]
    if report.action == "declined":
        assert stripped.text == rt.settings.chat.decline_text and not any(
            s.supported for s in report.sentences
        )
    else:
        dropped = [s.text for s in report.sentences if s.supported is False]
        assert all(text[:20] not in stripped.text for text in dropped)
        assert kept


class ForcedToolModel(FirstCallForced):
    """``FirstCallForced`` that also renders the prompt with the model's own settings."""

    def messages(self, prompt: Prompt) -> list[dict[str, str]]:
        return self.model.messages(prompt)


@pytest.mark.anyio
async def test_a_turn_with_tools_against_the_real_server(
    server: LlamaServer, tmp_path: Path
) -> None:
    from ragtide.chat import Done, ToolCall, ToolResult, answer, stream_answer

    async with dialogue(server, tmp_path, tools={"max_steps": 1, "deadline_s": 120}) as rt:
        assert isinstance(rt.chat_model, OpenAIChatModel)
        real = rt.chat_model
        rt.tools = (CALCULATOR,)
        rt.chat_model = ForcedToolModel(real)
        result = await answer(rt, "kb", "What is 6 times 7?", session_id="t1")
        saved = await rt.memory.load("kb", "t1", 10)
        rt.chat_model = ForcedToolModel(real)
        events = await stream_answer(rt, "kb", "What is 6 times 7?")
        seen = [e async for e in events]
        rt.chat_model = real  # closed with the runtime
    [call] = result.tool_calls
    assert call["name"] == "calculator" and call["outcome"] in ("ok", "error")
    assert [t.role for t in saved] == ["user", "tool", "assistant"]
    assert json.loads(saved[1].content)["call_id"] == call["call_id"]
    assert result.grounding is not None  # a tool turn's answer is verified like any other
    assert isinstance(seen[0], ToolCall) and seen[0].name == "calculator"
    assert isinstance(seen[1], ToolResult) and isinstance(seen[-1], Done)
    assert seen[-1].answer.tool_calls[0]["name"] == "calculator"


# --- prompting: sources packed into the model's context window --------------------------------

SAMPLES = [
    KUBE_DOC.decode(),
    "Version 1.29.3 was released on 2024-03-14; 3,141,592 pods ran 27182818 containers.",
    "kubectl get pods -o jsonpath='{.items[*].metadata.name}' | xargs -n1 kubectl delete pod",
    "Die Größe der Straße in Zürich: 東京の人口は約1400万人です。Ελληνικά κείμενα.",
    " ".join(f"word{i}" for i in range(300)),
]


def test_the_token_estimate_is_never_below_the_models_own_count(server: LlamaServer) -> None:
    from ragtide.prompts import DEFAULT_SYSTEM, estimate_tokens

    url = f"http://127.0.0.1:{server.port}/extras/tokenize/count"
    for text in [*SAMPLES, DEFAULT_SYSTEM]:
        count = httpx.post(url, json={"input": text}, timeout=60).json()["count"]
        assert count <= estimate_tokens(text) <= 3 * count + 10, text[:40]


@pytest.mark.anyio
async def test_packed_sources_fit_the_servers_context_window(server: LlamaServer) -> None:
    words = " ".join(f"pod{i} runs container{i}." for i in range(400))  # ~4,000 tokens each
    hits = [
        Hit(Chunk(id=f"c{n}", document_id=f"d{n}", ordinal=0, text=words, title=f"T{n}"), 1.0)
        for n in range(4)
    ]
    prompt = Prompt("What runs pod7?", Intent("question", "What runs pod7?"), (), hits)
    unbounded = {"max_context_chars": 10**6, "max_tokens": 8}
    async with running(server.base_url, **unbounded) as model:
        with pytest.raises(UpstreamError):  # far more than the server's n_ctx of 2048
            await model.generate(prompt)
    async with running(server.base_url, **unbounded, context_window=2048) as model:
        reply = await model.generate(prompt)
    # Packed with the high estimate: most of the window is used, none of it overflows.
    assert 2048 // 2 < reply.usage["prompt_tokens"] <= 2048 - 8


# Follow-ups rewritten by the real model (intent "llm"), and the rules as its safety net.

REWRITE_HISTORY = (
    ChatTurn.user("What does a PodDisruptionBudget limit?"),
    ChatTurn.assistant("It limits how many Pods of an application are down at once [1]."),
)


def _rewrites(outcome: str) -> float:
    labels = {"outcome": outcome}
    return REGISTRY.get_sample_value("ragtide_intent_rewrites_total", labels) or 0.0


@asynccontextmanager
async def rewriter(
    server: LlamaServer, extra_body: dict[str, Any] | None = None, **options: Any
) -> AsyncIterator[LLMRewriteIntentDetector]:
    llm = OpenAIChatModel.Config(
        base_url=server.base_url, model="smollm2", max_retries=0, extra_body=extra_body or {}
    )
    detector = LLMRewriteIntentDetector(LLMRewriteIntentDetector.Config(llm=llm, **options))
    await detector.start()
    try:
        yield detector
    finally:
        await detector.aclose()


@pytest.mark.anyio
async def test_the_real_model_rewrites_a_follow_up(server: LlamaServer) -> None:
    before = {o: _rewrites(o) for o in ("rewritten", "invalid", "error", "timeout")}
    # The tiny model on a busy machine: the deadline is generous, what is tested is the
    # round trip and that its reply becomes the query.
    async with rewriter(server, deadline_s=30.0) as detector:
        intent = await detector.detect("and what about its default?", REWRITE_HISTORY)
    after = {o: _rewrites(o) for o in before}
    assert after["rewritten"] == before["rewritten"] + 1, after
    assert intent.kind == "question" and intent.condensed and intent.needs_retrieval
    rules = RuleIntentDetector().classify("and what about its default?", REWRITE_HISTORY)
    assert intent.query != rules.query  # the model's words, not the rules' key words
    assert 0 < len(intent.query) <= 300 and "\n" not in intent.query


@pytest.mark.anyio
async def test_a_rewrite_past_its_deadline_falls_back_to_the_rules(server: LlamaServer) -> None:
    before = _rewrites("timeout")
    # min_tokens keeps the model generating far past a 50 ms deadline.
    async with rewriter(server, deadline_s=0.05) as detector:
        detector._llm._config.extra_body["min_tokens"] = 60
        intent = await detector.detect("and what about its default?", REWRITE_HISTORY)
    assert intent == RuleIntentDetector().classify("and what about its default?", REWRITE_HISTORY)
    assert _rewrites("timeout") == before + 1
