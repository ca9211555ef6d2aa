"""PDF (pypdf) and DOCX (python-docx) to sections.

Both libraries meet untrusted bytes here, and both fail on broken input with a spread of
exception types: their own and the built-in ones they let escape (KeyError, ValueError,
zlib.error, ...). Each parser names those types in one tuple and reports them as
``CorruptDocument``; anything else is a bug and propagates.

Both meet ``ParseLimits`` first. A DOCX is a zip that python-docx reads whole, part by
part (``ZipFile.read``), and parses with lxml: before it opens the file, its central
directory is checked (entries, declared sizes, compression ratio: nothing inflated yet),
then every XML part is inflated in 64 KiB steps through expat, counting bytes and
nesting depth and refusing any DTD (OOXML has none; a DTD is how entity bombs start).
Only a file that passes reaches python-docx. pypdf gets the same per-stream ceiling
through its ``Configuration`` (every decompression filter), and a PDF is refused for its
page count before any page is read and for its characters while pages are extracted.

pypdf reports the repairs it makes to non-conforming files through ``logging`` (logger
``pypdf``), not ``warnings``; they are left to the application's logging configuration.
"""

from __future__ import annotations

import io
import re
import struct
import zipfile
import zlib
from xml.parsers import expat

import docx
from docx.document import Document as DocxDocument
from docx.opc.exceptions import PackageNotFoundError
from docx.table import Table
from lxml import etree
from pypdf import PasswordType, PdfReader, apply_configuration
from pypdf.errors import DependencyError, LimitReachedError, PyPdfError

from ragtide.errors import CorruptDocument, DocumentRejected, EmptyDocument
from ragtide.ingest._outline import Outline
from ragtide.ingest.limits import ParseLimits, check_text, too_complex, too_large
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
    expat.ExpatError,
)
_SENTENCE_END = re.compile(r"""[.!?:;"'\u201d\u2019)\]]\s*$""")
# What PDF producers write when nobody set a title (reportlab: "untitled").
_PLACEHOLDER_TITLE = re.compile(r"|untitled(?:[ -]?\d+| document)?|anonymous", re.I)
_HEADING_STYLE = re.compile(r"Heading ([1-9])")
_DEFAULT_LIMITS = ParseLimits()
_READ_STEP = 64 * 1024
_RATIO_FROM = 1024 * 1024  # small entries may compress very well without harm


def parse_pdf(
    name: str, data: bytes, limits: ParseLimits = _DEFAULT_LIMITS
) -> tuple[str | None, tuple[Section, ...]]:
    """Return the metadata title (if any) and one section holding every page's text."""
    per_stream = limits.max_entry_bytes
    try:
        with apply_configuration(
            maximum_declared_stream_length=per_stream,
            array_based_stream_maximum_output_length=per_stream,
            zlib_maximum_output_length=per_stream,
            lzw_maximum_output_length=per_stream,
            run_length_maximum_output_length=per_stream,
            brotli_maximum_output_length=per_stream,
            jbig2_maximum_output_length=per_stream,
            image_maximum_buffer_size=per_stream,
            stream_decoding_work_maximum_length=min(per_stream * 4, limits.max_inflated_bytes),
        ):
            reader = PdfReader(io.BytesIO(data))
            if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
                raise DocumentRejected(f"{name}: the PDF is password-protected")
            count = len(reader.pages)
            if count > limits.max_pdf_pages:
                raise too_large(name, f"{count:,} pages", "max_pdf_pages", limits.max_pdf_pages)
            pages: list[str] = []
            chars = 0
            for pdf_page in reader.pages:
                pages.append(pdf_page.extract_text() or "")
                chars += len(pages[-1])
                check_text(name, chars, limits)
            metadata = reader.metadata
            title = metadata.title if metadata is not None else None
    except LimitReachedError as exc:
        raise too_large(
            name,
            "a PDF stream inflates further",
            "max_entry_bytes",
            per_stream,
        ) from exc
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


