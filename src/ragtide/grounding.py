"""Grounded answers: check what a chat model wrote against what was retrieved.

``ground(text, hits, scorer, ...)`` takes a model's answer as written (its ``[n]``
markers numbering ``hits`` 1..n, before ``chat.renumber_citations``) and:

1. drops every number of a marker that names no hit (``[7]`` of five hits), counting them;
2. splits the answer into sentences (markers written after a sentence's full stop belong
   to it) and scores each against the hits with the one support scorer
   (``SupportScorer.supports``): the sentence's own cited hits first; when none of them
   supports it, the best other hit;
3. attaches the best hit's citation to a supported sentence that cited nothing (or only
   hits that do not support it);
4. applies the policy to an answer that is not supported (some checkable sentence is
   not): ``annotate`` keeps the text and reports, ``strip`` drops the unsupported
   sentences (declining when nothing supported is left), ``decline`` replaces the answer
   with ``decline_text``.

A sentence with fewer than two content words ("Sure!", "1.") states nothing to check: it is neither
supported nor unsupported and is never stripped. ``Grounded.positions`` maps each
sentence's citations to hit positions; ``numbered`` turns them into the answer's final
citation numbers once the text has been renumbered.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from ragtide.support import SupportScorer, query_terms
from ragtide.types import Grounding, GroundingPolicy, Hit, SentenceSupport

__all__ = ["Grounded", "ground", "numbered", "sentence_spans"]

_MARKER = re.compile(r"\[\s*(\d{1,4}(?:\s*[,;]\s*\d{1,4})*)\s*\]")
_MARKERS = r"(?:[ \t]*\[\s*\d{1,4}(?:\s*[,;]\s*\d{1,4})*\s*\])*"
# A sentence ends at . ! ? (closing quotes and brackets, then any markers, stay with it)
# before whitespace or the end, or at a line break.
_END = re.compile(r"[.!?]+[\"'\u201d\u2019)]*" + _MARKERS + r"(?=\s|$)|\n")
_LIST_MARKER = re.compile(r"^\s*(?:[-*+\u2022]|\d{1,3}[.)]|[a-zA-Z][.)])\s*$")
_TAIL = re.compile(r"[.!?:;,]*[\"'\u201d\u2019)]*\s*$")


@dataclass(frozen=True, slots=True)
class Grounded:
    """The answer after verification: its text (markers still hit positions), the
    report, and per sentence of the report the hit positions it cites."""

    text: str
    grounding: Grounding
    positions: tuple[tuple[int, ...], ...]
    attached: tuple[tuple[int, ...], ...]


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of ``text``, in order; whitespace between them is
    left out. A marker after the full stop (``done. [2]``) belongs to its sentence; a
    stop followed by a lowercase word ends nothing (``e.g. pods``, ``such as "why?" is``)."""
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _END.finditer(text):
        end = match.start() if match.group() == "\n" else match.end()
        piece = text[start:end]
        if match.group() != "\n":
            following = text[match.end() :].lstrip()[:1]
            if _LIST_MARKER.match(piece) or following.islower():
                continue  # "1. Pods …", "e.g. pods", 'such as "why?" are': not a boundary
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            spans.append((start + lead, start + len(piece.rstrip())))
        start = match.end()
    rest = text[start:]
    if rest.strip():
        lead = len(rest) - len(rest.lstrip())
        spans.append((start + lead, start + len(rest.rstrip())))
    return spans


def _clean_markers(sentence: str, n_hits: int) -> tuple[str, list[int], int]:
    """The sentence without invalid numbers in its markers, its valid cited positions
    (in order, unique) and how many invalid numbers were dropped."""
    cited: dict[int, None] = {}
    dropped = 0

    def fix(match: re.Match[str]) -> str:
        nonlocal dropped
        numbers = [int(n) for n in re.findall(r"\d+", match.group(1))]
        valid = [n for n in numbers if 1 <= n <= n_hits]
        dropped += len(numbers) - len(valid)
        for n in valid:
            cited.setdefault(n)
        if not valid:
            return "\x00"  # removed below, with the space before it
        if len(valid) == len(numbers):
            return match.group()
        return "[" + ", ".join(str(n) for n in dict.fromkeys(valid)) + "]"

    out = _MARKER.sub(fix, sentence)
    out = re.sub(r"[ \t]*\x00", "", out)
    return out, list(cited), dropped


def _claim(sentence: str) -> str:
    text = _MARKER.sub(" ", sentence)
    text = re.sub(r"^\s*(?:[-*+\u2022]|\d{1,3}[.)])\s+", "", text)
    return " ".join(text.replace("**", "").split())


