"""Turn an uploaded file into parsed documents, or reject it with a reason.

``parse`` picks a parser by extension (case-insensitive)::

    .txt                 plain text (UTF-8, BOM allowed; cp1252/latin-1 only if it reads as text)
    .md .markdown        Markdown: front matter title, heading sections, Hugo shortcodes
    .html .htm           HTML: <title>/<h1> title, h1-h6 sections, page chrome dropped
    .pdf                 text of every page (pypdf); scanned PDFs have none and are rejected
    .docx                Heading styles open sections (python-docx)
    .jsonl               one {"_id", "title", "text", ...} object per line: one document each

Every rejection is a ``RagtideError`` whose one-line message starts with the file name:
``UnsupportedMediaType`` (extension), ``PayloadTooLarge`` (over ``max_bytes``),
``CorruptDocument`` (a PDF/DOCX that does not open, binary bytes in a text format, a bad
JSONL line), ``DocumentRejected`` (a password-protected PDF) and ``EmptyDocument`` (no
text left after parsing).

``limits`` (``ParseLimits``) bound what a file may cost while it is read: a file over
one is refused with ``DocumentTooLarge`` or ``DocumentTooComplex`` naming the limit (see
``ragtide.ingest.limits``). Text, Markdown and JSONL are checked for line length before
they are parsed, and every document for its characters after.

JSONL is all or nothing: one bad line rejects the whole file and the message names the
line. Skipping bad lines would leave the caller to find out which records went missing;
a rejection they can act on ("line 12: invalid JSON") is simpler and predictable. Every
line needs its own ``_id`` (a string or an integer, unique in the file), because the
documents of one file would otherwise share an id and overwrite each other.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

from ragtide.errors import CorruptDocument, EmptyDocument, PayloadTooLarge, UnsupportedMediaType
from ragtide.ingest._html import parse_html
from ragtide.ingest._markdown import parse_markdown
from ragtide.ingest.limits import ParseLimits, check_lines, check_text, too_large
from ragtide.types import ParsedDocument, Section

__all__ = ["DEFAULT_MAX_BYTES", "SUPPORTED_EXTENSIONS", "parse", "parse_jsonl_record"]

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
SUPPORTED_EXTENSIONS = frozenset(
    {".docx", ".htm", ".html", ".jsonl", ".markdown", ".md", ".pdf", ".txt"}
)

_Parsed = tuple[str | None, tuple[Section, ...]]
_DEFAULT_LIMITS = ParseLimits()
# Control characters that do not occur in text (tab, newlines, form feed are fine).
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")
_MAX_CONTROL_SHARE = 0.01
_JSONL_RESERVED = frozenset({"_id", "title", "text"})


def parse(
    filename: str,
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    limits: ParseLimits | None = None,
) -> list[ParsedDocument]:
    """Parse one uploaded file into documents (one, or one per line for JSONL).

    Raises ``UnsupportedMediaType``, ``PayloadTooLarge`` (``DocumentTooLarge`` for an
    ingest limit) or a ``DocumentRejected`` subclass; see the module docstring.
    """
    limits = limits or _DEFAULT_LIMITS
    name = filename.replace("\\", "/").rsplit("/", 1)[-1] or filename
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        kind = f"file type {suffix!r}" if suffix else "file without an extension"
        supported = ", ".join(sorted(SUPPORTED_EXTENSIONS))
        raise UnsupportedMediaType(f"{name}: unsupported {kind} (supported: {supported})")
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"{name}: {len(data):,} bytes is over the {max_bytes:,}-byte limit")
    if not data:
        raise EmptyDocument(f"{name}: the file is empty")
    if suffix == ".jsonl":
        return _parse_jsonl(name, data, limits)
    title, sections = _PARSERS[suffix](name, data, limits)
    if not sections:
        raise EmptyDocument(f"{name}: no text found")
    check_text(name, sum(len(s.text) for s in sections), limits)
    return [ParsedDocument(title=title or name[: -len(suffix)], sections=sections)]


def _parse_text(name: str, data: bytes, limits: ParseLimits) -> _Parsed:
    text = _decode_lines(name, data, limits).strip()
    return None, (Section(text),) if text else ()


def _parse_markdown(name: str, data: bytes, limits: ParseLimits) -> _Parsed:
    return parse_markdown(_decode_lines(name, data, limits))


def _parse_html(name: str, data: bytes, limits: ParseLimits) -> _Parsed:
    # Minified HTML is one long line: only the document's size and nesting are limited.
    text = _decode_text(name, data)
    check_text(name, len(text), limits)
    return parse_html(text, name=name, max_depth=limits.max_html_depth)


# pypdf and python-docx (with lxml) cost ~150 ms to import: load them on first use so
# that a server which never sees a PDF does not pay for them at start-up.
def _parse_pdf(name: str, data: bytes, limits: ParseLimits) -> _Parsed:
    from ragtide.ingest._office import parse_pdf

    return parse_pdf(name, data, limits)


def _parse_docx(name: str, data: bytes, limits: ParseLimits) -> _Parsed:
    from ragtide.ingest._office import parse_docx

    return parse_docx(name, data, limits)


_PARSERS: dict[str, Callable[[str, bytes, ParseLimits], _Parsed]] = {
    ".txt": _parse_text,
    ".md": _parse_markdown,
    ".markdown": _parse_markdown,
    ".html": _parse_html,
    ".htm": _parse_html,
    ".pdf": _parse_pdf,
    ".docx": _parse_docx,
}


def _decode_text(name: str, data: bytes) -> str:
    """Decode a text upload with ``\\n`` line ends; raise ``CorruptDocument`` if it is binary.

    UTF-8 (with or without BOM) and BOM-marked UTF-16 are read as such. Anything else is
    read as cp1252 (or latin-1 where cp1252 has holes) only if it then looks like text.
    """
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise CorruptDocument(f"{name}: invalid UTF-16 text ({exc.reason})") from exc
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            try:
                text = data.decode("cp1252")
            except UnicodeDecodeError:
                text = data.decode("latin-1")
            if _looks_binary(text):
                raise CorruptDocument(f"{name}: not UTF-8, and the bytes look binary") from None
    if _looks_binary(text):
        raise CorruptDocument(f"{name}: contains binary data (NUL or control characters), not text")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _decode_lines(name: str, data: bytes, limits: ParseLimits) -> str:
    text = _decode_text(name, data)
    check_text(name, len(text), limits)
    check_lines(name, text, limits)
    return text


def _looks_binary(text: str) -> bool:
    if "\x00" in text:
        return True
    controls = len(_CONTROL.findall(text))
    return controls > 0 and controls > _MAX_CONTROL_SHARE * len(text)


def _parse_jsonl(name: str, data: bytes, limits: ParseLimits) -> list[ParsedDocument]:
    documents: list[ParsedDocument] = []
    first_seen: dict[str, int] = {}
    content = _decode_text(name, data)
    lines = content.count("\n") + (not content.endswith("\n"))
    if lines > limits.max_jsonl_lines:
        raise too_large(name, f"{lines:,} lines", "max_jsonl_lines", limits.max_jsonl_lines)
    check_lines(name, content, limits)
    for number, line in enumerate(content.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{name} line {number}"
        document = _jsonl_record(where, line, limits)
        key = str(document.id)
        if key in first_seen:
            raise CorruptDocument(
                f'{where}: duplicate "_id" {key!r} (first on line {first_seen[key]})'
            )
        first_seen[key] = number
        documents.append(document)
    if not documents:
        raise EmptyDocument(f"{name}: no records found")
    return documents


def parse_jsonl_record(
    where: str, line: bytes, limits: ParseLimits | None = None
) -> ParsedDocument:
    """One line of a JSONL file, read on its own, as its document (a local file too large
    to read whole is streamed record by record); raise like ``parse`` does, naming
    ``where`` (such as ``"big.jsonl line 12"``)."""
    limits = limits or _DEFAULT_LIMITS
    text = _decode_text(where, line)
    check_lines(where, text, limits)
    return _jsonl_record(where, text, limits)


def _jsonl_record(where: str, line: str, limits: ParseLimits) -> ParsedDocument:
    try:
        record: Any = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CorruptDocument(f"{where}: invalid JSON ({exc.msg})") from exc
    except RecursionError as exc:
        raise CorruptDocument(f"{where}: JSON nested too deeply") from exc
    if not isinstance(record, dict):
        raise CorruptDocument(f"{where}: expected a JSON object, got {type(record).__name__}")
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        raise CorruptDocument(f'{where}: "text" is missing, empty or not a string')
    check_text(where, len(text), limits)
    title = record.get("title") or ""
    if not isinstance(title, str):
        raise CorruptDocument(f'{where}: "title" must be a string')
    return ParsedDocument(
        title=" ".join(title.split()),
        sections=(Section(text.strip().replace("\r\n", "\n")),),
        id=_record_id(where, record.get("_id")),
        metadata={k: v for k, v in record.items() if k not in _JSONL_RESERVED},
    )


def _record_id(where: str, value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
        raise CorruptDocument(f'{where}: "_id" must be a non-empty string or an integer')
    return str(value).strip()