def parse_docx(
    name: str, data: bytes, limits: ParseLimits = _DEFAULT_LIMITS
) -> tuple[str | None, tuple[Section, ...]]:
    """Return the title (a Title paragraph, else the core properties) and the sections."""
    try:
        check_archive(name, data, limits)
        document = docx.Document(io.BytesIO(data))
        outline = Outline(_docx_title(document))
        items: list[str] = []
        chars = 0
        for block in document.iter_inner_content():
            if isinstance(block, Table):
                style, text = "", ""
            else:
                style = block.style.name if block.style is not None else ""
                text = block.text.strip()
                chars += len(text)
                check_text(name, chars, limits)  # tables: parse() checks the total
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


def check_archive(name: str, data: bytes, limits: ParseLimits) -> None:
    """Refuse a zip over the archive limits; stream its XML parts through expat.

    Raises ``DocumentTooLarge``/``DocumentTooComplex`` naming the limit, or the zip,
    zlib and expat errors of a broken file (the caller reports those as corrupt).
    """
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        entries = archive.infolist()
        if len(entries) > limits.max_archive_entries:
            raise too_complex(
                name,
                f"{len(entries):,} archive entries",
                "max_archive_entries",
                limits.max_archive_entries,
            )
        declared = 0
        for entry in entries:
            _check_entry(name, entry, entry.file_size, limits)
            declared += entry.file_size
            if declared > limits.max_inflated_bytes:
                raise too_large(
                    name,
                    f"its parts inflate to more than {limits.max_inflated_bytes:,} bytes",
                    "max_inflated_bytes",
                    limits.max_inflated_bytes,
                )
        inflated = 0
        for entry in entries:
            if not entry.filename.endswith((".xml", ".rels")):
                continue  # media: python-docx reads what the entry declares, checked above
            depth = _XmlDepth(name, limits.max_xml_depth)
            size = 0
            with archive.open(entry) as stream:
                while chunk := stream.read(_READ_STEP):
                    size += len(chunk)
                    inflated += len(chunk)
                    _check_entry(name, entry, size, limits)  # zipfile enforces it; belt
                    if inflated > limits.max_inflated_bytes:
                        raise too_large(
                            name,
                            f"its parts inflate to more than {limits.max_inflated_bytes:,} bytes",
                            "max_inflated_bytes",
                            limits.max_inflated_bytes,
                        )
                    depth.feed(chunk)
            depth.close()


def _check_entry(name: str, entry: zipfile.ZipInfo, size: int, limits: ParseLimits) -> None:
    where = f"archive entry {entry.filename[:100]!r}"
    if size > limits.max_entry_bytes:
        raise too_large(
            name,
            f"{where} inflates to {size:,} bytes or more",
            "max_entry_bytes",
            limits.max_entry_bytes,
        )
    if size > _RATIO_FROM and size > limits.max_compression_ratio * max(entry.compress_size, 1):
        ratio = size / max(entry.compress_size, 1)
        raise too_complex(
            name,
            f"{where} is compressed {ratio:,.0f} to 1",
            "max_compression_ratio",
            limits.max_compression_ratio,
        )


class _XmlDepth:
    """Feed XML in pieces; refuse a DTD or nesting deeper than ``limit``."""

    def __init__(self, name: str, limit: int) -> None:
        self._name, self._limit, self._depth = name, limit, 0
        self._parser = expat.ParserCreate()
        self._parser.StartElementHandler = self._start
        self._parser.EndElementHandler = self._end
        self._parser.StartDoctypeDeclHandler = self._doctype

    def feed(self, chunk: bytes) -> None:
        self._parser.Parse(chunk, False)

    def close(self) -> None:
        self._parser.Parse(b"", True)

    def _start(self, tag: str, attrs: object) -> None:
        self._depth += 1
        if self._depth > self._limit:
            raise too_complex(
                self._name, "XML elements nested too deeply", "max_xml_depth", self._limit
            )

    def _end(self, tag: str) -> None:
        self._depth -= 1

    def _doctype(self, *args: object) -> None:
        raise CorruptDocument(f"{self._name}: an XML part declares a DTD (OOXML has none)")


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
