"""Limits on what one untrusted upload may cost, checked while it is read.

Each limit is a field of ``ParseLimits`` named like its setting (``ingest.<name>``), and
every refusal names it: ``DocumentTooLarge`` (413 ``document_too_large``) for sizes
(inflated bytes, characters, lines, pages) and ``DocumentTooComplex`` (422
``document_too_complex``) for structure (archive entries, compression ratio, nesting).

Archives are checked against their central directory before anything is inflated (the
declared sizes are an upper bound: ``zipfile`` never returns more than an entry declares
and fails its CRC check on a lie), then counted again while inflating. These limits are
the first line; the parse sandbox's memory ceiling and deadline are the backstop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ragtide.errors import DocumentTooComplex, DocumentTooLarge

__all__ = ["ParseLimits", "check_lines", "check_text", "too_complex", "too_large"]

_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ParseLimits:
    max_inflated_bytes: int = 256 * _MIB  # all entries of an archive, inflated
    max_entry_bytes: int = 64 * _MIB  # one archive entry or one PDF stream, inflated
    max_archive_entries: int = 1000
    max_compression_ratio: float = 100.0  # inflated/compressed, for entries over 1 MiB
    max_xml_depth: int = 128
    max_html_depth: int = 512
    max_pdf_pages: int = 2000
    max_document_chars: int = 5_000_000  # text of one document (one JSONL record)
    max_line_chars: int = 1_000_000  # one line of .txt, .md or .jsonl
    max_jsonl_lines: int = 100_000


def too_large(name: str, what: str, limit: str, value: int | float) -> DocumentTooLarge:
    return DocumentTooLarge(
        f"{name}: {what}, over the {_shown(value)} limit (ingest.{limit})", limit=limit
    )


def too_complex(name: str, what: str, limit: str, value: int | float) -> DocumentTooComplex:
    return DocumentTooComplex(
        f"{name}: {what}, over the {_shown(value)} limit (ingest.{limit})", limit=limit
    )


def check_text(name: str, chars: int, limits: ParseLimits) -> None:
    """Refuse a document of more than ``max_document_chars`` characters of text."""
    if chars > limits.max_document_chars:
        raise too_large(
            name, f"{chars:,} characters of text", "max_document_chars", limits.max_document_chars
        )


def check_lines(name: str, text: str, limits: ParseLimits) -> None:
    """Refuse text with a line over ``max_line_chars`` (one linear C-speed scan, no copies:
    the pattern is only tried at line starts)."""
    n = limits.max_line_chars
    if len(text) > n and re.search(f"^[^\n]{{{n + 1}}}", text, re.M):
        raise too_large(name, f"a line of more than {n:,} characters", "max_line_chars", n)


def _shown(value: int | float) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if value >= _MIB and value % _MIB == 0:
        return f"{value // _MIB:,} MiB"
    return f"{value:,}"
