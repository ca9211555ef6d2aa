"""An answer composed from the retrieved text itself: the default when no LLM is configured.

``ExtractiveChatModel`` ranks every quotable sentence of ``Prompt.hits`` with the support
scorer (``ragtide.support``: a learned combination of lexical features — coverage of the
question's words by the sentence and its paragraph, names and numbers of the question
missing there, whether the sentence has what the question asks for, retrieval rank and
margin) and decides whether to answer at all: when the scorer's answerability of the best
sentence is below ``min_answerability``, the reply says plainly that the documents do not
contain the answer, and cites nothing.

Otherwise it answers with the best sentence, plus at most ``max_sentences`` more that are
nearly as well supported and cover query words it does not, each group of sentences
followed by ``[n]``, the 1-based position of its hit in ``Prompt.hits`` (the core renumbers
the markers [1]..[k] in order of appearance). Headings, code blocks and sentences that only
restate the question are never quoted; list markers are dropped. ``stream()`` yields the
answer in word-sized pieces.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from pydantic import BaseModel, ConfigDict, Field

from ragtide.builtin._answerability import default_scorer
from ragtide.support import Candidate, SupportScorer
from ragtide.text import stem, words
from ragtide.types import IntentKind, Prompt, Reply

__all__ = ["NOT_FOUND", "ExtractiveChatModel"]

NOT_FOUND = "I could not find this in the documents."
_CANNED: dict[IntentKind, str] = {
    "greeting": "Hello! Ask me anything about your documents.",
    "thanks": "You're welcome! Is there anything else I can help with?",
    "farewell": "Goodbye! Come back any time.",
}
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
        min_answerability: float | None = Field(
            default=None,
            ge=0.0,
            le=1.0,
            description="Answer only when the support scorer's answerability of the best "
            "sentence (a probability that answering is right) reaches this; lower declines "
            "less and answers more. Default: the shipped model's threshold, chosen on its "
            "training articles (see README, Benchmarks).",
        )
        min_coverage: float = Field(
            default=0.0,
            ge=0.0,
            le=1.0,
            description="Also require this IDF-weighted share of the query's content words in "
            "the best sentence (0: no lexical floor beyond the scorer).",
        )
        relative_threshold: float = Field(
            default=0.85,
            ge=0.0,
            le=1.0,
            description="A further sentence must have at least this share of the best one's "
            "support.",
        )
        max_sentence_words: int = Field(
            default=60,
            ge=10,
            description="Longer sentences are cut to the window around their matched words.",
        )
        not_found_text: str = NOT_FOUND

    def __init__(
        self, config: Config | None = None, *, scorer: SupportScorer | None = None
    ) -> None:
        self._config = config or self.Config()
        self._scorer = scorer or default_scorer()

    @property
    def model_id(self) -> str:
        return "extractive"

    async def generate(self, prompt: Prompt) -> Reply:
        return self.compose(prompt)

    async def stream(self, prompt: Prompt) -> AsyncIterator[str]:
        """The answer in word-sized pieces (each word with the space after it)."""
        for piece in _PIECE.findall(self.compose(prompt).text):
            yield piece

    def compose(self, prompt: Prompt) -> Reply:
        """The synchronous core of ``generate``."""
        return self.explain(prompt)[0]

    def explain(self, prompt: Prompt) -> tuple[Reply, float]:
        """The reply and the answerability it was decided on (0.0 when nothing matched).

        The reply is composed even below the threshold only to report it: a declined
        reply is ``not_found_text`` with no citations.
        """
        if prompt.intent.kind != "question":
            return Reply(_CANNED[prompt.intent.kind]), 1.0
        query = prompt.intent.query or prompt.message
        candidates = self._scorer.rank(query, prompt.hits)
        if not candidates:
            return Reply(self._config.not_found_text), 0.0
        answerability = self._scorer.answerability(candidates)
        threshold = self._config.min_answerability
        if threshold is None:
            threshold = self._scorer.model.threshold
        if answerability < threshold or candidates[0].coverage < self._config.min_coverage:
            return Reply(self._config.not_found_text), answerability
        chosen = _choose(candidates, self._config)
        terms = {stem(w) for w in words(query)}
        return _render(chosen, terms, self._config.max_sentence_words), answerability


def _choose(candidates: list[Candidate], config: ExtractiveChatModel.Config) -> list[Candidate]:
    """The best sentence, then up to ``max_sentences`` more that add query terms."""
    best = candidates[0]
    chosen, covered = [best], set(best.matched)
    for candidate in candidates[1:]:
        if len(chosen) > config.max_sentences:
            break
        if candidate.support < config.relative_threshold * best.support:
            break
        if candidate.matched - covered and candidate.text != best.text:
            chosen.append(candidate)
            covered |= candidate.matched
    return chosen


def _render(chosen: list[Candidate], terms: set[str], max_words: int) -> Reply:
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


def _crop(sentence: str, terms: set[str], max_words: int) -> str:
    """``sentence``, or the window of ``max_words`` words holding most query terms."""
    tokens = sentence.split()
    if len(tokens) <= max_words:
        return sentence
    hits = [any(stem(w) in terms for w in words(t)) for t in tokens]
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
