"""The grounding bench's judgement of one reply (no model server)."""

from __future__ import annotations

from ragtide.bench.grounding import judge, markdown, summarise, sweep_markdown
from ragtide.settings import ChatSettings
from ragtide.support import default_scorer
from ragtide.types import Chunk, Hit

GOLD = Hit(
    Chunk(
        "g#0", "Steam#0", 0, "The Watt steam engine was patented in 1769 by James Watt.", "Steam"
    ),
    1.0,
)
OTHER = Hit(Chunk("o#0", "Other#0", 0, "Bread is baked from flour and water.", "Bread"), 0.5)
HITS = [GOLD, OTHER]
ANSWERABLE = {"answers": ["1769"], "context_ids": ["Steam#0"], "is_impossible": False}
UNANSWERABLE = {"answers": [], "context_ids": ["Steam#0"], "is_impossible": True}
GOOD = "James Watt patented the Watt steam engine in 1769."
MADE_UP = "Thomas Edison invented the locomotive in Ohio in 1850."


def run(qa: dict[str, object], raw: str, condition: str) -> dict[str, object]:
    return judge(qa, HITS, raw, condition, default_scorer(), ChatSettings())


def test_verification_attaches_the_citation_an_uncited_answer_lacked() -> None:
    off, on = run(ANSWERABLE, GOOD, "off"), run(ANSWERABLE, GOOD, "annotate")
    assert (off["cited"], off["cites_gold"]) == (False, False)
    assert (on["cited"], on["cites_gold"], on["holds_answer"]) == (True, True, True)
    assert on["unsupported"] == 0 and on["sentences"] == 1


def test_decline_and_strip_turn_an_invention_into_a_decline() -> None:
    off = run(UNANSWERABLE, MADE_UP, "off")
    assert not off["declined"] and off["unsupported"] == 1
    for condition in ("strip", "decline"):
        assert run(UNANSWERABLE, MADE_UP, condition)["declined"]


def test_a_models_own_decline_counts_as_one() -> None:
    raw = "The documents do not contain information about this."
    assert run(UNANSWERABLE, raw, "off")["declined"]


def test_summary_shares_and_the_table() -> None:
    judged = [
        (ANSWERABLE, run(ANSWERABLE, GOOD, "annotate")),
        (UNANSWERABLE, run(UNANSWERABLE, MADE_UP, "decline")),
    ]
    summary = summarise(judged)
    assert summary["cited"] == 1.0 and summary["declined_unanswerable"] == 1.0
    assert summary["declined_answerable"] == 0.0 and summary["holds_answer"] == 1.0
    table = markdown({"llm": {"annotate": summary}, "extractive": {"off": summary}})
    assert "| SmolLM2-135M | on, annotate | 1.00 |" in table and "| extractive | off |" in table


def test_the_sweep_table_marks_the_default_threshold() -> None:
    cell = {"declined_unanswerable": 0.9, "declined_answerable": 0.4, "holds_answer": 0.2}
    result = {
        "threshold": 0.5,
        "sweep": [{"threshold": t, "strip": cell, "decline": cell} for t in (0.4, 0.5)],
    }
    table = sweep_markdown(result)
    assert "| 0.4 | 0.90 / 0.40 | 0.20 |" in table and "| **0.5 (default)** |" in table
