"""ground(): citations checked, sentences scored, the policy applied (no I/O)."""

from __future__ import annotations

import pytest

from ragtide.grounding import ground, numbered, sentence_spans
from ragtide.support import default_scorer
from ragtide.types import Chunk, Hit

PDB = Hit(
    Chunk(
        "c1",
        "d1",
        0,
        "A PodDisruptionBudget limits the number of Pods of a replicated application that "
        "are down simultaneously from voluntary disruptions.",
        "Disruptions",
    ),
    1.0,
)
PODS = Hit(
    Chunk(
        "c2",
        "d2",
        0,
        "Pods are the smallest deployable units of computing that you can create and "
        "manage in Kubernetes.",
        "Pods",
    ),
    0.8,
)
HITS = [PDB, PODS]
INVENTED = "A PodDeletionPolicy in kubeconfig deletes pods after 30 days."


def spans_text(text: str) -> list[str]:
    return [text[a:b] for a, b in sentence_spans(text)]


def test_a_quoted_question_inside_a_sentence_does_not_end_it() -> None:
    text = 'Questions such as "and its limits?" are rewritten [1]. Ask! it works. Next one.'
    assert spans_text(text) == [
        'Questions such as "and its limits?" are rewritten [1].',
        "Ask! it works.",
        "Next one.",
    ]


def test_sentences_keep_markers_written_after_the_full_stop() -> None:
    text = "Pods are small. [1] They run e.g. containers. 1. First\n2. Second [2]. Done"
    assert spans_text(text) == [
        "Pods are small. [1]",
        "They run e.g. containers.",
        "1. First",
        "2. Second [2].",
        "Done",
    ]


def test_the_claim_scorer_backs_a_paraphrase_and_not_an_invention() -> None:
    scorer = default_scorer()
    paraphrase = "A PodDisruptionBudget limits how many Pods can be down during disruptions."
    assert scorer.supports(paraphrase, HITS)[0] >= 0.5
    assert max(scorer.supports(INVENTED, HITS)) < 0.5
    assert scorer.supports("The capital of France is Paris.", HITS) == [0.0, 0.0]
    assert scorer.verify(PDB.chunk.text, PDB) == 1.0  # a verbatim copy is fully backed


def test_a_citation_naming_no_hit_is_dropped_and_counted() -> None:
    text = "A PodDisruptionBudget limits voluntary disruptions of Pods [1, 7]. Pods run [9]."
    out = ground(text, HITS, default_scorer())
    assert "[1]." in out.text and "7" not in out.text and "[9]" not in out.text
    assert out.grounding.dropped_citations == 2


def test_a_supported_uncited_sentence_gets_its_citation() -> None:
    text = "Pods are the smallest deployable units in Kubernetes."
    out = ground(text, HITS, default_scorer())
    assert out.text == "Pods are the smallest deployable units in Kubernetes [2]."
    assert out.grounding.supported and out.grounding.attached_citations == 1
    assert out.positions == ((2,),) and out.attached == ((2,),)


def test_a_sentence_citing_the_wrong_hit_gets_the_right_one_attached() -> None:
    out = ground("Pods are the smallest deployable units [1].", HITS, default_scorer())
    assert out.text == "Pods are the smallest deployable units [1, 2]."
    assert out.grounding.sentences[0].supported


def test_cited_hits_are_scored_first() -> None:
    text = "A PodDisruptionBudget limits how many Pods are down from voluntary disruptions [1]."
    out = ground(text, HITS, default_scorer())
    assert out.text == text and out.grounding.attached_citations == 0
    assert out.grounding.sentences[0].support == 1.0


def test_annotate_keeps_the_text_and_reports_each_sentence() -> None:
    text = f"Pods are the smallest deployable units [2]. {INVENTED} Sure!"
    out = ground(text, HITS, default_scorer(), policy="annotate")
    assert out.text == text
    report = out.grounding
    assert (report.supported, report.action, report.policy) == (False, "none", "annotate")
    assert [s.supported for s in report.sentences] == [True, False, None]


def test_strip_drops_unsupported_sentences_only() -> None:
    text = f"Pods are the smallest deployable units [2]. {INVENTED} Sure!"
    out = ground(text, HITS, default_scorer(), policy="strip")
    assert out.text == "Pods are the smallest deployable units [2]. Sure!"
    assert out.grounding.action == "stripped"
    assert len(out.grounding.sentences) == 3  # the report describes what the model wrote


def test_strip_with_nothing_supported_left_declines() -> None:
    out = ground(INVENTED, HITS, default_scorer(), policy="strip", decline_text="Not found.")
    assert (out.text, out.grounding.action) == ("Not found.", "declined")


def test_decline_replaces_an_unsupported_answer() -> None:
    text = f"Pods are the smallest deployable units [2]. {INVENTED}"
    out = ground(text, HITS, default_scorer(), policy="decline", decline_text="Not found.")
    assert (out.text, out.grounding.action) == ("Not found.", "declined")


@pytest.mark.parametrize("policy", ["annotate", "strip", "decline"])
def test_a_supported_answer_is_left_alone_by_every_policy(policy: str) -> None:
    text = "Pods are the smallest deployable units [2]."
    out = ground(text, HITS, default_scorer(), policy=policy)  # type: ignore[arg-type]
    assert out.text == text and out.grounding.supported and out.grounding.action == "none"


def test_the_threshold_decides() -> None:
    text = "Pods are the smallest units of Kubernetes computing that people love."
    strict = ground(text, HITS, default_scorer(), threshold=0.99)
    lenient = ground(text, HITS, default_scorer(), threshold=0.1)
    assert not strict.grounding.supported and lenient.grounding.supported
    assert strict.grounding.threshold == 0.99


def test_without_hits_nothing_is_supported() -> None:
    out = ground("Pods are the smallest deployable units.", [], default_scorer())
    assert not out.grounding.supported and out.grounding.sentences[0].supported is False


def test_numbered_maps_positions_to_citation_indexes() -> None:
    out = ground(
        "Pods are deployable units [2]. A PodDisruptionBudget limits Pods [1].",
        HITS,
        default_scorer(),
    )
    report = numbered(out, (2, 1), declined=False)  # [1] stands for hit 2, [2] for hit 1
    assert [s.citations for s in report.sentences] == [(1,), (2,)]
