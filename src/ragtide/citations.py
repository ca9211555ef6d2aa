"""Citations of an answer: ``[n]`` markers renumbered [1]..[k] and the ``Citation``s.

A chat model cites ``[n]``, ``n`` being a hit's 1-based position in the prompt; the
answer shows ``[k]``, ``k`` numbering the cited hits in the order they first appear
(``Renumberer`` does it as a model streams; ``renumber_citations`` on a whole text), and
``citations_for`` gives each ``[k]`` its ``Citation``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ragtide.types import Citation, Hit

__all__ = ["Renumberer", "citations_for", "renumber_citations"]


def citations_for(hits: Sequence[Hit], cited: Sequence[int]) -> tuple[Citation, ...]:
    """The citations of a reply whose ``[k]`` markers were renumbered (``renumber_citations``).

    ``cited[k - 1]`` is the 1-based position in ``hits`` of the passage the answer cites
    as ``[k]``; the result's ``index`` is ``k``, so the citations are numbered [1]..[k]
    in the order they first appear in the answer, each naming its hit's document and
    chunk. ``score`` is the hit's retrieval score relative to the best retrieved hit's,
    in [0, 1] (1.0: the top hit; it ranks passages, it is not a probability).
    """
    top = max((h.score for h in hits), default=0.0)
    out = []
    for k, index in enumerate(dict.fromkeys(i for i in cited if 1 <= i <= len(hits)), start=1):
        hit = hits[index - 1]
        score = min(max(hit.score / top, 0.0), 1.0) if top > 0 else 0.0
        out.append(
            Citation(
                k,
                hit.chunk.document_id,
                hit.chunk.id,
                hit.chunk.title,
                hit.chunk.text,
                score,
            )
        )
    return tuple(out)


# "[2]", "[1, 3]": a marker of hit numbers, as chat models write them (ragtide.prompts).
_MARKER = re.compile(r"\[\s*(\d{1,4}(?:\s*[,;]\s*\d{1,4})*)\s*\]")
_OPEN_MARKER = re.compile(r"\[[\d\s,;]{0,40}$")  # what may still become a marker


class Renumberer:
    """Rewrites ``[n]`` (n: a hit's position in the prompt) as ``[k]``, k numbering the
    cited hits 1, 2, … in order of first appearance; ``cited[k - 1]`` is k's hit.

    Text is fed in pieces as a model streams it; a piece ending inside what may be a
    marker is held back until the marker closes (or cannot be one). Numbers outside
    ``1..n_hits`` are dropped from a marker; a marker with none left is kept as written.
    """

    def __init__(self, n_hits: int) -> None:
        self.n_hits = n_hits
        self.numbers: dict[int, int] = {}
        self.pending = ""

    @property
    def cited(self) -> tuple[int, ...]:
        return tuple(self.numbers)

    def feed(self, piece: str) -> str:
        text = self.pending + piece
        held = _OPEN_MARKER.search(text)
        cut = held.start() if held else len(text)
        self.pending = text[cut:]
        return _MARKER.sub(self._marker, text[:cut])

    def flush(self) -> str:
        text, self.pending = self.pending, ""
        return _MARKER.sub(self._marker, text)

    def _marker(self, match: re.Match[str]) -> str:
        found = [int(n) for n in re.findall(r"\d+", match.group(1))]
        valid = [n for n in dict.fromkeys(found) if 1 <= n <= self.n_hits]
        if not valid:
            return match.group()
        for n in valid:
            self.numbers.setdefault(n, len(self.numbers) + 1)
        return "[" + ", ".join(str(k) for k in sorted(self.numbers[n] for n in valid)) + "]"


def renumber_citations(text: str, n_hits: int) -> tuple[str, tuple[int, ...]]:
    """``text`` with its ``[n]`` markers numbered [1]..[k] in order of appearance, and
    the hit positions they stand for (``cited[k - 1]`` for ``[k]``)."""
    renumberer = Renumberer(n_hits)
    out = renumberer.feed(text) + renumberer.flush()
    return out, renumberer.cited
