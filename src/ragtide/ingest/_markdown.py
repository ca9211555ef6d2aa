"""Markdown (CommonMark plus Hugo front matter and shortcodes) to sections.

Fenced code blocks are kept verbatim, fences included, so the chunker can keep each one
whole. Prose loses its markup: links become their text, known HTML tags and comments go,
entities are decoded, and Hugo shortcodes give way to the prose they carry (a tooltip's
``text``, a figure's ``caption``, a ``heading`` shortcode's label) or to nothing.
"""

from __future__ import annotations

import html
import re
import tomllib
from collections.abc import Iterator
from typing import NamedTuple

import yaml

from ragtide.ingest._outline import Outline
from ragtide.types import Section

__all__ = ["FrontMatter", "parse_markdown", "split_front_matter"]

_FRONT_MATTER = re.compile(r"\A(---|\+\+\+)[ \t]*\n(.*?)^(?:\1|\.\.\.)[ \t]*(?:\n|\Z)", re.S | re.M)
_TITLE_LINE = re.compile(r"""^title\s*[:=]\s*["']?(.*?)["']?\s*$""", re.M)

_COMMENT_SHORTCODE = re.compile(
    r"\{\{[<%]\s*comment\s*[>%]\}\}.*?\{\{[<%]\s*/\s*comment\s*[>%]\}\}", re.S
)
_MERMAID_OPEN = re.compile(r"^([ \t]*)\{\{[<%]\s*mermaid\s*[>%]\}\}[ \t]*$", re.M)
_MERMAID_CLOSE = re.compile(r"^([ \t]*)\{\{[<%]\s*/\s*mermaid\s*[>%]\}\}[ \t]*$", re.M)
_SHORTCODE = re.compile(r"\{\{[<%]-?\s*(/?)\s*([A-Za-z0-9_.-]+)(.*?)-?\s*[>%]\}\}", re.S)
_SHORTCODE_PARAM = re.compile(r'(?:(\w+)\s*=\s*)?"([^"]*)"')
_ESCAPED_SHORTCODE = re.compile(r"\{\{([<%])/\*\s*(.*?)\s*\*/([>%])\}\}", re.S)
# Labels of the Hugo ``heading`` shortcode as rendered by the Kubernetes site (en).
_HEADING_LABELS = {
    "cleanup": "Clean up",
    "envvars": "Environment variables",
    "objectives": "Objectives",
    "options": "Options",
    "prerequisites": "Before you begin",
    "seealso": "See also",
    "synopsis": "Synopsis",
    "whatsnext": "What's next",
}

_HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)
_LINK_DEFINITION = re.compile(r"^[ \t]{0,3}\[[^\]\n]+\]:[ \t]*\S+.*$", re.M)
_URL = r"\(\s*(?:[^()\s]|\([^()\s]*\))*(?:\s+\"[^\"]*\")?\s*\)"  # "(url)", '(url "title")'
_IMAGE = re.compile(rf"!\[([^\]]*)\]{_URL}")
_LINK = re.compile(rf"\[([^\]]+)\]{_URL}")
_REFERENCE_LINK = re.compile(r"\[([^\]]+)\]\[[^\]\n]*\]")
_INLINE_TAGS = (
    "a|abbr|b|cite|code|del|em|font|i|ins|kbd|mark|q|s|small|span|strong|sub|sup|tt|u|var"
)
_BLOCK_TAGS = (
    "blockquote|br|caption|center|col|colgroup|dd|details|div|dl|dt|figcaption|figure|h[1-6]|"
    "hr|iframe|img|li|ol|p|pre|section|summary|table|tbody|td|tfoot|th|thead|tr|ul|wbr"
)
_INLINE_TAG = re.compile(rf"</?(?:{_INLINE_TAGS})(?:\s[^<>]*)?/?>", re.I)
_BLOCK_TAG = re.compile(rf"</?(?:{_BLOCK_TAGS})(?:\s[^<>]*)?/?>", re.I)

_FENCE = re.compile(r"^([ \t]*)(`{3,}|~{3,})")
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_RULE = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_TABLE_DIVIDER = re.compile(r"^[ \t]*\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)+\|?[ \t]*$")
_QUOTE = re.compile(r"^[ \t]*(?:>[ \t]?)+")
_HEADING_ANCHOR = re.compile(r"\s*\{#[^}]*\}\s*$")


class FrontMatter(NamedTuple):
    title: str | None = None
    description: str | None = None  # a page's summary: indexed as its lead paragraph


def split_front_matter(text: str) -> tuple[FrontMatter, str]:
    """Strip YAML (``---``) or TOML (``+++``) front matter; return its fields and the body."""
    match = _FRONT_MATTER.match(text)
    if not match:
        return FrontMatter(), text
    return _front_matter(match.group(1), match.group(2)), text[match.end() :]


