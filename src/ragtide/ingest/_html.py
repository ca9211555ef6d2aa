"""HTML to sections with the standard library's tolerant ``html.parser``.

Headings h1-h6 open sections; script, style, navigation, page header and footer are
dropped; ``<pre>`` becomes a fenced block so the chunker keeps it whole; list items and
table rows stay one per line. Entities are decoded by the parser itself.
"""

from __future__ import annotations

from html.parser import HTMLParser

from ragtide.ingest._markdown import split_front_matter
from ragtide.ingest._outline import Outline
from ragtide.types import Section

__all__ = ["parse_html"]

_SKIP = frozenset(
    {"script", "style", "noscript", "template", "nav", "header", "footer", "svg", "canvas"}
)
_HEADINGS = {f"h{level}": level for level in range(1, 7)}
_BLOCKS = frozenset(
    """address article aside blockquote body br caption dd details dialog div dl dt fieldset
    figcaption figure form hr html li main ol p section summary table tbody tfoot thead tr
    ul""".split()
)


def parse_html(text: str) -> tuple[str | None, tuple[Section, ...]]:
    """Return the title (front matter, ``<title>`` or first ``<h1>``) and the sections."""
    front, body = split_front_matter(text)
    parser = _Parser(Outline(front.title))
    if front.description:
        parser.outline.text(front.description)
    parser.feed(body)
    parser.close()
    return parser.outline.title, parser.finish()


class _Parser(HTMLParser):
    def __init__(self, outline: Outline) -> None:
        super().__init__(convert_charrefs=True)
        self.outline = outline
        self._skip = 0
        self._pre = 0
        self._in_title = False
        self._title: list[str] = []
        self._heading: tuple[int, list[str]] | None = None
        self._words: list[str] = []
        self._code: list[str] = []
        self._bullet = ""
        self._rows: list[str] = []  # consecutive list items or table rows: one block

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip += 1
        elif self._skip:
            return
        elif tag == "title":
            self._in_title = True
        elif self._heading is not None and (tag in _BLOCKS or tag in _HEADINGS) and tag != "br":
            self._end_heading()  # an unclosed heading must not swallow the page
            self.handle_starttag(tag, attrs)
        elif tag in _HEADINGS:
            self._flush()
            self._heading = (_HEADINGS[tag], [])
        elif tag == "pre":
            if not self._pre:
                self._flush()
            self._pre += 1
        elif tag in _BLOCKS:
            self._flush()
            if tag == "li":
                self._bullet = "- "
        elif tag in ("td", "th"):
            self._words.append(" | ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skip = max(0, self._skip - 1)
        elif self._skip:
            return
        elif tag == "title":
            self._in_title = False
            if self.outline.title is None:
                self.outline.title = " ".join("".join(self._title).split()) or None
        elif tag in _HEADINGS and self._heading is not None:
            self._end_heading()
        elif tag == "pre" and self._pre:
            self._pre -= 1
            if not self._pre:
                self._flush_code()
        elif tag in _BLOCKS:
            self._flush()
            if tag in ("li", "ol", "ul"):
                self._bullet = ""  # an empty item must not lend its bullet to later text

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._in_title:
            self._title.append(data)
        elif self._heading is not None:
            self._heading[1].append(data)
        elif self._pre:
            self._code.append(data)
        else:
            self._words.append(data)

    def finish(self) -> tuple[Section, ...]:
        self._end_heading()
        self._flush()
        self._flush_code()
        self._emit_rows()
        return self.outline.finish()

    def _end_heading(self) -> None:
        if self._heading is not None:
            level, parts = self._heading
            self._heading = None
            self._emit_rows()
            self.outline.heading(level, "".join(parts))

    def _flush(self) -> None:
        text = " ".join("".join(self._words).split())
        self._words = []
        if text.strip(" |"):
            if text.startswith("| "):
                text = f"{text} |"
            if self._bullet or text.startswith("| "):
                self._rows.append(self._bullet + text)
            else:
                self._emit_rows()
                self.outline.text(text)
            self._bullet = ""

    def _emit_rows(self) -> None:
        if self._rows:
            self.outline.text("\n".join(self._rows))
            self._rows = []

    def _flush_code(self) -> None:
        code = "".join(self._code).strip("\n")
        self._code = []
        if code.strip():
            fence = "````" if "```" in code else "```"
            self._emit_rows()
            self.outline.text(f"{fence}\n{code}\n{fence}")
