from __future__ import annotations

import pydantic
import pytest

from ragtide.builtin.intent import RuleIntentDetector
from ragtide.components import IntentDetector
from ragtide.types import ChatTurn, Intent

POD = [ChatTurn.user("What is a Pod in Kubernetes?"), ChatTurn.assistant("A Pod is ... [1].")]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def detector() -> RuleIntentDetector:
    return RuleIntentDetector(RuleIntentDetector.Config())


def test_implements_the_protocol(detector: RuleIntentDetector) -> None:
    assert isinstance(detector, IntentDetector)


@pytest.mark.anyio
async def test_detect_is_the_async_face_of_classify(detector: RuleIntentDetector) -> None:
    assert await detector.detect("hi", []) == detector.classify("hi", [])


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("hi", "greeting"),
        ("Hello there!", "greeting"),
        ("good morning", "greeting"),
        ("Hey, how are you?", "greeting"),
        ("thanks!", "thanks"),
        ("Thank you so much for the help", "thanks"),
        ("ok, got it", "thanks"),
        ("bye", "farewell"),
        ("Goodbye and thanks", "farewell"),
        ("See you later!", "farewell"),
    ],
)
def test_social_turns_need_no_retrieval(
    detector: RuleIntentDetector, message: str, kind: str
) -> None:
    intent = detector.classify(message, POD)
    assert intent == Intent(kind, message, needs_retrieval=False)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "message",
    [
        "What is a Service?",
        "How do I restart a Deployment?",
        "Is there a way to limit memory per namespace?",
        "What is the command that creates a namespace?",
        "Is it possible to run kubectl on Windows?",
        "What is Kubernetes?",
        "Great Barrier Reef location?",
    ],
)
def test_self_contained_questions_are_left_as_they_are(
    detector: RuleIntentDetector, message: str
) -> None:
    assert detector.classify(message, POD) == Intent("question", message)


def test_a_leading_greeting_is_dropped_from_the_query(detector: RuleIntentDetector) -> None:
    assert detector.classify("Hi, what is a Pod?", []) == Intent("question", "what is a Pod?")


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("and what about its limits?", {"pod", "kubernetes", "limits"}),
        ("What about Services?", {"pod", "kubernetes", "services"}),
        ("How do I delete them?", {"how", "pod", "kubernetes", "delete"}),
        ("why?", {"why", "pod", "kubernetes"}),
        ("what does that mean", {"what", "pod", "kubernetes"}),
        ("tell me more", {"pod", "kubernetes"}),
        ("limits?", {"pod", "kubernetes", "limits"}),
        ("Can I run several containers in it?", {"pod", "kubernetes", "run", "containers"}),
        ("thanks, and how do I scale it?", {"how", "pod", "kubernetes", "scale"}),
    ],
)
def test_follow_ups_are_condensed_with_the_previous_question(
    detector: RuleIntentDetector, message: str, expected: set[str]
) -> None:
    intent = detector.classify(message, POD)
    assert intent.kind == "question"
    assert intent.needs_retrieval and intent.condensed
    assert set(intent.query.split()) == expected


def test_condensing_carries_the_topic_through_a_chain_of_follow_ups(
    detector: RuleIntentDetector,
) -> None:
    history = [*POD, ChatTurn.user("and what about its limits?"), ChatTurn.assistant("...")]
    intent = detector.classify("how do I set them?", history)
    assert intent.condensed
    assert intent.query.split() == ["how", "pod", "kubernetes", "limits", "set"]


def test_social_turns_in_the_history_are_skipped(detector: RuleIntentDetector) -> None:
    history = [*POD, ChatTurn.user("thanks!"), ChatTurn.assistant("You're welcome!")]
    assert detector.classify("and its limits?", history).query == "pod kubernetes limits"


def test_a_new_topic_replaces_the_old_one(detector: RuleIntentDetector) -> None:
    history = [*POD, ChatTurn.user("What is a ConfigMap?"), ChatTurn.assistant("...")]
    assert detector.classify("why?", history).query == "why configmap"


def test_only_the_configured_number_of_questions_is_consulted() -> None:
    history = [
        ChatTurn.user("What is a Pod in Kubernetes?"),
        ChatTurn.user("and its limits?"),
        ChatTurn.user("and the requests?"),
    ]
    one = RuleIntentDetector(RuleIntentDetector.Config(history_turns=1))
    assert one.classify("why?", history).query == "why requests"
    three = RuleIntentDetector(RuleIntentDetector.Config(history_turns=3))
    assert three.classify("why?", history).query == "why pod kubernetes limits requests"
    none = RuleIntentDetector(RuleIntentDetector.Config(history_turns=0))
    assert none.classify("why?", history) == Intent("question", "why?")


def test_assistant_turns_are_not_used_as_topic(detector: RuleIntentDetector) -> None:
    history = [ChatTurn.assistant("Pods run containers.")]
    assert detector.classify("and its limits?", history) == Intent("question", "and its limits?")


def test_a_follow_up_without_history_is_left_as_it_is(detector: RuleIntentDetector) -> None:
    assert detector.classify("why?", []) == Intent("question", "why?")


def test_an_empty_message_needs_no_retrieval(detector: RuleIntentDetector) -> None:
    assert detector.classify("  ?! ", POD) == Intent("question", "", needs_retrieval=False)


def test_extra_phrases_extend_the_defaults() -> None:
    config = RuleIntentDetector.Config(greetings=("moin",), thanks=("danke",), farewells=("ciao",))
    detector = RuleIntentDetector(config)
    assert detector.classify("Moin!", []).kind == "greeting"
    assert detector.classify("danke", []).kind == "thanks"
    assert detector.classify("ciao", []).kind == "farewell"
    assert detector.classify("hello", []).kind == "greeting"


def test_a_phrase_without_words_is_rejected() -> None:
    with pytest.raises(pydantic.ValidationError):
        RuleIntentDetector.Config(greetings=("!!",))


def test_unknown_config_keys_are_rejected() -> None:
    with pytest.raises(pydantic.ValidationError):
        RuleIntentDetector.Config.model_validate({"history_turn": 3})
