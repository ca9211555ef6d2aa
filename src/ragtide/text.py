"""Small, dependency-free text helpers shared by chunking, intent and answering."""

from __future__ import annotations

import re

__all__ = ["STOPWORDS", "content_words", "split_sentences", "words"]

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?")  # noqa: RUF001
# A sentence ends at . ! ? (plus closing quotes/brackets) followed by space and an
# uppercase letter, digit or opening quote; common abbreviations do not end one.
_BOUNDARY = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9])")  # noqa: RUF001
_ABBREVIATIONS = frozenset(
    "e.g i.e etc vs al fig figs eq no dr mr mrs ms prof st jr sr inc ltd co approx resp ref".split()
)

STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself
    yourselves""".split()
)


def words(text: str) -> list[str]:
    """Lower-cased word tokens."""
    return [w.lower() for w in _WORD.findall(text)]


def content_words(text: str) -> list[str]:
    """Lower-cased word tokens without stopwords."""
    return [w for w in words(text) if w not in STOPWORDS]


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences, keeping abbreviations like "e.g." and "Fig. 2" intact."""
    sentences: list[str] = []
    pending = ""
    for piece in _BOUNDARY.split(text.strip()):
        pending = f"{pending} {piece}" if pending else piece
        words_so_far = pending.rstrip(".!?\"'”’)]").rsplit(None, 1)  # noqa: RUF001
        last = words_so_far[-1].lower() if words_so_far else ""
        if last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha()):
            continue  # "e.g. Foo" or an initial ("J. Smith"): not a boundary
        sentences.append(" ".join(pending.split()))
        pending = ""
    if pending:
        sentences.append(" ".join(pending.split()))
    return [s for s in sentences if s]
