"""HTML to sections with the standard library's tolerant ``html.parser``.

Headings h1-h6 open sections; script, style, navigation, page header and footer are
dropped; ``<pre>`` becomes a fenced block so the chunker keeps it whole; list items and
table rows stay one per line. Entities are decoded by the parser itself.

Nesting is tracked the way a browser closes tags (an end tag closes what it matches and
everything opened since; void elements never open; a ``<p>``, ``<li>``, ``<td>``... closes
its open sibling) and a page nested deeper than ``max_depth`` is refused. The parser
itself keeps no tree, so depth costs nothing here; the limit protects what comes after
and refuses pages nobody writes by hand.
"""

from __future__ import annotations

from html.parser import HTMLParser

from ragtide.ingest._markdown import split_front_matter
from ragtide.ingest._outline import Outline
from ragtide.ingest.limits import too_complex
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
_VOID = frozenset(
    "area base br col embed hr img input keygen link meta param source track wbr".split()
)
# Elements whose end tag is optional, as browsers close them: a start tag in the key closes
# the nearest open element of its set, looking no further than one of its containers
# (and no further than _LOOKBACK elements, so that a hostile page costs linear time).
_TABLE = frozenset({"table", "thead", "tbody", "tfoot"})
_IMPLIED: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "li": (frozenset({"li"}), frozenset({"ul", "ol", "menu"})),
    "dt": (frozenset({"dt", "dd"}), frozenset({"dl"})),
    "dd": (frozenset({"dt", "dd"}), frozenset({"dl"})),
    "tr": (frozenset({"tr"}), _TABLE),
    "td": (frozenset({"td", "th"}), frozenset({"tr"}) | _TABLE),
    "th": (frozenset({"td", "th"}), frozenset({"tr"}) | _TABLE),
    "thead": (frozenset({"thead", "tbody", "tfoot"}), frozenset({"table"})),
    "tbody": (frozenset({"thead", "tbody", "tfoot"}), frozenset({"table"})),
    "tfoot": (frozenset({"thead", "tbody", "tfoot"}), frozenset({"table"})),
    "option": (frozenset({"option"}), frozenset({"select", "datalist"})),
}
_CLOSES_P = frozenset(
    """address article aside blockquote details div dl fieldset figcaption figure footer
    form h1 h2 h3 h4 h5 h6 header hr main menu nav ol p pre section table ul""".split()
)
_P_SCOPE = frozenset({"button", "table", "td", "th", "html", "body"})
_LOOKBACK = 16


def parse_html(
    text: str, *, name: str = "document", max_depth: int = 0
) -> tuple[str | None, tuple[Section, ...]]:
    """Return the title (front matter, ``<title>`` or first ``<h1>``) and the sections.

    ``max_depth`` (0: none) refuses elements nested deeper with ``DocumentTooComplex``.
    """
    front, body = split_front_matter(text)
    parser = _Parser(Outline(front.title), name, max_depth)
    if front.description:
        parser.outline.text(front.description)
    parser.feed(body)
    parser.close()
    return parser.outline.title, parser.finish()


class _Parser(HTMLParser):
    def __init__(self, outline: Outline, name: str = "document", max_depth: int = 0) -> None:
        super().__init__(convert_charrefs=True)
        self.outline = outline
        self._name = name
        self._max_depth = max_depth
        self._open: list[str] = []
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
        if self._max_depth and tag not in _VOID:
            if tag in _CLOSES_P:
                self._close_nearest(frozenset({"p"}), _P_SCOPE)
            if tag in _IMPLIED:
                self._close_nearest(*_IMPLIED[tag])
            self._open.append(tag)
            if len(self._open) > self._max_depth:
                raise too_complex(
                    self._name, "elements nested too deeply", "max_html_depth", self._max_depth
                )
        self._start(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if self._max_depth and tag in self._open:  # at most max_depth entries to look at
            while self._open.pop() != tag:
                pass
        self._end(tag)

    def _close_nearest(self, tags: frozenset[str], scope: frozenset[str]) -> None:
        for index in range(len(self._open) - 1, max(-1, len(self._open) - 1 - _LOOKBACK), -1):
            if self._open[index] in tags:
                del self._open[index:]
                return
            if self._open[index] in scope:
                return

    def _start(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip += 1
        elif self._skip:
            return
        elif tag == "title":
            self._in_title = True
        elif self._heading is not None and (tag in _BLOCKS or tag in _HEADINGS) and tag != "br":
            self._end_heading()  # an unclosed heading must not swallow the page
            self._start(tag, attrs)
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

    def _end(self, tag: str) -> None:
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
