"""An answer composed from the retrieved text itself: the default when no LLM is configured.

``ExtractiveChatModel`` scores every sentence of ``Prompt.hits`` against the query and
answers with the best one, plus at most a few that cover query terms it does not, each
group of sentences followed by the ``[n]`` of the hit it came from. A sentence scores by

- the IDF-weighted share of the query's content words it contains, with IDF computed
  over the candidate sentences and words folded by a light stemmer (plurals, suffixes);
- how close together its matched words are;
- how much of the query its whole hit covers (questions paraphrase the neighbourhood);
- the hit's rank and retrieval score.

When the best sentence covers too little of the query, the reply says plainly that the
documents do not contain the answer, and cites nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field

from ragtide.text import STOPWORDS, split_sentences, words
from ragtide.types import Hit, IntentKind, Prompt, Reply

__all__ = ["NOT_FOUND", "ExtractiveChatModel"]

NOT_FOUND = "I could not find this in the documents."
_CANNED: dict[IntentKind, str] = {
    "greeting": "Hello! Ask me anything about your documents.",
    "thanks": "You're welcome! Is there anything else I can help with?",
    "farewell": "Goodbye! Come back any time.",
}
# Question words that rarely appear in the sentence that answers them.
_QUESTION_NOISE = frozenset(
    """name named called many much kind type sort happen happened mean means
    give list term describe explain tell example""".split()
)
_SUFFIXES = ("ation", "ion", "ment", "ness", "ity", "ing", "ed")
_PIECE = re.compile(r"\S+\s*|\s+")
_END = re.compile(r"[.!?:;,]*[\"'\u201d\u2019)\]]*$")


class ExtractiveChatModel:
    """Answers with the best-supported sentences of the hits, citing them as ``[n]``."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

        max_sentences: int = Field(
            default=2,
            ge=0,
            le=10,
            description="How many sentences may follow the best one (0: the best one only).",
        )
        min_coverage: float = Field(
            default=0.2,
            ge=0.0,
            le=1.0,
            description="IDF-weighted share of the query's content words the best sentence "
            "must contain; below it the reply says the documents lack the answer.",
        )
        relative_threshold: float = Field(
            default=0.85,
            ge=0.0,
            le=1.0,
            description="A further sentence must score at least this share of the best one.",
        )
        max_sentence_words: int = Field(
            default=60,
            ge=10,
            description="Longer sentences are cut to the window around their matched words.",
        )
        proximity_weight: float = Field(default=0.15, ge=0.0)
        hit_weight: float = Field(default=0.25, ge=0.0)
        rank_weight: float = Field(default=0.05, ge=0.0)
        not_found_text: str = NOT_FOUND

    def __init__(self, config: Config | None = None) -> None:
        self._config = config or self.Config()

    @property
    def model_id(self) -> str:
        return "extractive"

    async def generate(self, prompt: Prompt) -> Reply:
        return self.compose(prompt)

    async def stream(self, prompt: Prompt) -> AsyncIterator[str]:
        for piece in _PIECE.findall(self.compose(prompt).text):
            yield piece

    def compose(self, prompt: Prompt) -> Reply:
        """The synchronous core of ``generate``."""
        if prompt.intent.kind != "question":
            return Reply(_CANNED[prompt.intent.kind])
        terms = _query_terms(prompt.intent.query or prompt.message)
        candidates = _score(terms, prompt.hits, self._config)
        if not candidates or candidates[0].coverage < self._config.min_coverage:
            return Reply(self._config.not_found_text)
        chosen = _choose(candidates, terms, self._config)
        return _render(chosen, terms, self._config.max_sentence_words)


@dataclass(slots=True)
class _Sentence:
    hit: int  # 1-based index into Prompt.hits
    position: int  # index of the sentence within its hit
    text: str
    matched: frozenset[str]
    coverage: float
    score: float


def _query_terms(query: str) -> dict[str, None]:
    """The query's distinct content-word stems, in order."""
    return dict.fromkeys(
        _stem(w) for w in words(query) if w not in STOPWORDS and w not in _QUESTION_NOISE
    )


