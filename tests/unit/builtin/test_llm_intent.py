"""LLMRewriteIntentDetector against a real HTTP server on 127.0.0.1 that plays the model
(``tests.chat_upstream.Upstream``: ``/ok/v1`` answers its ``reply``, ``/hang/v1`` never
answers until the tests end, ``/fail/v1`` answers 500)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from ragtide.builtin.intent import RuleIntentDetector
from ragtide.builtin.llm_intent import (
    REWRITE_INSTRUCTIONS,
    LLMRewriteIntentDetector,
    parse_rewrite,
)
from ragtide.builtin.openai import OpenAIChatModel
from ragtide.components import IntentDetector
from ragtide.registry import Registry
from ragtide.settings import ComponentSpec
from ragtide.types import ChatTurn
from tests.chat_upstream import Upstream

REWRITTEN = "What is the default of a PodDisruptionBudget?"
HISTORY = (
    ChatTurn.user("What does a PodDisruptionBudget limit?"),
    ChatTurn.assistant("It limits how many Pods of an application are down at once [1]."),
)
FOLLOW_UP = "and what about its default?"


@pytest.fixture(scope="module")
def server() -> Iterator[Upstream]:
    with Upstream.serving(REWRITTEN) as upstream:
        yield upstream


@pytest.fixture
def upstream(server: Upstream) -> Upstream:
    server.bodies.clear()
    server.reply = REWRITTEN
    return server


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def config(upstream: Upstream, mode: str = "ok", **options: Any) -> LLMRewriteIntentDetector.Config:
    llm = OpenAIChatModel.Config(
        base_url=upstream.http.url(f"/{mode}/v1"), model="rewriter", max_retries=0,
        max_tokens=64,
    )  # fmt: skip
    return LLMRewriteIntentDetector.Config(llm=llm, **options)


@pytest.fixture
async def detector(upstream: Upstream) -> AsyncIterator[LLMRewriteIntentDetector]:
    d = LLMRewriteIntentDetector(config(upstream))
    await d.start()
    yield d
    await d.aclose()


def rewrites(outcome: str) -> float:
    return REGISTRY.get_sample_value("ragtide_intent_rewrites_total", {"outcome": outcome}) or 0.0


@pytest.mark.anyio
async def test_a_follow_up_is_rewritten_into_the_models_standalone_question(
    detector: LLMRewriteIntentDetector, upstream: Upstream
) -> None:
    before = rewrites("rewritten")
    intent = await detector.detect(FOLLOW_UP, HISTORY)
    assert (intent.kind, intent.query, intent.condensed) == ("question", REWRITTEN, True)
    assert intent.needs_retrieval
    assert rewrites("rewritten") == before + 1
    [body] = upstream.bodies
    assert body["model"] == "rewriter"
    assert body["temperature"] == 0.0 and body["max_tokens"] == 64
    system, user = body["messages"]
    assert system == {"role": "system", "content": REWRITE_INSTRUCTIONS}
    assert user["role"] == "user"
    # The conversation, then the message to rewrite, last.
    assert "User: What does a PodDisruptionBudget limit?" in user["content"]
    assert "Assistant: It limits how many Pods" in user["content"]
    assert user["content"].index("Assistant:") < user["content"].index(f"Last message: {FOLLOW_UP}")


@pytest.mark.anyio
async def test_turns_the_rules_settle_never_reach_the_model(
    detector: LLMRewriteIntentDetector, upstream: Upstream
) -> None:
    rules = RuleIntentDetector()
    for message, history in [
        ("thanks!", HISTORY),  # social
        ("What is a Service?", HISTORY),  # stands alone
        (FOLLOW_UP, ()),  # nothing to lean on
        ("?!", HISTORY),  # no words
    ]:
        assert await detector.detect(message, history) == rules.classify(message, history)
    assert upstream.bodies == []


@pytest.mark.anyio
async def test_questions_mode_rewrites_every_question_after_a_user_turn(
    upstream: Upstream,
) -> None:
    d = LLMRewriteIntentDetector(config(upstream, rewrite="questions"))
    await d.start()
    try:
        intent = await d.detect("What is a Service?", HISTORY)
        assert intent.query == REWRITTEN
        only_assistant = (ChatTurn.assistant("Hello! Ask me anything."),)
        assert (await d.detect("What is a Service?", only_assistant)).query == "What is a Service?"
    finally:
        await d.aclose()
    assert len(upstream.bodies) == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("mode", "reply", "outcome"),
    [("hang", REWRITTEN, "timeout"), ("fail", REWRITTEN, "error"), ("ok", "  \n", "invalid"),
     ("ok", "x" * 301, "invalid")],
)  # fmt: skip
async def test_a_slow_failing_or_useless_model_falls_back_to_the_rules(
    upstream: Upstream, mode: str, reply: str, outcome: str
) -> None:
    upstream.reply = reply
    d = LLMRewriteIntentDetector(config(upstream, mode, deadline_s=0.2))
    await d.start()
    before = rewrites(outcome)
    try:
        intent = await d.detect(FOLLOW_UP, HISTORY)
    finally:
        await d.aclose()
    # The hanging server is released only when the module's tests end: this returned
    # because the deadline passed, not because the server answered.
    assert intent == RuleIntentDetector().classify(FOLLOW_UP, HISTORY)
    assert intent.condensed and "poddisruptionbudget" in intent.query.lower()
    assert rewrites(outcome) == before + 1
    assert len(upstream.bodies) == 1  # no retries inside the deadline


@pytest.mark.anyio
async def test_the_prompt_keeps_the_last_turns_each_cut_to_length(upstream: Upstream) -> None:
    d = LLMRewriteIntentDetector(config(upstream, history_turns=2, max_turn_chars=30))
    long_history = (
        ChatTurn.user("What is a Deployment?"),
        ChatTurn.assistant("A Deployment manages ReplicaSets."),
        ChatTurn.user("What does a PodDisruptionBudget limit during a drain?"),
        ChatTurn.tool('{"result": 42}'),
        ChatTurn.assistant("It limits voluntary disruptions of the Pods it selects [1]."),
    )
    user = d.messages(FOLLOW_UP, long_history)[1]["content"]
    assert "Deployment" not in user  # older than the last two turns
    assert '"result"' not in user  # tool turns are not conversation
    lines = [ln for ln in user.splitlines() if ln.startswith(("User: ", "Assistant: "))]
    assert len(lines) == 2
    assert all(len(ln.split(": ", 1)[1]) <= 30 for ln in lines)
    assert lines[0].endswith("…")


def test_a_system_prompt_replaces_the_rewrite_instructions(upstream: Upstream) -> None:
    llm = OpenAIChatModel.Config(base_url=upstream.http.url("/ok/v1"), system_prompt="Reformule.")
    d = LLMRewriteIntentDetector(LLMRewriteIntentDetector.Config(llm=llm))
    assert d.messages(FOLLOW_UP, HISTORY)[0] == {"role": "system", "content": "Reformule."}


@pytest.mark.parametrize(
    ("reply", "question"),
    [
        ("What is X?", "What is X?"),
        ('Standalone question: "What is X?"\nIt is Y.', "What is X?"),
        ("\n\n  question:  \u201cWhat is X?\u201d  ", "What is X?"),
        ("Rewrite: `kubectl drain` flags?", "`kubectl drain` flags?"),
        ("", None),
        ("   \n  ", None),
        ('Standalone question: ""', None),
        ("... ? !", None),
        ("w" * 41, None),
        ("w" * 40, "w" * 40),
    ],
)
def test_parse_rewrite(reply: str, question: str | None) -> None:
    assert parse_rewrite(reply, max_chars=40) == question


def test_registered_as_intent_llm_with_the_rules_defaults() -> None:
    registry = Registry.from_entry_points(None)
    detector = registry.build(IntentDetector, ComponentSpec(use="llm"))
    assert isinstance(detector, LLMRewriteIntentDetector)
    assert isinstance(detector, IntentDetector)
    defaults = LLMRewriteIntentDetector.Config()
    assert (defaults.llm.max_retries, defaults.llm.max_tokens) == (0, 64)
    assert defaults.rules == RuleIntentDetector.Config()