def _attach(sentence: str, position: int) -> str:
    """``sentence`` citing ``position`` too: added to a marker it ends with, or as
    `` [n]`` before its closing punctuation."""
    markers = list(_MARKER.finditer(sentence))
    if markers and not sentence[markers[-1].end() :].strip(" \t.!?:;,\"'\u201d\u2019)"):
        last = markers[-1]
        inner = last.group(1).strip()
        return f"{sentence[: last.start()]}[{inner}, {position}]{sentence[last.end() :]}"
    tail = _TAIL.search(sentence)
    cut = tail.start() if tail else len(sentence)
    return f"{sentence[:cut]} [{position}]{sentence[cut:]}"


def ground(
    text: str,
    hits: Sequence[Hit],
    scorer: SupportScorer,
    *,
    policy: GroundingPolicy = "annotate",
    threshold: float = 0.5,
    decline_text: str = "I could not find this in the documents.",
) -> Grounded:
    """Verify ``text`` (markers numbering ``hits``) and apply ``policy``."""
    spans = sentence_spans(text)
    n = len(hits)
    sentences: list[str] = []
    reports: list[SentenceSupport] = []
    positions: list[tuple[int, ...]] = []
    attached_all: list[tuple[int, ...]] = []
    dropped = 0
    for start, end in spans:
        sentence, cited, lost = _clean_markers(text[start:end], n)
        dropped += lost
        claim = _claim(sentence)
        attached: tuple[int, ...] = ()
        if len(query_terms(claim)) < 2:  # "Sure!", "1.": nothing to check
            report = SentenceSupport(claim, None, 0.0)
        else:
            scores = scorer.supports(claim, hits) if hits else []
            support = max((scores[i - 1] for i in cited), default=0.0)
            if support < threshold and scores:
                best = max(range(n), key=lambda i: scores[i])
                if scores[best] >= threshold:
                    attached = (best + 1,)
                    sentence = _attach(sentence, best + 1)
                    cited.append(best + 1)
                support = max(support, scores[best])
            report = SentenceSupport(claim, support >= threshold, round(support, 6))
        sentences.append(sentence)
        reports.append(report)
        positions.append(tuple(cited))
        attached_all.append(attached)

    checked = [r for r in reports if r.supported is not None]
    supported = bool(checked) and all(r.supported for r in checked)
    action: Literal["none", "stripped", "declined"] = "none"
    keep = list(range(len(sentences)))
    if not supported and policy == "strip":
        keep = [i for i, r in enumerate(reports) if r.supported is not False]
        action = "stripped" if any(reports[i].supported for i in keep) else "declined"
    elif not supported and policy == "decline":
        action = "declined"
    if action == "declined":
        out = decline_text
    elif action == "stripped":
        out = _join(text, spans, sentences, keep)
    else:
        out = _join(text, spans, sentences, keep) if spans else text
    grounding = Grounding(
        supported=supported,
        policy=policy,
        action=action,
        threshold=threshold,
        sentences=tuple(reports),
        dropped_citations=dropped,
        attached_citations=sum(len(a) for a in attached_all),
    )
    return Grounded(out, grounding, tuple(positions), tuple(attached_all))


def _join(text: str, spans: list[tuple[int, int]], sentences: list[str], keep: list[int]) -> str:
    """The kept sentences with the whitespace that preceded each in ``text``."""
    out: list[str] = []
    for k, i in enumerate(keep):
        if k:
            gap = text[spans[i - 1][1] : spans[i][0]] if i else " "
            out.append(gap if gap.strip() == "" and gap else " ")
        out.append(sentences[i])
    head = text[: spans[0][0]] if spans and keep and keep[0] == 0 else ""
    tail = text[spans[-1][1] :] if spans and keep and keep[-1] == len(spans) - 1 else ""
    return head + "".join(out) + tail


def numbered(grounded: Grounded, cited: Sequence[int], declined: bool) -> Grounding:
    """The report with each sentence's hit positions turned into the answer's citation
    numbers (``cited[k - 1]`` is the position ``[k]`` stands for); a declined answer
    cites nothing, so its sentences carry no numbers."""
    if declined:
        return grounded.grounding
    number = {position: k for k, position in enumerate(cited, start=1)}
    sentences = tuple(
        replace(
            report,
            citations=tuple(number[p] for p in positions if p in number),
            attached=tuple(number[p] for p in attached if p in number),
        )
        for report, positions, attached in zip(
            grounded.grounding.sentences, grounded.positions, grounded.attached, strict=True
        )
    )
    return replace(grounded.grounding, sentences=sentences)
