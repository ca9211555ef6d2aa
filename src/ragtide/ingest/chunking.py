"""Split a parsed document into heading-aware, sentence-aligned, overlapping chunks.

How a document becomes chunks:

1. **Units.** Each section's text is cut into units that are never split: sentences
   (``ragtide.text.split_sentences``) within paragraphs, list items and table rows, and
   whole fenced code blocks. Only a unit longer than ``max_words`` is cut: a sentence
   between words, a code block between lines (every piece keeps its fences).
2. **Groups.** A chunk never spans two sections, with one exception: a tiny section
   (under ``max_words // 4`` words, such as a one-line "What's next") is merged with an
   adjacent section that is its sibling, parent or child, so it does not become a chunk
   of its own. Inside a merged chunk each sub-section's heading is kept as a line of
   text, and the chunk's ``headings`` is the heading path its sections share.
3. **Packing.** Units fill a chunk up to ``max_words``; the next chunk of the same group
   starts with whole trailing units of the previous one, at most ``overlap_words`` words.

Words are counted as ``ragtide.text.words`` finds them (``count_words``). Chunk ids are
``f"{document_id}#{ordinal}"`` with ordinals 0, 1, 2, ... The title is never put into the
text: the store indexes it separately (``Chunk.title``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from ragtide.text import count_words, split_sentences
from ragtide.types import Chunk, ParsedDocument, Section

__all__ = ["chunk_document"]

_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})")
_PUNCTUATION_TOKEN = re.compile(r"""\s*[.!?"'\u201d\u2019)\]]+(?=\s|$)""")
_ITEM = re.compile(r"^[ \t]*(?:[-*+•]|\d{1,3}[.)]|\|)[ \t]")


@dataclass(frozen=True, slots=True)
class _Unit:
    text: str
    words: int
    glue: str  # what joins it to the unit before it: " " (same paragraph), "\n" or "\n\n"
    headings: tuple[str, ...]


@dataclass(slots=True)
class _Member:
    headings: tuple[str, ...]
    units: list[_Unit]
    words: int


def chunk_document(
    doc: ParsedDocument, document_id: str, *, max_words: int = 200, overlap_words: int = 40
) -> list[Chunk]:
    """Split ``doc`` into chunks of at most ``max_words`` words (see the module docstring)."""
    if max_words < 1:
        raise ValueError(f"max_words must be at least 1, got {max_words}")
    if not 0 <= overlap_words < max_words:
        raise ValueError(f"overlap_words must be in [0, max_words), got {overlap_words}")
    chunks: list[Chunk] = []
    for units in _groups(doc.sections, max_words):
        for piece in _pack(units, max_words, overlap_words):
            ordinal = len(chunks)
            chunks.append(
                Chunk(
                    id=f"{document_id}#{ordinal}",
                    document_id=document_id,
                    ordinal=ordinal,
                    text=piece[0].text + "".join(u.glue + u.text for u in piece[1:]),
                    title=doc.title,
                    headings=_common_prefix(u.headings for u in piece),
                    metadata=dict(doc.metadata),
                )
            )
    return chunks


# --- groups of sections ------------------------------------------------------------------