def parse_markdown(text: str) -> tuple[str | None, tuple[Section, ...]]:
    """Return the explicit or first-H1 title (``None`` if neither) and the sections."""
    front, body = split_front_matter(text)
    body = _COMMENT_SHORTCODE.sub("", body)
    body = _MERMAID_OPEN.sub(r"\1```mermaid", body)
    body = _MERMAID_CLOSE.sub(r"\1```", body)
    outline = Outline(front.title)
    if front.description:
        outline.text(front.description)
    for is_code, segment in _segments(body):
        if is_code:
            outline.text(_unescape_shortcodes(_SHORTCODE.sub(_render_shortcode, segment)))
        else:
            _add_prose(outline, _clean_prose(segment))
    return outline.title, outline.finish()


def _front_matter(fence: str, body: str) -> FrontMatter:
    data: object = None
    try:
        data = tomllib.loads(body) if fence == "+++" else yaml.load(body, Loader=_Loader)
    except (yaml.YAMLError, tomllib.TOMLDecodeError, RecursionError):
        match = _TITLE_LINE.search(body)
        return FrontMatter(match.group(1).strip() or None if match else None)
    if not isinstance(data, dict):
        return FrontMatter()
    return FrontMatter(_scalar(data.get("title")), _scalar(data.get("description")))


def _scalar(value: object) -> str | None:
    if isinstance(value, str | int | float) and str(value).strip():
        return " ".join(str(value).split())
    return None


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _segments(body: str) -> Iterator[tuple[bool, str]]:
    """Split into prose and fenced-code segments, in order; ``True`` marks code."""
    prose: list[str] = []
    lines = body.split("\n")
    i = 0
    while i < len(lines):
        opener = _FENCE.match(lines[i])
        if not opener or (opener.group(2)[0] == "`" and "`" in lines[i][opener.end() :]):
            prose.append(lines[i])
            i += 1
            continue
        if prose:
            yield False, "\n".join(prose)
            prose = []
        indent, fence = opener.group(1), opener.group(2)
        code = [lines[i][len(indent) :]]
        i += 1
        while i < len(lines):
            line = lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i].lstrip()
            code.append(line)
            i += 1
            stripped = line.strip()
            if stripped.startswith(fence) and not stripped.lstrip(fence[0]):
                break
        else:
            code.append(fence)  # an unclosed fence runs to the end of the file
        yield True, "\n".join(code)
    if prose:
        yield False, "\n".join(prose)


def _clean_prose(text: str) -> str:
    text = _HTML_COMMENT.sub("", text)
    text = _unescape_shortcodes(_SHORTCODE.sub(_render_shortcode, text))
    text = _LINK_DEFINITION.sub("", text)
    text = _IMAGE.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _REFERENCE_LINK.sub(r"\1", text)
    text = _INLINE_TAG.sub("", text)
    text = _BLOCK_TAG.sub(" ", text)
    return html.unescape(text) if "&" in text else text


def _render_shortcode(match: re.Match[str]) -> str:
    closing, name, raw = match.group(1), match.group(2).lower(), match.group(3)
    if closing:
        return ""
    named: dict[str, str] = {}
    positional: list[str] = []
    for key, value in _SHORTCODE_PARAM.findall(raw):
        if key:
            named[key.lower()] = value
        else:
            positional.append(value)
    if name == "heading" and positional:
        return _HEADING_LABELS.get(positional[0], positional[0].replace("_", " ").capitalize())
    if name == "glossary_tooltip":
        return named.get("text") or named.get("term_id", "")
    return named.get("text") or named.get("caption") or ""


def _unescape_shortcodes(text: str) -> str:
    """``{{</* note */>}}`` is how Hugo docs show a shortcode literally."""
    return _ESCAPED_SHORTCODE.sub(r"{{\1 \2 \3}}", text) if "/*" in text else text


def _add_prose(outline: Outline, text: str) -> None:
    paragraph: list[str] = []
    in_table = False

    def flush() -> None:
        if paragraph:
            outline.text("\n".join(paragraph))
            paragraph.clear()

    for raw in text.split("\n"):
        line = raw.rstrip()
        first = line.lstrip()[:1]
        if first == ">":
            line = _QUOTE.sub("", line)
            first = line.lstrip()[:1]
        if not first:
            flush()
            in_table = False
            continue
        if first == "#" and (atx := _ATX.match(line)):
            flush()
            outline.heading(len(atx.group(1)), _heading_text(atx.group(2) or ""))
            continue
        if first in "=-*_|:":  # the only characters that open these line forms
            setext = _SETEXT.match(line)
            if setext and len(paragraph) == 1 and not in_table:
                level = 1 if setext.group(1)[0] == "=" else 2
                outline.heading(level, _heading_text(paragraph.pop()))
                continue
            if _RULE.match(line):
                flush()
                continue
            if _TABLE_DIVIDER.match(line):
                in_table = True
                if paragraph:
                    paragraph[-1] = _table_row(paragraph[-1])
                continue
        paragraph.append(_table_row(line) if in_table else line)
    flush()


def _table_row(line: str) -> str:
    """Give every table row a leading pipe so the chunker sees one row per line."""
    return line if line.lstrip().startswith("|") or "|" not in line else f"| {line.strip()}"


def _heading_text(text: str) -> str:
    return _HEADING_ANCHOR.sub("", text).replace("`", "").replace("**", "").strip()
