"""Collect a document's text blocks into sections under a heading stack (shared by parsers)."""

from __future__ import annotations

from ragtide.types import Section


class Outline:
    """Sections in reading order, built from a stream of headings and text blocks.

    The title is either given up front (front matter, ``<title>``, a DOCX Title paragraph)
    or taken from the first level-1 heading. A heading whose text equals the title is not
    repeated in the heading paths: the store indexes the title on its own.
    """

    def __init__(self, title: str | None = None) -> None:
        self.title = _clean(title) if title else None
        self._stack: list[tuple[int, str]] = []
        self._blocks: list[str] = []
        self._sections: list[Section] = []

    def heading(self, level: int, text: str) -> None:
        """Start a new section under a heading of ``level`` (1 is outermost)."""
        text = _clean(text)
        if not text:
            return
        self._flush()
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        if self.title is None and level == 1:
            self.title = text
            return
        if self.title is not None and text.casefold() == self.title.casefold():
            return
        self._stack.append((level, text))

    def text(self, block: str) -> None:
        """Add a paragraph, list or code block to the current section."""
        block = block.strip("\n")
        if block.strip():
            self._blocks.append(block.rstrip())

    def finish(self) -> tuple[Section, ...]:
        self._flush()
        return tuple(self._sections)

    def _flush(self) -> None:
        if self._blocks:
            headings = tuple(text for _, text in self._stack)
            self._sections.append(Section("\n\n".join(self._blocks), headings))
            self._blocks = []


def _clean(text: str) -> str:
    return " ".join(text.split())
