"""Small, dependency-free text helpers shared by chunking, intent and answering.

- ``words`` / ``content_words``: lower-cased word tokens (without stopwords).
- ``stem``: a light suffix folder ("owns", "owned" → "own") for matching, not display.
- ``split_sentences``: prose into sentences; lossless (every word of the text is in exactly
  one sentence), so chunking may rely on it. A boundary is never placed inside a code
  span (`` `...` ``), a URL, a decimal or version number, or after a common abbreviation
  or an initial.
- ``passage_sentences``: the sentences of a chunk that can be quoted as an answer, each
  with its kind: headings, fenced or indented code and table borders are set apart
  (never glued to the next sentence), list markers are dropped, table rows are joined
  into one readable line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

__all__ = [
    "STOPWORDS",
    "Sentence",
    "code_spans",
    "content_words",
    "passage_sentences",
    "split_sentences",
    "stem",
    "words",
]

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?")  # noqa: RUF001
# A sentence ends at . ! ? (plus closing quotes/brackets/backticks) followed by space and
# an uppercase letter, digit, opening quote/bracket or backtick.
_BOUNDARY = re.compile(r"(?<=[.!?])[\"'”’)\]`*_]*\s+(?=[\"'“‘(\[`*_]*[A-Z0-9`])")  # noqa: RUF001
_ABBREVIATIONS = frozenset(
    """e.g i.e etc vs al fig figs eq eqs no nos dr mr mrs ms prof st jr sr inc ltd co corp
    approx resp ref refs cf ca vol vols pp ch sec art dept est gen gov lt col sgt capt rev
    u.s u.k a.m p.m ph.d jan feb mar apr jun jul aug sep sept oct nov dec mt ft""".split()
)
# Spans inside which no sentence ends: inline code and URLs.
_PROTECTED = re.compile(r"`[^`\n]+`|\b[a-z][a-z0-9+.-]*://[^\s`]*[^\s`.,;:!?)\]\"']")
_CODE_SPAN = re.compile(r"`[^`\n]+`")
_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})")
_ITEM = re.compile(r"^[ \t]*(?:[-*+•]|\d{1,3}[.)])[ \t]+")
_HEADING = re.compile(r"^[ \t]*#{1,6}[ \t]+")
_TABLE_RULE = re.compile(r"^[ \t]*\|?[ \t]*:?-{2,}:?[ \t]*(?:\|[ \t]*:?-{2,}:?[ \t]*)*\|?[ \t]*$")
_ENDS = ".!?:;,\"'”’)]`"  # noqa: RUF001
_SUFFIXES = ("ation", "ion", "ment", "ness", "ity", "ing", "ed")

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

Kind = Literal["sentence", "item", "heading", "code"]


@dataclass(frozen=True, slots=True)
class Sentence:
    """One unit of a passage: ``kind`` says whether it may be quoted as an answer.

    ``sentence`` (prose) and ``item`` (a list item or table row, marker removed) may;
    ``heading`` and ``code`` may not. ``block`` numbers the paragraph it came from.
    """

    text: str
    kind: Kind
    block: int


def words(text: str) -> list[str]:
    """Lower-cased word tokens (each word found, then lower-cased). ASCII text is
    lower-cased whole first: that finds the same words (only A-Z change, to letters) in
    one call. Elsewhere lower-casing can change what is a word ("İ" becomes "i" and a
    combining dot; a final sigma depends on what follows), so each word is lower-cased."""
    if text.isascii():
        return _WORD.findall(text.lower())
    return [w.lower() for w in _WORD.findall(text)]


def count_words(text: str) -> int:
    """``len(words(text))``, without lower-casing anything."""
    return len(_WORD.findall(text))


def content_words(text: str) -> list[str]:
    """Lower-cased word tokens without stopwords."""
    return [w for w in words(text) if w not in STOPWORDS]


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
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


def code_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each inline code span (`` `...` ``) of ``text``."""
    return [m.span() for m in _CODE_SPAN.finditer(text)]


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences, keeping abbreviations like "e.g." and "Fig. 2" intact.

    Boundaries are found on a copy of ``text`` in which code spans and URLs
    are masked, so "`a. B`" or "http://x.org/A. B/c" do not end a sentence there.
    """
    text = text.strip()
    masked = _PROTECTED.sub(lambda m: "X" * len(m.group()), text)
    sentences: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(masked):
        head = text[start : match.start()]
        before = masked[start : match.start()].rstrip(".!?\"'”’)]`*_").rsplit(None, 1)  # noqa: RUF001
        last = before[-1].lower() if before else ""
        if last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha()):
            continue  # "e.g. Foo" or an initial ("J. Smith"): not a boundary
        closing = masked[match.start() : match.end()].rstrip()
        sentences.append(" ".join((head + closing).split()))
        start = match.start() + len(closing)
    sentences.append(" ".join(text[start:].split()))
    return [s for s in sentences if s]


def passage_sentences(text: str) -> list[Sentence]:
    """The sentences of a chunk's text, with headings, code and list markers set apart.

    Lines are read as Markdown-ish structure: a fenced block or a line indented by four
    spaces is ``code``; a ``#`` line, or a short line without closing punctuation standing
    alone in its paragraph and followed by more text, is a ``heading``; a list item or
    table row is an ``item`` (marker dropped, cells joined by "; "); other lines of a
    paragraph are joined and split into ``sentence``s. A sentence that is mostly inline
    code is ``code``.
    """
    lines = text.split("\n")
    blocks: list[tuple[Kind, list[str]]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            blocks.append(("sentence", []))  # a paragraph break
            i += 1
            continue
        fence = _FENCE.match(line)
        if fence:
            end = i + 1
            while end < len(lines) and not lines[end].strip().startswith(fence.group(1)):
                end += 1
            blocks.append(("code", lines[i : end + 1]))
            i = end + 1
            continue
        if line.startswith(("    ", "\t")) and (not blocks or not blocks[-1][1]):
            blocks.append(("code", [line]))
        elif _HEADING.match(line):
            blocks.append(("heading", [_HEADING.sub("", line).strip(" #")]))
        elif _TABLE_RULE.match(line):
            pass
        elif line.lstrip().startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            blocks.append(("item", ["; ".join(c for c in cells if c)]))
        elif _ITEM.match(line):
            blocks.append(("item", [_ITEM.sub("", line)]))
        elif blocks and blocks[-1][0] in ("sentence", "item") and blocks[-1][1]:
            blocks[-1][1].append(line)  # a continuation line
        else:
            blocks.append(("sentence", [line]))
        i += 1
    out: list[Sentence] = []
    solid = [b for b in blocks if b[1]]
    for number, (kind, block) in enumerate(solid):
        if kind in ("code", "heading"):
            out.append(Sentence("\n".join(block).strip(), kind, number))
            continue
        joined = " ".join(" ".join(block).split())
        if kind == "sentence" and _is_heading(joined) and number + 1 < len(solid):
            out.append(Sentence(joined, "heading", number))
            continue
        for sentence in split_sentences(joined):
            out.append(Sentence(sentence, "code" if _mostly_code(sentence) else kind, number))
    return out


def _is_heading(line: str) -> bool:
    return len(line.split()) <= 10 and line[-1] not in _ENDS and not line.endswith("`")


def _mostly_code(sentence: str) -> bool:
    """Most of the sentence's words are inside code spans (a command, not prose)."""
    code = sum(len(words(sentence[a:b])) for a, b in code_spans(sentence))
    return code > 0 and len(words(sentence)) - code < 3