def _groups(sections: Iterable[Section], max_words: int) -> Iterator[list[_Unit]]:
    tiny = max(1, max_words // 4)
    group: list[_Member] = []
    for section in sections:
        units = list(_units(section.text, section.headings, max_words))
        member = _Member(section.headings, units, sum(u.words for u in units))
        if not member.words:
            continue
        if group and _can_merge(group, member, tiny):
            group.append(member)
            continue
        if group:
            yield _attach_wordless(_flatten(group))
        group = [member]
    if group:
        yield _attach_wordless(_flatten(group))


def _can_merge(group: list[_Member], member: _Member, tiny: int) -> bool:
    """Siblings or parent and child (the shared path is at most one level above either),
    where one side is tiny."""
    prefix = _common_prefix(m.headings for m in group)
    shared = _common_prefix((prefix, member.headings))
    if len(shared) < len(prefix) - 1 or len(shared) < len(member.headings) - 1:
        return False
    return member.words < tiny or sum(m.words for m in group) < tiny


def _flatten(group: list[_Member]) -> list[_Unit]:
    if len(group) == 1:
        return group[0].units
    prefix = _common_prefix(m.headings for m in group)
    units: list[_Unit] = []
    for member in group:
        label = _label(member.headings, prefix)
        if label:
            units.append(_Unit(label, count_words(label), "\n\n", member.headings))
        units.extend(member.units)
    return units


def _attach_wordless(units: list[_Unit]) -> list[_Unit]:
    """Fold units without words (``---``, a ``{}`` code block) into a neighbour."""
    out: list[_Unit] = []
    leading: list[_Unit] = []
    for unit in units:
        if unit.words == 0 and out:
            last = out[-1]
            out[-1] = _Unit(last.text + unit.glue + unit.text, last.words, last.glue, last.headings)
        elif unit.words == 0:
            leading.append(unit)
        else:
            if leading:
                text = leading[0].text + "".join(u.glue + u.text for u in leading[1:])
                unit = _Unit(
                    text + unit.glue + unit.text, unit.words, leading[0].glue, unit.headings
                )
                leading = []
            out.append(unit)
    return out


def _label(headings: tuple[str, ...], prefix: tuple[str, ...]) -> str:
    return " > ".join(headings[len(prefix) :])


def _common_prefix(paths: Iterable[tuple[str, ...]]) -> tuple[str, ...]:
    iterator = iter(paths)
    prefix = next(iterator, ())
    for path in iterator:
        size = 0
        for a, b in zip(prefix, path, strict=False):
            if a != b:
                break
            size += 1
        prefix = prefix[:size]
    return prefix


# --- units ---------------------------------------------------------------------------------


def _units(text: str, headings: tuple[str, ...], max_words: int) -> Iterator[_Unit]:
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        fence = _fence(line)
        if fence:
            end = i + 1
            while end < len(lines) and not _closes(lines[end], fence):
                end += 1
            block = lines[i : end + 1]
            i = end + 1
            for piece in _split_code(block, fence, max_words):
                yield _Unit(piece, count_words(piece), "\n\n", headings)
            continue
        start = i
        while i < len(lines) and lines[i].strip() and not _fence(lines[i]):
            i += 1
        for n, item in enumerate(_items(lines[start:i])):
            glue = "\n\n" if n == 0 else "\n"
            for sentence in _sentences(item):
                count = count_words(sentence)
                if count <= max_words:
                    yield _Unit(sentence, count, glue, headings)
                else:
                    for piece in _split_words(sentence, max_words):
                        yield _Unit(piece, count_words(piece), glue, headings)
                        glue = " "
                glue = " "


def _sentences(text: str) -> list[str]:
    """``split_sentences``, guarded: it raises IndexError on text that opens with a token of
    closing punctuation only ("...", "?"), so such tokens are held back and put in front of
    the first sentence."""
    lead: list[str] = []
    while match := _PUNCTUATION_TOKEN.match(text):
        lead.append(match.group().strip())
        text = text[match.end() :]
    sentences = split_sentences(text)
    if lead:
        sentences[:1] = [" ".join([*lead, *sentences[:1]])]
    return sentences


def _fence(line: str) -> str:
    match = _FENCE.match(line)
    if not match or (match.group(1)[0] == "`" and "`" in line[match.end() :]):
        return ""
    return match.group(1)


def _closes(line: str, fence: str) -> bool:
    stripped = line.strip()
    return stripped.startswith(fence) and not stripped.lstrip(fence[0])


def _items(lines: Sequence[str]) -> Iterator[str]:
    """Split a paragraph into list items and table rows (a plain paragraph is one item)."""
    item: list[str] = []
    for line in lines:
        if item and _ITEM.match(line):
            yield "\n".join(item)
            item = []
        item.append(line)
    if item:
        yield "\n".join(item)


def _split_words(text: str, limit: int) -> list[str]:
    """Cut an over-long sentence between whitespace-separated tokens."""
    pieces: list[str] = []
    tokens: list[str] = []
    count = 0
    for token in text.split():
        size = count_words(token)
        if tokens and count + size > limit:
            pieces.append(" ".join(tokens))
            tokens, count = [], 0
        tokens.append(token)
        count += size
    if tokens:
        pieces.append(" ".join(tokens))
    return pieces


def _split_code(block: list[str], fence: str, max_words: int) -> list[str]:
    """Keep a code block whole if it fits; otherwise cut it between lines, re-fenced."""
    text = "\n".join(block).strip("\n")
    if count_words(text) <= max_words:
        return [text]
    opener = block[0].strip()
    closed = len(block) > 1 and _closes(block[-1], fence)
    body = block[1:-1] if closed else block[1:]
    budget = max(1, max_words - count_words(opener))
    pieces: list[str] = []
    current: list[str] = []
    count = 0
    for line in body:
        for part in [line] if count_words(line) <= budget else _split_words(line, budget):
            size = count_words(part)
            if current and count + size > budget:
                pieces.append("\n".join([opener, *current, fence]))
                current, count = [], 0
            current.append(part)
            count += size
    if current:
        pieces.append("\n".join([opener, *current, fence]))
    return pieces


# --- packing -------------------------------------------------------------------------------


def _pack(units: list[_Unit], max_words: int, overlap_words: int) -> Iterator[list[_Unit]]:
    current: list[_Unit] = []
    count = 0
    fresh = False  # does ``current`` hold anything beyond the overlap?
    for unit in units:
        if fresh and count + unit.words > max_words:
            yield current
            current = _overlap(current, overlap_words, max_words - unit.words)
            count = sum(u.words for u in current)
        current.append(unit)
        count += unit.words
        fresh = True
    if fresh:
        yield current


def _overlap(units: list[_Unit], budget: int, room: int) -> list[_Unit]:
    """The longest run of whole trailing units within ``budget`` words and ``room``."""
    limit = min(budget, room)
    taken = 0
    start = len(units)
    while start > 0 and taken + units[start - 1].words <= limit:
        start -= 1
        taken += units[start].words
    return units[start:]
