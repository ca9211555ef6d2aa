"""Every ingest limit, hit by a small bomb built here with the limit set small."""

from __future__ import annotations

import json

import pytest

from ragtide.api.errors import status_for
from ragtide.errors import CorruptDocument, DocumentTooComplex, DocumentTooLarge
from ragtide.ingest.limits import ParseLimits
from ragtide.ingest.parsers import parse
from ragtide.testing.bombs import (
    docx_bomb,
    docx_bytes,
    docx_with,
    nested_html,
    nested_xml,
    pdf_stream_bomb,
)

KIB = 1024
MIB = 1024 * 1024


def refused(
    name: str, data: bytes, limit: str, kind: type[Exception], **limits: int | float
) -> str:
    with pytest.raises(kind) as caught:
        parse(name, data, max_bytes=1 << 40, limits=ParseLimits(**limits))  # type: ignore[arg-type]
    error = caught.value
    assert getattr(error, "limit", None) == limit
    assert f"(ingest.{limit})" in str(error) and str(error).startswith(name)
    return str(error)


# --- DOCX: zip and XML ------------------------------------------------------------------


def test_a_good_docx_passes_every_limit() -> None:
    [doc] = parse("ok.docx", docx_bytes("One sentence.", "Another one."))
    assert doc.text == "One sentence.\n\nAnother one."


def test_an_empty_paragraph_bomb_is_refused_before_it_inflates() -> None:
    bomb = docx_bomb(8 * MIB)
    assert len(bomb) < 100 * KIB
    message = refused("bomb.docx", bomb, "max_entry_bytes", DocumentTooLarge, max_entry_bytes=MIB)
    assert "word/document.xml" in message


def test_a_whitespace_bomb_is_refused_for_its_compression_ratio() -> None:
    bomb = docx_bomb(4 * MIB, filler=b" ")
    refused("spaces.docx", bomb, "max_compression_ratio", DocumentTooComplex)


def test_total_inflated_bytes_are_limited() -> None:
    data = docx_bytes(*["A sentence of some length, repeated. " * 20] * 300)
    refused("total.docx", data, "max_inflated_bytes", DocumentTooLarge, max_inflated_bytes=64 * KIB)


def test_archive_entries_are_limited() -> None:
    data = docx_with(entries=50)
    refused("many.docx", data, "max_archive_entries", DocumentTooComplex, max_archive_entries=40)
    assert parse("many.docx", data)  # the default allows it


def test_xml_depth_is_limited_while_inflating() -> None:
    data = docx_with(nested_xml(200))
    refused("deep.docx", data, "max_xml_depth", DocumentTooComplex, max_xml_depth=100)


def test_an_xml_part_with_a_dtd_is_corrupt() -> None:
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">]><w:document>&lol2;</w:document>'
    )
    with pytest.raises(CorruptDocument, match="DTD"):
        parse("laughs.docx", docx_with(laughs))


def test_docx_text_is_limited_in_characters() -> None:
    data = docx_bytes(*["x" * 1000] * 20)
    refused("long.docx", data, "max_document_chars", DocumentTooLarge, max_document_chars=5000)


# --- PDF ----------------------------------------------------------------------------------


def test_a_good_pdf_passes() -> None:
    [doc] = parse("ok.pdf", pdf_stream_bomb(0, pages=2, text="Hello"))
    assert doc.text.split() == ["Hello", "Hello"]


def test_a_pdf_stream_bomb_is_refused() -> None:
    bomb = pdf_stream_bomb(8 * MIB)
    assert len(bomb) < 100 * KIB
    refused("bomb.pdf", bomb, "max_entry_bytes", DocumentTooLarge, max_entry_bytes=MIB)


def test_pdf_pages_are_limited() -> None:
    refused(
        "pages.pdf",
        pdf_stream_bomb(0, pages=30),
        "max_pdf_pages",
        DocumentTooLarge,
        max_pdf_pages=20,
    )


def test_pdf_text_is_limited_while_pages_are_read() -> None:
    data = pdf_stream_bomb(0, pages=50, text="x" * 200)
    refused("chars.pdf", data, "max_document_chars", DocumentTooLarge, max_document_chars=1000)


# --- HTML ---------------------------------------------------------------------------------


def test_deeply_nested_html_is_refused() -> None:
    refused("deep.html", nested_html(600), "max_html_depth", DocumentTooComplex)
    refused("deep.html", nested_html(60), "max_html_depth", DocumentTooComplex, max_html_depth=50)


def test_sloppy_html_does_not_count_as_deep() -> None:
    page = (
        "<html><body>"
        + "<p>para <br> text <img src=x>" * 2000
        + "<ul>"
        + "<li>item" * 2000
        + "</ul>"
        + "<table>"
        + "<tr><td>a<td>b" * 2000
        + "</table>"
        + "<div><span>closed</span></div>" * 2000
    )
    [doc] = parse("sloppy.html", page.encode(), limits=ParseLimits(max_html_depth=20))
    assert "closed" in doc.text


def test_minified_html_is_not_limited_by_line_length() -> None:
    page = "<html><body>" + "<p>One sentence here.</p>" * 2000 + "</body></html>"
    assert parse("min.html", page.encode(), limits=ParseLimits(max_line_chars=1000))


# --- text, Markdown, JSONL ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["one.md", "one.txt"])
def test_a_single_long_line_is_refused(name: str) -> None:
    data = ("word " * 3000).encode()
    refused(name, data, "max_line_chars", DocumentTooLarge, max_line_chars=10_000)
    assert parse(name, data)


def test_text_is_limited_in_characters() -> None:
    data = ("A short line.\n" * 1000).encode()
    refused("big.md", data, "max_document_chars", DocumentTooLarge, max_document_chars=10_000)


def test_a_jsonl_line_is_limited() -> None:
    lines = [{"_id": "a", "text": "fine"}, {"_id": "b", "text": "x" * 20_000}]
    data = "\n".join(json.dumps(r) for r in lines).encode()
    message = refused("big.jsonl", data, "max_line_chars", DocumentTooLarge, max_line_chars=10_000)
    assert "10,000" in message


def test_jsonl_lines_are_counted() -> None:
    data = "".join(json.dumps({"_id": n, "text": "t"}) + "\n" for n in range(1001)).encode()
    refused("many.jsonl", data, "max_jsonl_lines", DocumentTooLarge, max_jsonl_lines=1000)
    assert len(parse("many.jsonl", data, limits=ParseLimits(max_jsonl_lines=1001))) == 1001


def test_a_jsonl_record_is_limited_in_characters() -> None:
    data = (json.dumps({"_id": "a", "text": "y" * 5000}) + "\n").encode()
    message = refused(
        "rec.jsonl", data, "max_document_chars", DocumentTooLarge, max_document_chars=1000
    )
    assert "line 1" in message


def test_refusals_are_413_and_422() -> None:
    assert status_for(DocumentTooLarge("x", limit="max_line_chars")) == 413
    assert status_for(DocumentTooComplex("x", limit="max_xml_depth")) == 422
    assert DocumentTooLarge.code == "document_too_large"
    assert DocumentTooComplex.code == "document_too_complex"
