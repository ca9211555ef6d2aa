"""PDF (pypdf) and DOCX (python-docx) to sections.

Both libraries meet untrusted bytes here, and both fail on broken input with a spread of
exception types: their own and the built-in ones they let escape (KeyError, ValueError,
zlib.error, ...). Each parser names those types in one tuple and reports them as
``CorruptDocument``; anything else is a bug and propagates.

pypdf reports the repairs it makes to non-conforming files through ``logging`` (logger
``pypdf``), not ``warnings``; they are left to the application's logging configuration.
"""

from __future__ import annotations

import io
import re
import struct
import zipfile
import zlib

import docx
from docx.document import Document as DocxDocument
from docx.opc.exceptions import PackageNotFoundError
from docx.table import Table
from lxml import etree
from pypdf import PasswordType, PdfReader
from pypdf.errors import DependencyError, PyPdfError

from ragtide.errors import CorruptDocument, DocumentRejected, EmptyDocument
from ragtide.ingest._outline import Outline
from ragtide.types import Section

__all__ = ["parse_docx", "parse_pdf"]

_PDF_ERRORS = (
    PyPdfError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    AssertionError,
    NotImplementedError,
    RecursionError,
    OSError,
    zlib.error,
    struct.error,
)
_DOCX_ERRORS = (
    PackageNotFoundError,
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    KeyError,
    ValueError,
    TypeError,
    AttributeError,
    OSError,
    zlib.error,
    etree.LxmlError,
)
_SENTENCE_END = re.compile(r"""[.!?:;"'\u201d\u2019)\]]\s*$""")
# What PDF producers write when nobody set a title (reportlab: "untitled").
_PLACEHOLDER_TITLE = re.compile(r"|untitled(?:[ -]?\d+| document)?|anonymous", re.I)
_HEADING_STYLE = re.compile(r"Heading ([1-9])")


def parse_pdf(name: str, data: bytes) -> tuple[str | None, tuple[Section, ...]]:
    """Return the metadata title (if any) and one section holding every page's text."""
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise DocumentRejected(f"{name}: the PDF is password-protected")
        pages = [page.extract_text() or "" for page in reader.pages]
        metadata = reader.metadata
        title = metadata.title if metadata is not None else None
    except DependencyError as exc:
        raise DocumentRejected(f"{name}: the PDF's encryption is not supported ({exc})") from exc
    except _PDF_ERRORS as exc:
        raise CorruptDocument(f"{name}: not a readable PDF ({_first_line(exc)})") from exc
    text = ""
    for page in (p.strip() for p in pages):
        if page:
            # A page that ends mid-sentence continues on the next one: keep it one paragraph.
            glue = "\n\n" if _SENTENCE_END.search(text) else "\n"
            text = f"{text}{glue}{page}" if text else page
    if not text.strip():
        raise EmptyDocument(
            f"{name}: no extractable text; it may be a scanned PDF (OCR is not supported)"
        )
    title = title.strip() if isinstance(title, str) else ""
    return (None if _PLACEHOLDER_TITLE.fullmatch(title) else title), (Section(text),)


def parse_docx(name: str, data: bytes) -> tuple[str | None, tuple[Section, ...]]:
    """Return the title (a Title paragraph, else the core properties) and the sections."""
    try:
        document = docx.Document(io.BytesIO(data))
        outline = Outline(_docx_title(document))
        items: list[str] = []
        for block in document.iter_inner_content():
            if isinstance(block, Table):
                style, text = "", ""
            else:
                style = block.style.name if block.style is not None else ""
                text = block.text.strip()
            if style.startswith("List") and text:
                items.append(f"- {text}")
                continue
            if items:  # consecutive list paragraphs form one block, one item a line
                outline.text("\n".join(items))
                items = []
            if isinstance(block, Table):
                outline.text("\n".join(_table_rows(block)))
                continue
            heading = _HEADING_STYLE.fullmatch(style)
            if heading or style == "Title":
                outline.heading(int(heading.group(1)) if heading else 1, text)
            else:
                outline.text(text)
        if items:
            outline.text("\n".join(items))
        return outline.title, outline.finish()
    except _DOCX_ERRORS as exc:
        raise CorruptDocument(f"{name}: not a readable DOCX file ({_first_line(exc)})") from exc


def _docx_title(document: DocxDocument) -> str | None:
    for paragraph in document.paragraphs:
        if (
            paragraph.style is not None
            and paragraph.style.name == "Title"
            and paragraph.text.strip()
        ):
            return paragraph.text
    return document.core_properties.title or None


def _table_rows(table: Table) -> list[str]:
    rows = []
    for row in table.rows:
        cells: list[str] = []
        for cell in row.cells:
            text = " ".join(cell.text.split())
            if not cells or cells[-1] != text:  # merged cells repeat their text
                cells.append(text)
        if any(cells):
            rows.append(f"| {' | '.join(cells)} |")
    return rows


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0][:200] if text else "") or type(exc).__name__
