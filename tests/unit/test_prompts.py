from __future__ import annotations

import pytest

from ragtide.prompts import (
    DEFAULT_SYSTEM,
    MESSAGE_OVERHEAD_TOKENS,
    build_messages,
    cited_indexes,
    condense_messages,
    distinct_hits,
    estimate_tokens,
    render_sources,
    strip_citations,
)
from ragtide.types import ChatTurn, Chunk, Hit, Intent, Prompt


def hit(text: str, title: str = "Doc") -> Hit:
    return Hit(Chunk(id=text[:8], document_id="d", ordinal=0, text=text, title=title), 1.0)


def prompt(
    message: str = "What is a Pod?",
    hits: tuple[Hit, ...] = (),
    history: tuple[ChatTurn, ...] = (),
) -> Prompt:
    return Prompt(message, Intent("question", message), history, hits)


def test_messages_are_system_then_history_then_the_user_message() -> None:
    history = (ChatTurn.user("hi"), ChatTurn.assistant("Hello!"))
    messages = build_messages(prompt(hits=(hit("Pods run containers."),), history=history))
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0]["content"].startswith(DEFAULT_SYSTEM)
    assert messages[-1] == {"role": "user", "content": "What is a Pod?"}


def test_sources_are_numbered_by_their_position_in_the_hits() -> None:
    hits = (hit("Pods run containers.", "Pods"), hit("Services route traffic.", "Services"))
    system = build_messages(prompt(hits=hits))[0]["content"]
    assert "[1] Pods — Pods run containers.\n\n[2] Services — Services route traffic." in system


def test_the_system_text_can_be_replaced() -> None:
    system = build_messages(prompt(hits=(hit("x"),)), system="Be brief.")[0]["content"]
    assert system.startswith("Be brief.\n\nSources:\n[1]")
    assert DEFAULT_SYSTEM not in system


def test_the_instructions_ask_for_citations_and_honesty() -> None:
    assert "[1]" in DEFAULT_SYSTEM and "only" in DEFAULT_SYSTEM
    assert "do not contain" in DEFAULT_SYSTEM


def test_no_hits_says_so() -> None:
    assert "No sources were found" in build_messages(prompt())[0]["content"]


def test_sources_are_cut_to_the_context_budget_from_the_end() -> None:
    hits = tuple(hit(" ".join([f"word{i}"] * 150), f"T{i}") for i in range(5))
    sources = render_sources(hits, max_chars=1500)
    assert len(sources) <= 1500
    assert sources.startswith("[1] T0 — word0")
    assert "[2] T1 — word1" in sources and "[3]" not in sources
    assert sources.endswith("word1 …")


def test_a_source_that_fits_only_in_part_is_cut_at_a_word() -> None:
    sources = render_sources((hit("alpha " * 200, "A"),), max_chars=500)
    assert sources.endswith("alpha …") and len(sources) <= 500


def test_history_is_limited_and_old_citations_are_removed() -> None:
    history = tuple(
        ChatTurn.user(f"q{i}") if i % 2 == 0 else ChatTurn.assistant(f"a{i} [1].")
        for i in range(10)
    )
    messages = build_messages(prompt(history=history), max_history_turns=4)
    assert [m["content"] for m in messages[1:-1]] == ["q6", "a7.", "q8", "a9."]
    assert build_messages(prompt(history=history), max_history_turns=0)[1:-1] == []


def test_condense_messages_show_the_conversation_and_the_follow_up() -> None:
    history = (ChatTurn.user("What is a Pod?"), ChatTurn.assistant("A group [1]."))
    system, user = condense_messages("and its limits?", history)
    assert system["role"] == "system" and "standalone" in system["content"]
    assert user["role"] == "user"
    assert "User: What is a Pod?\nAssistant: A group." in user["content"]
    assert "Last message: and its limits?" in user["content"]


def test_condense_messages_without_history() -> None:
    assert "(no earlier turns)" in condense_messages("why?", [])[1]["content"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Pods run containers [1].", (1,)),
        ("A [2] and B [1, 3], again [2].", (2, 1, 3)),
        ("Both [1,2][3].", (1, 2, 3)),
        ("Out of range [0] [7] [2].", (2,)),
        ("No markers; a list [a] or [ ] or [1.5].", ()),
        ("Semicolons [3; 1].", (3, 1)),
    ],
)
def test_cited_indexes(text: str, expected: tuple[int, ...]) -> None:
    assert cited_indexes(text, 3) == expected


def test_strip_citations() -> None:
    assert strip_citations("Pods run [1]. Services route [2, 3].") == "Pods run. Services route."


# --- packing to the context window ----------------------------------------------------------


def scored(text: str, score: float, chunk_id: str | None = None) -> Hit:
    return Hit(Chunk(id=chunk_id or text[:8], document_id="d", ordinal=0, text=text), score)


def test_the_estimate_is_high_for_prose_and_counts_digits_one_by_one() -> None:
    prose = "A Pod is the smallest deployable unit of computing in Kubernetes."
    assert estimate_tokens(prose) >= len(prose) / 4  # English runs ~4 characters a token
    assert estimate_tokens("1234567890") == 10
    assert estimate_tokens("") == 0
    assert estimate_tokens("héllo wörld") == 7  # a token per byte outside ASCII, 3 in 9 ASCII


def test_repeated_passages_are_dropped_and_the_best_comes_first() -> None:
    best = scored("Pods run containers that share storage.", 0.9, "a")
    again = scored("Pods run containers that share storage.", 0.5, "a")
    inside = scored("pods  run containers", 0.7, "b")
    other = scored("Nodes run Pods.", 0.8, "c")
    assert distinct_hits([again, inside, other, best]) == [best, other]


def _tokens(messages: list[dict[str, str]]) -> int:
    return sum(estimate_tokens(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages)


def test_sources_are_packed_into_the_context_window() -> None:
    words = " ".join(f"word{i}" for i in range(600))
    hits = tuple(hit(f"Source {n}: {words}", title=f"T{n}") for n in range(5))
    unbounded = build_messages(prompt(hits=hits), max_context_chars=10**6)
    assert _tokens(unbounded) > 2048
    packed = build_messages(
        prompt(hits=hits), max_context_chars=10**6, max_context_tokens=2048, reserve_tokens=256
    )
    assert 2048 - 256 - 100 < _tokens(packed) <= 2048 - 256
    system = packed[0]["content"]
    assert "[1] T0 — Source 0" in system and "[3]" not in system  # best first, cut at the end


def test_old_history_gives_way_before_the_sources() -> None:
    long_turns = tuple(
        turn
        for i in range(3)
        for turn in (ChatTurn.user("q " * 300 + str(i)), ChatTurn.assistant("a " * 300))
    )
    p = prompt(hits=(hit("Pods run containers. " * 20),), history=long_turns)
    messages = build_messages(p, max_context_tokens=1100, reserve_tokens=100)
    assert "[1]" in messages[0]["content"]
    assert len(messages) < 2 + len(long_turns) and _tokens(messages) <= 1000
    assert messages[-2]["content"] == "a " * 300  # the most recent turns stay


def test_tool_turns_are_never_sent_to_the_model() -> None:
    history = (ChatTurn.user("hi"), ChatTurn.tool('{"name": "today"}'), ChatTurn.assistant("Hi"))
    roles = [m["role"] for m in build_messages(prompt(history=history))]
    assert roles == ["system", "user", "assistant", "user"]