def _score(
    terms: dict[str, None], hits: Sequence[Hit], config: ExtractiveChatModel.Config
) -> list[_Sentence]:
    """Every sentence of ``hits`` that matches a query term, best first."""
    if not terms or not hits:
        return []
    wanted = terms.keys()
    # (hit, position, text, content-word stems, matched terms) per sentence
    parsed: list[tuple[int, int, str, list[str], frozenset[str]]] = []
    hit_terms: list[set[str]] = []
    df = dict.fromkeys(terms, 0)
    for index, hit in enumerate(hits, start=1):
        found = {_stem(w) for w in words(hit.chunk.title)} & wanted
        for position, sentence in enumerate(split_sentences(hit.chunk.text)):
            stems = [_stem(w) for w in words(sentence) if w not in STOPWORDS]
            matched = frozenset(wanted & set(stems))
            for term in matched:
                df[term] += 1
            found |= matched
            parsed.append((index, position, sentence, stems, matched))
        hit_terms.append(found)
    n = len(parsed)
    idf = {t: math.log(1.0 + (n - d + 0.5) / (d + 0.5)) for t, d in df.items()}
    total = sum(idf.values())
    scores = [hit.score for hit in hits]
    low, span = min(scores), max(scores) - min(scores)
    prior = [
        config.hit_weight * sum(idf[t] for t in found) / total
        + config.rank_weight * (0.5 / index + 0.5 * ((score - low) / span if span > 0 else 1.0))
        for index, (found, score) in enumerate(zip(hit_terms, scores, strict=True), start=1)
    ]
    candidates: list[_Sentence] = []
    for index, position, sentence, stems, matched in parsed:
        if matched:
            coverage = sum(idf[t] for t in matched) / total
            score = (
                coverage + config.proximity_weight * _proximity(stems, matched) + prior[index - 1]
            )
            candidates.append(_Sentence(index, position, sentence, matched, coverage, score))
    candidates.sort(key=lambda s: s.score, reverse=True)
    return candidates


def _proximity(stems: list[str], matched: frozenset[str]) -> float:
    """How tightly the matched terms cluster: distinct terms over the shortest window."""
    if len(matched) < 2:
        return 0.0
    need, counts, have, left = len(matched), dict.fromkeys(matched, 0), 0, 0
    best = len(stems)
    for right, stem in enumerate(stems):
        if stem in counts:
            counts[stem] += 1
            have += counts[stem] == 1
        while have == need:
            best = min(best, right - left + 1)
            if stems[left] in counts:
                counts[stems[left]] -= 1
                have -= counts[stems[left]] == 0
            left += 1
    return need / best


def _choose(
    candidates: list[_Sentence], terms: dict[str, None], config: ExtractiveChatModel.Config
) -> list[_Sentence]:
    """The best sentence, then up to ``max_sentences`` more that add query terms."""
    best = candidates[0]
    chosen, covered = [best], set(best.matched)
    for candidate in candidates[1:]:
        if len(chosen) > config.max_sentences:
            break
        if candidate.score < config.relative_threshold * best.score:
            break
        if candidate.matched - covered and candidate.text != best.text:
            chosen.append(candidate)
            covered |= candidate.matched
    return chosen


def _render(chosen: list[_Sentence], terms: dict[str, None], max_words: int) -> Reply:
    """Sentences grouped by hit (the best one's hit first), each group cited once."""
    hits = list(dict.fromkeys(s.hit for s in chosen))
    parts = []
    for index in hits:
        group = sorted((s for s in chosen if s.hit == index), key=lambda s: s.position)
        text = " ".join(_crop(s.text, terms, max_words) for s in group)
        parts.append(_cite(text, index))
    return Reply(" ".join(parts), cited=tuple(hits))


def _cite(text: str, index: int) -> str:
    """``text`` with `` [index]`` before its closing punctuation."""
    end = _END.search(text)
    cut = end.start() if end else len(text)
    return f"{text[:cut]} [{index}]{text[cut:]}"


def _crop(sentence: str, terms: dict[str, None], max_words: int) -> str:
    """``sentence``, or the window of ``max_words`` words holding most query terms."""
    tokens = sentence.split()
    if len(tokens) <= max_words:
        return sentence
    hits = [any(_stem(w) in terms for w in words(t)) for t in tokens]
    window = sum(hits[:max_words])
    best, start = window, 0
    for i in range(max_words, len(tokens)):
        window += hits[i] - hits[i - max_words]
        if window > best:
            best, start = window, i - max_words + 1
    text = " ".join(tokens[start : start + max_words])
    head = "… " if start > 0 else ""
    tail = " …" if start + max_words < len(tokens) else ""
    return head + text + tail


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    """Fold plurals, possessives and common suffixes: "owns" and "owned" both become "own"."""
    if word.endswith(("'s", "\u2019s")):
        word = word[:-2]
    if len(word) <= 3:
        return word
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith(("sses", "xes", "zes", "ches", "shes")):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsz":
                word = word[:-1]  # "running" -> "run"
            break
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    return word
