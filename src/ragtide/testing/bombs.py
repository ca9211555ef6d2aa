"""Hostile files, built at whatever scale a test or a bench asks for (never committed as
files): DOCX and PDF bombs, deep XML and HTML. Parser plugins can test against them too."""

from __future__ import annotations

import io
import zipfile
import zlib

import docx

_STEP = 1024 * 1024
_BODY_OPEN = (
    b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>'
)
_BODY_CLOSE = b"</w:body></w:document>"


def docx_bytes(*paragraphs: str) -> bytes:
    document = docx.Document()
    for text in paragraphs:
        document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


# An entry streamed as head, then filler repeated to about size bytes, then tail.
_Streamed = tuple[bytes, bytes, int, bytes]


def _rezip(base: bytes, replace: dict[str, bytes | _Streamed], extra: int = 0) -> bytes:
    """``base`` with some entries' content replaced: bytes, or a streamed ``_Streamed``."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(base)) as src,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for info in src.infolist():
            content = replace.get(info.filename, src.read(info.filename))
            if isinstance(content, bytes):
                dst.writestr(info.filename, content)
                continue
            head, filler, size, tail = content
            with dst.open(info.filename, "w", force_zip64=True) as stream:
                stream.write(head)
                block = filler * (_STEP // len(filler))
                written = 0
                while written < size:
                    stream.write(block)
                    written += len(block)
                stream.write(tail)
        for n in range(extra):
            dst.writestr(f"extra/part{n}.xml", b"<a/>")
    return out.getvalue()


def docx_bomb(inflated: int, filler: bytes = b"<w:p/>") -> bytes:
    """A valid DOCX whose document.xml inflates to about ``inflated`` bytes of ``filler``
    (empty paragraphs by default; ``b" "`` makes the whitespace bomb)."""
    return _rezip(
        docx_bytes("seed"), {"word/document.xml": (_BODY_OPEN, filler, inflated, _BODY_CLOSE)}
    )


def docx_with(document_xml: bytes = b"", entries: int = 0) -> bytes:
    """A DOCX with this document.xml and/or this many extra (tiny) entries."""
    replace: dict[str, bytes | _Streamed] = {}
    if document_xml:
        replace["word/document.xml"] = document_xml
    return _rezip(docx_bytes("seed"), replace, extra=entries)


def nested_xml(depth: int) -> bytes:
    return _BODY_OPEN + b"<w:p>" * 0 + b"<w:sdt>" * depth + b"</w:sdt>" * depth + _BODY_CLOSE


def pdf_stream_bomb(inflated: int, pages: int = 1, text: str = "Hello") -> bytes:
    """A PDF whose page content stream inflates to ``inflated`` bytes of spaces (0: a
    small ordinary page showing ``text``), repeated on ``pages`` pages."""
    if inflated:
        compressor = zlib.compressobj(6)
        parts = [compressor.compress(b" " * _STEP) for _ in range(inflated // _STEP)]
        parts.append(compressor.compress(f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()))
        stream = b"".join(parts) + compressor.flush()
    else:
        stream = zlib.compress(f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode())
    kids = " ".join(f"{4 + i} 0 R" for i in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    font = 4 + pages
    for _ in range(pages):
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 3 0 R "
            f"/Resources << /Font << /F1 {font} 0 R >> >> >>".encode()
        )
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(
        b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    )
    return out.getvalue()


def nested_html(depth: int) -> bytes:
    return b"<html><body>" + b"<div>" * depth + b"deep" + b"</div>" * depth + b"</body></html>"
