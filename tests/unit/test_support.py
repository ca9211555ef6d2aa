from __future__ import annotations

import json
from importlib import resources

import pytest

from ragtide.builtin._answerability import default_model, default_scorer
from ragtide.support import (
    ANSWER_FEATURES,
    FEATURES,
    SupportModel,
    SupportScorer,
    features,
    query_terms,
)
from ragtide.types import Chunk, Hit

WARSAW = (
    "Warsaw is the capital and largest city of Poland. It stands on the Vistula River in "
    "east-central Poland. In 2012 the Economist Intelligence Unit ranked Warsaw as the "
    "32nd most liveable city in the world."
)
BAKING = "Sourdough bread rises slowly. Bakers feed the starter with flour and water every day."


def hit(text: str, score: float = 1.0, title: str = "") -> Hit:
    return Hit(Chunk(id=text[:10], document_id=text[:10], ordinal=0, text=text, title=title), score)


def test_the_shipped_weights_load_and_round_trip() -> None:
    model = default_model()
    assert len(model.sentence) == len(FEATURES)
    assert len(model.answer) == len(ANSWER_FEATURES)
    assert 0.0 < model.threshold < 1.0
    assert "held_out" in (model.meta or {})
    assert SupportModel.from_dict(model.to_dict()) == model
    raw = resources.files("ragtide.builtin.models").joinpath("answerability.json").read_text()
    assert json.loads(raw)["threshold"] == model.threshold


def test_weights_for_other_features_are_refused() -> None:
    data = default_model().to_dict()
    data["sentence"]["weights"] = {"something_else": 1.0}
    with pytest.raises(ValueError, match="other features"):
        SupportModel.from_dict(data)


def test_supports_are_probabilities_and_the_answer_ranks_first() -> None:
    scorer = default_scorer()
    ranked = scorer.rank("Who ranked Warsaw as the 32nd most liveable city?", [hit(WARSAW)])
    assert ranked and all(0.0 <= c.support <= 1.0 for c in ranked)
    assert "Economist Intelligence Unit" in ranked[0].text
    assert 0.0 <= scorer.answerability(ranked) <= 1.0


def test_a_swapped_name_lowers_answerability() -> None:
    scorer = default_scorer()
    right = scorer.rank("Who ranked Warsaw as the 32nd most liveable city?", [hit(WARSAW)])
    swapped = scorer.rank("Who ranked Prussia as the 22nd most liveable city?", [hit(WARSAW)])
    assert scorer.answerability(swapped) < scorer.answerability(right)
    assert scorer.answerable(right) and not scorer.answerable(swapped)


def test_a_sentence_that_repeats_the_question_is_never_a_candidate() -> None:
    text = (
        "Ask it: which file formats can I upload? The answer lists them. "
        "Supported formats are plain text, Markdown and PDF."
    )
    ranked = default_scorer().rank("Which file formats can I upload?", [hit(text)])
    assert all("which file formats can i upload" not in c.text.lower() for c in ranked)


def test_headings_and_code_are_not_candidates() -> None:
    text = "Installing\n\n```\npip install ragtide\n```\n\nRun the installer from a checkout."
    ranked = default_scorer().rank("How do I run the installer?", [hit(text)])
    assert [c.text for c in ranked] == ["Run the installer from a checkout."]


def test_verify_scores_a_claim_against_its_passage() -> None:
    scorer = default_scorer()
    backed = scorer.verify("Warsaw stands on the Vistula River.", hit(WARSAW))
    unrelated = scorer.verify("Warsaw stands on the Vistula River.", hit(BAKING))
    assert 0.0 <= unrelated < backed <= 1.0


def test_no_query_words_or_no_hits_give_nothing() -> None:
    scorer = default_scorer()
    assert scorer.rank("", [hit(WARSAW)]) == []
    assert scorer.rank("What is Warsaw?", []) == []
    assert scorer.answerability([]) == 0.0
    assert not scorer.answerable([])


def test_feature_rows_match_the_feature_names() -> None:
    rows = features("When did Warsaw rank 32nd?", [hit(WARSAW), hit(BAKING, 0.5)])
    assert rows and all(len(row) == len(FEATURES) for *_, row in rows)
    assert list(query_terms("What is the largest city of Poland?")) == ["largest", "city", "poland"]


def test_a_custom_model_is_used() -> None:
    zero = SupportModel((0.0,) * len(FEATURES), 0.0, (0.0,) * len(ANSWER_FEATURES), 0.0, 0.5)
    ranked = SupportScorer(zero).rank("Which river is Warsaw on?", [hit(WARSAW)])
    assert {c.support for c in ranked} == {0.5}
    with pytest.raises(ValueError):
        SupportModel((1.0,), 0.0, (0.0,) * len(ANSWER_FEATURES), 0.0)


def test_citations_are_renumbered_in_order_of_appearance() -> None:
    from ragtide.chat import citations_for, renumber_citations

    text, cited = renumber_citations("Pods [3]. Limits [1, 3]. Not a source [9]. Nodes [2].", 4)
    assert text == "Pods [1]. Limits [1, 2]. Not a source [9]. Nodes [3]."
    assert cited == (3, 1, 2)
    hits = [hit(WARSAW, 1.5), hit(BAKING, 0.75), hit("Third passage here.", 0.3), hit("x", 0.1)]
    citations = citations_for(hits, cited)
    assert [c.index for c in citations] == [1, 2, 3]
    assert [c.text for c in citations] == ["Third passage here.", WARSAW, BAKING]
    assert [c.score for c in citations] == pytest.approx([0.2, 1.0, 0.5])  # relative to the top
    assert citations_for([], (1,)) == ()


def test_streamed_markers_are_renumbered_across_pieces() -> None:
    from ragtide.citations import Renumberer

    renumber = Renumberer(4)
    pieces = ["Pods ", "[", "4", "] and ", "nodes [2", ", 4]", " in a[", "q]"]
    out = "".join(renumber.feed(p) for p in pieces) + renumber.flush()
    assert out == "Pods [1] and nodes [1, 2] in a[q]"
    assert renumber.cited == (4, 2)
