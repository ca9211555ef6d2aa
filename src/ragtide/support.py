"""Support: does a retrieved sentence answer a question (or back a claim)? One scorer.

Every chat model uses this module: the extractive model picks and declines with it, an
LLM's citations are to be checked with it (``verify``). It is pure Python over
``ragtide.text`` (no I/O; the weights are handed in), fast enough to score every sentence
of a prompt's hits on each turn (1-2 ms for five SQuAD paragraphs).

API
---
``SupportScorer(model).rank(query, hits) -> list[Candidate]``
    Every quotable sentence of ``hits`` (``ragtide.text.passage_sentences``: headings and
    code are not) that shares a content word with ``query``, best supported first.
    ``Candidate.support`` is in [0, 1]: the sentence model's probability that the sentence
    holds the answer to ``query``. Sentences that only restate the question (they contain
    it whole, or end with "?") are never candidates.
``SupportScorer(model).answerability(candidates) -> float``
    In [0, 1]: the answer model's probability that answering with ``candidates[0]`` is
    right, rather than the question being unanswerable from these hits.
``SupportScorer(model).answerable(candidates, threshold=None) -> bool``
    ``answerability >= threshold`` (default ``model.threshold``).
``SupportScorer(model).supports(claim, hits) -> list[float]`` (``verify(claim, hit)``)
    For a model's answer (``ragtide.grounding``): how well each hit supports ``claim``
    (a sentence the model wrote), in [0, 1]: the claim mode of the same features
    (coverage of the claim by the hit's best sentence, names and numbers missing or
    replaced, opposites, negation), not the question model.
``SupportModel``
    The weights of two logistic regressions, ``sentence`` over ``FEATURES`` and ``answer``
    over ``ANSWER_FEATURES`` (the best sentence's features, its support and the runner-up's),
    and the default threshold; ``from_dict``/``to_dict`` read and write the JSON they ship
    as (``ragtide/builtin/models/answerability.json``, learned by
    ``python -m ragtide.bench.answers --train`` from SQuAD v2.0 articles, reported on
    others). ``features(query, hits)`` gives the raw rows, for training.

Features of a (question, sentence, its paragraph, the retrieval) tuple, each in [0, 1]:
IDF-weighted coverage of the question's content words (stemmed) by the sentence, by it with
its neighbours, with its paragraph's title, and by its whole paragraph; the rarest question
word missing there; the share of the question's names and numbers missing from the
sentence and from the paragraph, and a number of the question replaced by another; a word
of the question whose opposite (gained/lost, first/last, month/year…) the sentence has
instead; a superlative or "only"/"first" of the question missing; how tightly the matched
words cluster; whether the sentence has what the question asks for (a year or date for
"when", a number for "how many", a name for "who"/"where", new words otherwise) and how much
it says beyond the question; negation in one but not the other; the paragraph's retrieval
rank, score relative to the best, and the best hit's margin over the next.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from ragtide.text import STOPWORDS, passage_sentences, stem, words
from ragtide.types import Hit

__all__ = [
    "ANSWER_FEATURES",
    "FEATURES",
    "Candidate",
    "SupportModel",
    "SupportScorer",
    "default_scorer",
    "features",
    "query_terms",
    "shipped_model",
]

MODEL_PACKAGE, MODEL_FILE = "ragtide.builtin.models", "answerability.json"

# Question words that rarely appear in the sentence that answers them.
_QUESTION_NOISE = frozenset(
    """name named called many much kind type sort happen happened mean means
    give list term describe explain tell example""".split()
)
_NEGATIONS = frozenset("not no never none nothing nobody neither nor cannot without".split())
_MONTHS = frozenset(
    """january february march april may june july august september october november
    december""".split()
)
_CODE_SPAN = re.compile(r"`[^`\n]+`")
_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")  # noqa: RUF001
# Pairs of words of opposite sense: a question that has one where its sentence has the
# other was likely written to look answerable without being so.
_OPPOSITES = [
    tuple(pair.split("/"))
    for pair in """lost/gained lose/gain loss/gain increase/decrease increased/decreased rise/fall
    rose/fell raised/lowered high/low higher/lower highest/lowest large/small larger/smaller
    largest/smallest big/small bigger/smaller biggest/smallest most/least more/less
    many/few first/last earliest/latest early/late earlier/later before/after begin/end
    beginning/end start/end started/ended middle/end inner/outer upper/lower north/south
    east/west northern/southern eastern/western old/new older/newer oldest/newest
    ancient/modern win/lose won/lost success/failure successful/unsuccessful positive/negative
    major/minor maximum/minimum max/min long/short longer/shorter longest/shortest
    month/year monthly/annual day/night born/died birth/death open/closed opened/closed
    import/export imported/exported imports/exports buy/sell bought/sold accept/reject
    accepted/rejected allow/forbid allowed/banned legal/illegal public/private true/false
    include/exclude included/excluded above/below top/bottom inside/outside internal/external
    same/different similar/different strong/weak stronger/weaker hot/cold warm/cool
    wet/dry heavy/light fast/slow faster/slower cheap/expensive rich/poor wealthy/poor
    all/none always/never everyone/nobody entire/part whole/part""".split()
]
_OPPOSITE: dict[str, set[str]] = {}
for _a, _b in _OPPOSITES:
    _OPPOSITE.setdefault(stem(_a), set()).add(stem(_b))
    _OPPOSITE.setdefault(stem(_b), set()).add(stem(_a))
_QUALIFIERS = frozenset(
    stem(w)
    for w in """first last only most least largest smallest biggest highest lowest oldest
    newest earliest latest main primary best worst all every entire""".split()
)
_NUMBER_WORDS = frozenset(
    """one two three four five six seven eight nine ten eleven twelve twenty thirty forty
    fifty hundred thousand million billion half dozen""".split()
)

FEATURES: tuple[str, ...] = (
    "coverage",
    "coverage_near",
    "coverage_hit",
    "coverage_gap",
    "missing_rarest",
    "missing_share",
    "missing_entities",
    "missing_numbers",
    "proximity",
    "novelty",
    "restates",
    "type_match",
    "ask_when",
    "ask_number",
    "ask_who",
    "ask_where",
    "ask_why_how",
    "negation_mismatch",
    "question_negated",
    "rank",
    "hit_score",
    "margin",
    "query_size",
    "sentence_size",
    "coverage_x_type",
    "coverage_x_hit",
    "coverage_titled",
    "entities_missing_here",
    "entities_missing_near",
    "rarest_missing_here",
    "missing_here_found_in_hit",
    "entities_missing_untitled",
    "antonym_in_sentence",
    "qualifier_missing",
    "number_conflict",
)


ANSWER_FEATURES: tuple[str, ...] = (*FEATURES, "support", "runner_up_support")


@dataclass(frozen=True, slots=True)
class Candidate:
    """A quotable sentence of a hit and how well it supports the query."""

    hit: int  # 1-based index into the hits
    position: int  # index of the sentence among its hit's passage sentences
    text: str
    matched: frozenset[str]  # the query's stems it contains
    coverage: float  # IDF-weighted share of the query's content words, in [0, 1]
    support: float  # probability that it holds the answer, in [0, 1]
    features: tuple[float, ...] = ()


def _logistic(weights: Sequence[float], bias: float, row: Sequence[float]) -> float:
    z = bias + sum(w * x for w, x in zip(weights, row, strict=True))
    if z < -60:
        return 0.0
    return 1.0 / (1.0 + math.exp(-z))


@dataclass(frozen=True, slots=True)
class SupportModel:
    """Two logistic regressions and the default decision threshold.

    ``sentence`` (over ``FEATURES``) scores one sentence: the probability that it holds
    the answer. ``answer`` (over ``ANSWER_FEATURES``: the best sentence's features, its
    support and the runner-up's) scores the decision: the probability that answering
    with the best sentence is right rather than the question unanswerable from the hits.
    """

    sentence: tuple[float, ...]
    sentence_bias: float
    answer: tuple[float, ...]
    answer_bias: float
    threshold: float = 0.5
    meta: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if len(self.sentence) != len(FEATURES) or len(self.answer) != len(ANSWER_FEATURES):
            raise ValueError("the weights do not match the features")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SupportModel:
        """Read the JSON form (``to_dict``); refuses weights trained for other features."""
        sentence, answer = data["sentence"], data["answer"]
        if list(sentence["weights"]) != list(FEATURES) or list(answer["weights"]) != list(
            ANSWER_FEATURES
        ):
            raise ValueError("the weights were trained for other features")
        return cls(
            tuple(float(v) for v in sentence["weights"].values()),
            float(sentence["bias"]),
            tuple(float(v) for v in answer["weights"].values()),
            float(answer["bias"]),
            float(data["threshold"]),
            data.get("meta"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "sentence": {
                "weights": dict(zip(FEATURES, self.sentence, strict=True)),
                "bias": self.sentence_bias,
            },
            "answer": {
                "weights": dict(zip(ANSWER_FEATURES, self.answer, strict=True)),
                "bias": self.answer_bias,
            },
            "threshold": self.threshold,
            "meta": dict(self.meta or {}),
        }


@dataclass(slots=True)
class _Row:
    hit: int
    position: int
    text: str
    matched: frozenset[str]
    coverage: float
    features: list[float]


def query_terms(query: str) -> dict[str, None]:
    """The query's distinct content-word stems, in order."""
    return dict.fromkeys(
        stem(w) for w in words(query) if w not in STOPWORDS and w not in _QUESTION_NOISE
    )


class SupportScorer:
    """Scores sentences of retrieved hits against a query with a ``SupportModel``."""

    def __init__(self, model: SupportModel) -> None:
        self.model = model

    def rank(self, query: str, hits: Sequence[Hit]) -> list[Candidate]:
        """Every quotable sentence of ``hits`` that shares a word with ``query``, best first.

        Sentences that only restate the query (they contain it, or end with "?") are left
        out: they are never an answer.
        """
        m = self.model
        out = [
            Candidate(
                r.hit,
                r.position,
                r.text,
                r.matched,
                r.coverage,
                _logistic(m.sentence, m.sentence_bias, r.features),
                tuple(r.features),
            )
            for r in _rows(query, hits)
        ]
        out.sort(key=lambda c: c.support, reverse=True)
        return out

    def answerability(self, candidates: Sequence[Candidate]) -> float:
        """The probability, in [0, 1], that answering with ``candidates[0]`` is right."""
        if not candidates:
            return 0.0
        best = candidates[0]
        runner_up = candidates[1].support if len(candidates) > 1 else 0.0
        row = (*best.features, best.support, runner_up)
        return _logistic(self.model.answer, self.model.answer_bias, row)

    def answerable(self, candidates: Sequence[Candidate], threshold: float | None = None) -> bool:
        """Whether ``answerability`` reaches ``threshold`` (default: the model's)."""
        limit = self.model.threshold if threshold is None else threshold
        return bool(candidates) and self.answerability(candidates) >= limit

    def verify(self, claim: str, hit: Hit) -> float:
        """How well ``hit`` supports ``claim``, in [0, 1] (``supports`` for one hit)."""
        return self.supports(claim, [hit])[0]

    def supports(self, claim: str, hits: Sequence[Hit]) -> list[float]:
        """For each hit, how well it supports ``claim`` (a sentence a model wrote), in [0, 1].

        The claim mode of the same features: the support of a hit is that of its best
        sentence, the IDF-weighted share of the claim's content words found in the
        sentence (or, a little discounted, in it with its neighbours and its title),
        lowered for each name or number of the claim missing around it, a number of the
        claim replaced by another, a word whose opposite the sentence has instead, and a
        negation in one but not the other. The question model (``rank``) is not used:
        it scores what *answers* a question, and a sentence that repeats its query is
        exactly what backs a claim. IDF is taken over the sentences of all ``hits``,
        so a word no hit has weighs most. 0.0 for a claim without content words.
        """
        best = [0.0] * len(hits)
        for row in _rows(claim, hits, claim=True):
            best[row.hit - 1] = max(best[row.hit - 1], _claim_support(row.features))
        return best


@lru_cache(maxsize=1)
def shipped_model() -> SupportModel:
    """The weights shipped in the wheel (``ragtide/builtin/models/answerability.json``),
    read on first use (a data file, not code: the core imports no plugin)."""
    text = resources.files(MODEL_PACKAGE).joinpath(MODEL_FILE).read_text()
    return SupportModel.from_dict(json.loads(text))


def default_scorer() -> SupportScorer:
    """A scorer with the shipped weights."""
    return SupportScorer(shipped_model())


def features(query: str, hits: Sequence[Hit]) -> list[tuple[int, int, str, list[float]]]:
    """(hit, position, sentence, feature row) for every candidate sentence: for training."""
    return [(r.hit, r.position, r.text, r.features) for r in _rows(query, hits)]


# --- features ------------------------------------------------------------------------


def _question_type(tokens: list[str]) -> str:
    joined = " ".join(tokens[:6])
    if re.search(r"\bhow (many|much|long|old|far|large|big|often|high|tall|fast)\b", joined) or (
        re.search(r"\b(what|which) (percentage|percent|number|amount|size)\b", joined)
    ):
        return "number"
    if "when" in tokens[:4] or re.search(
        r"\b(what|which) (year|years|date|day|month|century|decade|time)\b", joined
    ):
        return "when"
    if "who" in tokens[:4] or "whom" in tokens[:4] or "whose" in tokens[:4]:
        return "who"
    if "where" in tokens[:4]:
        return "where"
    if "why" in tokens[:4] or "how" in tokens[:4]:
        return "why_how"
    return "other"


def _is_number(token: str) -> bool:
    return token[:1].isdigit() or token in _NUMBER_WORDS


def _is_date(token: str) -> bool:
    if token.isdigit():
        return len(token) in (3, 4)
    return token in _MONTHS or (token[:1].isdigit() and token.endswith(("s", "th")))


def _entities(text: str) -> set[str]:
    """Stems of capitalised words past the first and of numbers: names, years, figures."""
    out: set[str] = set()
    for i, raw in enumerate(_TOKEN.findall(text)):
        low = raw.lower()
        if raw[:1].isdigit() or (i > 0 and raw[:1].isupper() and low not in STOPWORDS):
            out.add(stem(low))
    return out


def _proximity(stems: list[str], matched: frozenset[str]) -> float:
    """How tightly the matched terms cluster: distinct terms over the shortest window."""
    if len(matched) < 2:
        return 0.0
    need, counts, have, left = len(matched), dict.fromkeys(matched, 0), 0, 0
    best = len(stems)
    for right, s in enumerate(stems):
        if s in counts:
            counts[s] += 1
            have += counts[s] == 1
        while have == need:
            best = min(best, right - left + 1)
            if stems[left] in counts:
                counts[stems[left]] -= 1
                have -= counts[stems[left]] == 0
            left += 1
    return need / best


def _rows(query: str, hits: Sequence[Hit], *, claim: bool = False) -> list[_Row]:
    terms = query_terms(query)
    if not terms or not hits:
        return []
    wanted = terms.keys()
    q_words = words(query)
    q_all = {stem(w) for w in q_words}
    q_type = _question_type(q_words)
    q_neg = any(w in _NEGATIONS or w.endswith("n't") for w in q_words)
    q_entities = _entities(query) & set(wanted)
    q_numbers = {e for e in q_entities if e[:1].isdigit()}
    q_phrase = " ".join(q_words)
    restating = len(q_words) >= 4  # a question this long is not a sentence's accident

    # (hit, position, text, raw words, stems, matched) per quotable sentence
    parsed: list[tuple[int, int, str, list[str], list[str], frozenset[str]]] = []
    hit_found: list[set[str]] = []
    hit_stems: list[set[str]] = []
    titles: list[set[str]] = []
    df = dict.fromkeys(terms, 0)
    for index, hit in enumerate(hits, start=1):
        every = {stem(w) for w in words(hit.chunk.title)}
        titles.append(set(every))
        for position, sentence in enumerate(passage_sentences(hit.chunk.text)):
            raw = words(sentence.text)
            stems = [stem(w) for w in raw]
            every.update(stems)
            if sentence.kind in ("heading", "code"):
                continue
            matched = frozenset(wanted & set(stems))
            for term in matched:
                df[term] += 1
            parsed.append((index, position, sentence.text, raw, stems, matched))
        hit_stems.append(every)
        hit_found.append(every & set(wanted))
    n = max(len(parsed), 1)
    idf = {t: math.log(1.0 + (n - d + 0.5) / (d + 0.5)) for t, d in df.items()}
    total = sum(idf.values())
    top_idf = max(idf.values())
    scores = [hit.score for hit in hits]
    best_score = max(scores)
    margin = (scores[0] - scores[1]) / scores[0] if len(scores) > 1 and scores[0] > 0 else 1.0
    q_size = min(len(terms) / 10.0, 1.0)
    best_cov = 0.0
    coverages: list[float] = []
    for _, _, _, _, _, matched in parsed:
        cov = sum(idf[t] for t in matched) / total
        coverages.append(cov)
        best_cov = max(best_cov, cov)

    per_hit: dict[int, list[int]] = {}
    for k, item in enumerate(parsed):
        per_hit.setdefault(item[0], []).append(k)

    rows: list[_Row] = []
    for k, (index, position, text, raw, stems, matched) in enumerate(parsed):
        if not matched:
            continue  # no shared word
        if not claim and (text.endswith("?") or (restating and q_phrase in " ".join(raw))):
            continue  # a sentence that only asks the question again
        cov = coverages[k]
        siblings = per_hit[index]
        at = siblings.index(k)
        near = set(matched)
        for j in siblings[max(at - 1, 0) : at + 2]:
            near |= parsed[j][5]
        cov_near = sum(idf[t] for t in near) / total
        found = hit_found[index - 1]
        cov_hit = sum(idf[t] for t in found) / total
        missing = [t for t in terms if t not in found]
        missing_rarest = max((idf[t] for t in missing), default=0.0) / top_idf
        every = hit_stems[index - 1]
        missing_entities = (
            len([e for e in q_entities if e not in every]) / len(q_entities) if q_entities else 0.0
        )
        missing_numbers = float(any(e not in every for e in q_numbers))
        content = [s for w, s in zip(raw, stems, strict=True) if w not in STOPWORDS]
        novel = [s for s in content if s not in q_all]
        novelty = len(novel) / len(content) if content else 0.0
        restates = float(len(novel) <= 1)
        type_match = _type_match(q_type, text, raw, q_all, novel)
        s_neg = any(w in _NEGATIONS or w.endswith("n't") for w in raw)
        hit_score = scores[index - 1] / best_score if best_score > 0 else 0.0
        title = titles[index - 1]
        here = set(stems) | title
        window = here.union(*(parsed[j][4] for j in siblings[max(at - 1, 0) : at + 2]))
        titled = [t for t in terms if t in here]
        missing_here = [t for t in terms if t not in here]
        cov_titled = sum(idf[t] for t in titled) / total
        if q_entities:
            ent_here = len([e for e in q_entities if e not in here]) / len(q_entities)
            ent_near = len([e for e in q_entities if e not in window]) / len(q_entities)
        else:
            ent_here = ent_near = 0.0
        rarest_here = max((idf[t] for t in missing_here), default=0.0) / top_idf
        elsewhere = float(any(t in found for t in missing_here))
        sentence_stems = set(stems)
        untitled = (
            len([e for e in q_entities if e not in sentence_stems]) / len(q_entities)
            if q_entities
            else 0.0
        )
        antonym = float(
            any(
                w not in sentence_stems and _OPPOSITE.get(w, set()) & (sentence_stems - q_all)
                for w in q_all
            )
        )
        qualifier = float(any(w in _QUALIFIERS and w not in sentence_stems for w in q_all))
        s_numbers = {w for w in sentence_stems if w[:1].isdigit()}
        conflict = float(bool(q_numbers - s_numbers) and bool(s_numbers - q_all))
        row = [
            cov,
            cov_near,
            cov_hit,
            best_cov - cov,
            missing_rarest,
            len(missing) / len(terms),
            missing_entities,
            missing_numbers,
            min(_proximity(stems, matched), 1.0),
            novelty,
            restates,
            type_match,
            float(q_type == "when"),
            float(q_type == "number"),
            float(q_type == "who"),
            float(q_type == "where"),
            float(q_type == "why_how"),
            float(q_neg != s_neg),
            float(q_neg),
            1.0 / index,
            hit_score,
            margin,
            q_size,
            min(len(raw) / 50.0, 1.0),
            cov * type_match,
            cov * cov_hit,
            cov_titled,
            ent_here,
            ent_near,
            rarest_here,
            elsewhere,
            untitled,
            antonym,
            qualifier,
            conflict,
        ]
        rows.append(_Row(index, position, text, matched, cov, row))
    return rows


_AT = {name: i for i, name in enumerate(FEATURES)}


def _claim_support(row: Sequence[float]) -> float:
    """A claim's support by one sentence, from its feature row (``supports``)."""
    covered = max(row[_AT["coverage"]], 0.9 * row[_AT["coverage_near"]])
    covered = max(covered, 0.8 * row[_AT["coverage_titled"]])
    score = covered * (1.0 - row[_AT["entities_missing_near"]])
    if row[_AT["number_conflict"]]:
        score *= 0.5
    if row[_AT["antonym_in_sentence"]]:
        score *= 0.7
    if row[_AT["negation_mismatch"]]:
        score *= 0.6
    return min(max(score, 0.0), 1.0)


def _type_match(q_type: str, text: str, raw: list[str], q_all: set[str], novel: list[str]) -> float:
    """Whether the sentence holds something of the kind the question asks for."""
    fresh = [w for w in raw if stem(w) not in q_all]
    if q_type == "when":
        return float(any(_is_date(w) for w in fresh))
    if q_type == "number":
        return float(any(_is_number(w) for w in fresh))
    if q_type in ("who", "where"):
        names = _entities(_CODE_SPAN.sub(" ", text)) - q_all  # code ("-F") names no one
        return float(any(not n[:1].isdigit() for n in names))
    return float(bool(novel))
