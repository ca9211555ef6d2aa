from __future__ import annotations

import io
import json
import zipfile

import docx
import pytest
from reportlab.lib.pdfencrypt import StandardEncryption
from reportlab.pdfgen import canvas

from ragtide.errors import (
    CorruptDocument,
    DocumentRejected,
    EmptyDocument,
    PayloadTooLarge,
    RagtideError,
    UnsupportedMediaType,
)
from ragtide.ingest.parsers import SUPPORTED_EXTENSIONS, parse
from ragtide.types import ParsedDocument, Section


def one(filename: str, text: str | bytes) -> ParsedDocument:
    data = text.encode() if isinstance(text, str) else text
    [doc] = parse(filename, data)
    return doc


def rejected(error: type[RagtideError], filename: str, data: bytes, **kwargs: int) -> str:
    """Parse expecting ``error`` exactly; return its message after checking it names the file."""
    with pytest.raises(error) as caught:
        parse(filename, data, **kwargs)
    assert type(caught.value) is error
    message = caught.value.message
    assert filename.rsplit("/", 1)[-1] in message
    assert "\n" not in message
    return message


def make_pdf(
    pages: list[list[str]], *, title: str | None = None, encrypt: StandardEncryption | None = None
) -> bytes:
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, encrypt=encrypt)
    if title:
        pdf.setTitle(title)
    for lines in pages:
        for n, line in enumerate(lines):
            pdf.drawString(72, 750 - 14 * n, line)
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def make_docx(build: list[tuple[str, str]], *, core_title: str = "") -> bytes:
    """``build`` is (style, text) paragraphs; the style "table" adds a 2x2 table instead."""
    document = docx.Document()
    for style, text in build:
        if style == "table":
            table = document.add_table(rows=2, cols=2)
            for i, cell in enumerate(c for row in table.rows for c in row.cells):
                cell.text = text.split(",")[i]
        else:
            document.add_paragraph(text, style=style)
    document.core_properties.title = core_title
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


# --- dispatch and generic rejections --------------------------------------------------------


def test_supported_extensions() -> None:
    assert SUPPORTED_EXTENSIONS == {
        ".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx", ".jsonl"
    }  # fmt: skip


@pytest.mark.parametrize("filename", ["setup.exe", "archive.tar.gz", "Makefile", "notes.md.bak"])
def test_unknown_extension_is_unsupported(filename: str) -> None:
    message = rejected(UnsupportedMediaType, filename, b"hello")
    assert ".md" in message  # lists what is supported


def test_extension_is_case_insensitive_and_path_is_dropped() -> None:
    doc = one("docs/guide/NOTES.TXT", "Some notes.")
    assert doc.title == "NOTES"
    assert doc.sections == (Section("Some notes."),)


def test_over_max_bytes_is_too_large() -> None:
    message = rejected(PayloadTooLarge, "big.txt", b"x" * 11, max_bytes=10)
    assert "11 bytes" in message and "10-byte limit" in message
    assert parse("ok.txt", b"x" * 10, max_bytes=10)


@pytest.mark.parametrize("filename", sorted(f"empty{ext}" for ext in SUPPORTED_EXTENSIONS))
def test_zero_bytes_is_empty_for_every_format(filename: str) -> None:
    rejected(EmptyDocument, filename, b"")


# --- plain text and decoding -----------------------------------------------------------------


def test_txt_keeps_paragraphs_and_uses_the_stem_as_title() -> None:
    doc = one("release-notes.txt", "First paragraph.\r\nStill first.\r\n\r\nSecond one.\r\n")
    assert doc.title == "release-notes"
    assert doc.text == "First paragraph.\nStill first.\n\nSecond one."
    assert doc.id is None and doc.metadata == {}


def test_txt_utf8_bom_and_utf16_are_decoded() -> None:
    assert one("a.txt", b"\xef\xbb\xbfCaf\xc3\xa9 au lait.").text == "Café au lait."
    assert one("b.txt", "Ünïcode text.".encode("utf-16")).text == "Ünïcode text."


def test_txt_falls_back_to_cp1252_when_it_reads_as_text() -> None:
    assert one("legacy.txt", b"Caf\xe9 \x93quoted\x94 cr\xe8me.").text == "Café “quoted” crème."


@pytest.mark.parametrize(
    ("filename", "data"),
    [
        ("nul.txt", b"looks like text\x00\x00\x00 but has NUL bytes"),
        ("controls.md", b"\x01\x02\x03\x04\x05\x06 mostly controls \x07\x08\x0e\x0f\x10"),
        ("random.txt", bytes(range(256)) * 4),
        ("image.md", b"\x89PNG\r\n\x1a\n" + bytes(range(128, 256)) * 8),
        ("binary.html", b"<html>\x00\x01\x02</html>"),
    ],
)
def test_binary_bytes_in_a_text_format_are_corrupt(filename: str, data: bytes) -> None:
    rejected(CorruptDocument, filename, data)


def test_whitespace_only_text_is_empty() -> None:
    rejected(EmptyDocument, "blank.txt", b"  \n\t\n ")


# --- markdown --------------------------------------------------------------------------------

K8S_STYLE = """\
---
reviewers:
- someone
title: "Pods: the basics"
weight: 10
---

<!-- overview -->

_Pods_ are the smallest deployable units. A Pod holds one or more
{{< glossary_tooltip text="containers" term_id="container" >}} that share a
{{< glossary_tooltip term_id="network" >}}.

## {{% heading "prerequisites" %}}

{{< include "task-tutorial-prereqs.md" >}} {{< version-check >}}

## Using Pods

{{< note >}}
You need a [container runtime](/docs/setup/runtimes/ "Runtimes") on each node.
{{< /note >}}

See ![a diagram](/images/pod.svg) and the [reference][ref] for details.

[ref]: https://kubernetes.io/docs/reference/

### Workload resources

```shell
# not a heading: a shell comment
kubectl apply -f https://k8s.io/examples/pods/simple-pod.yaml

kubectl get pods -o wide
```

{{< comment >}}
Internal note that must not be indexed.
{{< /comment >}}

Text with &lt;angle&gt; entities &amp; a <b>bold</b> word.<br>
"""


def test_markdown_front_matter_title_and_heading_paths() -> None:
    doc = one("pods.md", K8S_STYLE)
    assert doc.title == "Pods: the basics"
    assert [s.headings for s in doc.sections] == [
        (),
        ("Using Pods",),
        ("Using Pods", "Workload resources"),
    ]  # the prerequisites section holds only shortcodes, so it has no text
    assert "reviewers" not in doc.text and "weight" not in doc.text


def test_markdown_shortcodes_give_way_to_their_prose() -> None:
    doc = one("pods.md", K8S_STYLE)
    intro, using, _ = doc.sections
    assert intro.text == (
        "_Pods_ are the smallest deployable units. A Pod holds one or more\n"
        "containers that share a\nnetwork."
    )
    assert using.text.startswith("You need a container runtime on each node.")
    assert "{{" not in doc.text and "}}" not in doc.text
    assert "Internal note" not in doc.text
    assert "overview" not in doc.text


def test_markdown_links_images_and_html_become_text() -> None:
    doc = one("pods.md", K8S_STYLE)
    assert "See a diagram and the reference for details." in doc.text
    assert "https://kubernetes.io/docs/reference" not in doc.text
    assert "/docs/setup" not in doc.text
    assert "Text with <angle> entities & a bold word." in doc.text


def test_markdown_code_blocks_are_kept_verbatim() -> None:
    doc = one("pods.md", K8S_STYLE)
    assert (
        "```shell\n# not a heading: a shell comment\n"
        "kubectl apply -f https://k8s.io/examples/pods/simple-pod.yaml\n\n"
        "kubectl get pods -o wide\n```"
    ) in doc.sections[2].text


def test_markdown_heading_shortcode_is_a_heading() -> None:
    doc = one("task.md", '## {{% heading "whatsnext" %}}\n\n* Read more.\n')
    assert doc.sections == (Section("* Read more.", ("What's next",)),)


def test_markdown_title_falls_back_to_first_h1_then_the_stem() -> None:
    doc = one("guide.md", "# The Guide\n\nIntro.\n\n## Install\n\nSteps.\n")
    assert doc.title == "The Guide"
    assert [s.headings for s in doc.sections] == [(), ("Install",)]  # title not repeated
    assert one("no-headings.markdown", "Just text.").title == "no-headings"


def test_markdown_nested_headings_pop_correctly() -> None:
    text = "# Concepts\n\n## Pods\n\nA.\n\n### Lifecycle\n\nB.\n\n## Nodes\n\nC.\n\n# Tasks\n\nD.\n"
    doc = one("book.md", "---\ntitle: Book\n---\n" + text)
    assert [(s.headings, s.text) for s in doc.sections] == [
        (("Concepts", "Pods"), "A."),
        (("Concepts", "Pods", "Lifecycle"), "B."),
        (("Concepts", "Nodes"), "C."),
        (("Tasks",), "D."),
    ]


def test_markdown_setext_headings_rules_and_tables() -> None:
    text = (
        "Overview\n========\n\nIntro.\n\n---\n\nDetails\n-------\n\n"
        "Name | Value\n:--- | ---\nalpha | 1\n"
    )
    doc = one("s.md", text)
    assert doc.title == "Overview"
    assert doc.sections == (Section("Intro."), Section("| Name | Value\n| alpha | 1", ("Details",)))


def test_markdown_toml_front_matter_and_broken_yaml() -> None:
    assert one("t.md", '+++\ntitle = "From TOML"\n+++\nBody.').title == "From TOML"
    assert one("y.md", "---\ntitle: Still Found\nbad: [unclosed\n---\nBody.").title == "Still Found"


def test_markdown_escaped_shortcode_is_shown_literally() -> None:
    doc = one(
        "howto.md", "Write it like this:\n\n```\n{{</* note */>}}\nHi\n{{</* /note */>}}\n```\n"
    )
    assert "```\n{{< note >}}\nHi\n{{< /note >}}\n```" in doc.text


def test_markdown_mermaid_is_a_code_block_and_links_may_wrap() -> None:
    text = (
        "See [the guide](\n/docs/guide/) first.\n\n"
        "{{< mermaid >}}\ngraph TD;\n  A-->B;\n{{</ mermaid >}}\nFigure 1. [A](#a) to B.\n"
    )
    assert one("flow.md", text).text == (
        "See the guide first.\n\n```mermaid\ngraph TD;\n  A-->B;\n```\n\nFigure 1. A to B."
    )


def test_markdown_with_only_front_matter_is_empty() -> None:
    rejected(EmptyDocument, "_index.md", b"---\ntitle: Section index\nweight: 3\n---\n")


def test_markdown_front_matter_description_is_the_lead_paragraph() -> None:
    index = one(
        "_index.md", "---\ntitle: Storage\ndescription: >\n  Ways to provide\n  volumes.\n---\n"
    )
    assert index.title == "Storage" and index.sections == (Section("Ways to provide volumes."),)
    page = one("p.md", '+++\ntitle = "T"\ndescription = "Summary."\n+++\n# T\n\nBody.\n')
    assert page.text.startswith("Summary.") and "Body." in page.text
    assert one("n.md", "---\ntitle: N\ndescription: [not, text]\n---\nBody.").text == "Body."


# --- html ------------------------------------------------------------------------------------

PAGE = """<!DOCTYPE html>
<html><head><title>Install &amp; Configure</title>
<style>body { color: red }</style><script>var skipped = 1;</script></head>
<body>
<header>Site header</header><nav><a href="/">Home</a></nav>
<p>Welcome to the &ldquo;guide&rdquo;.</p>
<h1>Install &amp; Configure</h1>
<h2>Linux</h2>
<p>Run the   installer.
It works.</p>
<ul><li>Fast</li><li>Safe</li></ul>
<pre>make install
  --prefix=/usr</pre>
<h3>Debian</h3><p>Use apt.</p>
<h2>Windows</h2><table><tr><th>Step</th><th>Action</th></tr><tr><td>1</td><td>Click</td></tr></table>
<footer>Copyright</footer>
</body></html>"""


def test_html_title_sections_and_dropped_chrome() -> None:
    doc = one("install.html", PAGE)
    assert doc.title == "Install & Configure"
    assert [s.headings for s in doc.sections] == [
        (),
        ("Linux",),
        ("Linux", "Debian"),
        ("Windows",),
    ]
    for chrome in ("Site header", "Home", "Copyright", "skipped", "color"):
        assert chrome not in doc.text


def test_html_text_lists_code_and_tables() -> None:
    intro, linux, debian, windows = one("install.htm", PAGE).sections
    assert intro.text == "Welcome to the “guide”."
    assert linux.text == (
        "Run the installer. It works.\n\n- Fast\n- Safe\n\n```\nmake install\n  --prefix=/usr\n```"
    )
    assert debian.text == "Use apt."
    assert windows.text == "| Step | Action |\n| 1 | Click |"


def test_html_title_falls_back_to_h1_and_front_matter_wins() -> None:
    assert one("a.html", "<h1>Heading One</h1><p>Body.</p>").title == "Heading One"
    assert one("b.html", "---\ntitle: From Front Matter\n---\n<p>Body.</p>").title == (
        "From Front Matter"
    )
    assert one("c.html", "<p>Body only.</p>").title == "c"


def test_html_without_text_is_empty() -> None:
    rejected(EmptyDocument, "blank.html", b"<html><script>x()</script><nav>Menu</nav></html>")


# --- pdf -------------------------------------------------------------------------------------


def test_pdf_text_of_every_page_with_metadata_title() -> None:
    data = make_pdf(
        [["First page. It ends here."], ["The second page runs on"], ["to the third."]],
        title="Annual Report",
    )
    doc = one("report.pdf", data)
    assert doc.title == "Annual Report"
    # a page ending mid-sentence continues on the next line, not in a new paragraph
    assert doc.text == "First page. It ends here.\n\nThe second page runs on\nto the third."


def test_pdf_without_metadata_title_uses_the_stem() -> None:
    assert one("scan-2024.PDF", make_pdf([["Hello."]])).title == "scan-2024"


def test_pdf_without_text_is_empty_with_a_scan_hint() -> None:
    message = rejected(EmptyDocument, "scan.pdf", make_pdf([[], []]))
    assert "scanned" in message


@pytest.mark.parametrize(
    "data",
    [b"%PDF-1.4\nnot really a pdf", b"plain text with a pdf name", make_pdf([["Cut."]])[:200]],
)
def test_pdf_that_does_not_open_is_corrupt(data: bytes) -> None:
    rejected(CorruptDocument, "broken.pdf", data)


def test_pdf_with_a_user_password_is_rejected() -> None:
    locked = make_pdf([["Secret."]], encrypt=StandardEncryption("user", ownerPassword="owner"))
    assert "password" in rejected(DocumentRejected, "locked.pdf", locked)


def test_pdf_with_only_an_owner_password_opens() -> None:
    data = make_pdf([["Readable text."]], encrypt=StandardEncryption("", ownerPassword="owner"))
    assert one("restricted.pdf", data).text == "Readable text."


# --- docx ------------------------------------------------------------------------------------


def test_docx_title_heading_sections_lists_and_tables() -> None:
    data = make_docx(
        [
            ("Title", "Quarterly Report"),
            ("Normal", "Intro before any heading."),
            ("Heading 1", "Revenue"),
            ("Normal", "Revenue grew."),
            ("Heading 2", "By region"),
            ("List Bullet", "North"),
            ("List Bullet", "South"),
            ("table", "Region,Sales,North,10"),
            ("Heading 1", "Costs"),
            ("Normal", "Costs fell."),
        ],
        core_title="Ignored core title",
    )
    doc = one("q3.docx", data)
    assert doc.title == "Quarterly Report"
    assert doc.sections == (
        Section("Intro before any heading."),
        Section("Revenue grew.", ("Revenue",)),
        Section("- North\n- South\n\n| Region | Sales |\n| North | 10 |", ("Revenue", "By region")),
        Section("Costs fell.", ("Costs",)),
    )


def test_docx_title_falls_back_to_core_properties_then_h1_then_stem() -> None:
    body = [("Heading 1", "First Heading"), ("Normal", "Text.")]
    assert one("a.docx", make_docx(body, core_title="Core Title")).title == "Core Title"
    assert one("b.docx", make_docx(body)).title == "First Heading"
    assert one("c.docx", make_docx([("Normal", "Text.")])).title == "c"


def test_docx_without_text_is_empty() -> None:
    rejected(EmptyDocument, "blank.docx", make_docx([("Normal", "  ")]))


def _zip(**files: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "data",
    [
        b"not a zip at all",
        b"PK\x03\x04truncated",
        _zip(**{"readme.txt": "a zip, but not a docx"}),
        make_docx([("Normal", "Cut short.")])[:500],
    ],
)
def test_docx_that_does_not_open_is_corrupt(data: bytes) -> None:
    rejected(CorruptDocument, "broken.docx", data)


# --- jsonl -----------------------------------------------------------------------------------


def jsonl(*records: object) -> bytes:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records).encode()


def test_jsonl_one_document_per_line() -> None:
    data = jsonl(
        {"_id": "4983", "title": "Microstructure", "text": "Alterations of white matter."},
        "",
        {"_id": 17, "text": "No title here.", "source": "pubmed", "year": 2004},
    )
    first, second = parse("corpus.jsonl", data)
    assert (first.id, first.title, first.text, first.metadata) == (
        "4983", "Microstructure", "Alterations of white matter.", {}
    )  # fmt: skip
    assert (second.id, second.title, second.text) == ("17", "", "No title here.")
    assert second.metadata == {"source": "pubmed", "year": 2004}


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"_id": "b", "text": "unterminated', "invalid JSON"),
        ('["_id", "text"]', "expected a JSON object, got list"),
        ('"just a string"', "expected a JSON object, got str"),
        ('{"_id": "b"}', '"text" is missing'),
        ('{"_id": "b", "text": "   "}', '"text" is missing, empty'),
        ('{"_id": "b", "text": 42}', "not a string"),
        ('{"text": "no id"}', '"_id" must be'),
        ('{"_id": true, "text": "bool id"}', '"_id" must be'),
        ('{"_id": "b", "title": ["x"], "text": "t"}', '"title" must be a string'),
        ('{"_id": "a", "text": "again"}', "duplicate \"_id\" 'a' (first on line 1)"),
    ],
)
def test_jsonl_bad_line_rejects_the_file_naming_the_line(line: str, reason: str) -> None:
    data = jsonl({"_id": "a", "text": "Fine."}, "", line, {"_id": "c", "text": "Also fine."})
    message = rejected(CorruptDocument, "data.jsonl", data)
    assert message.startswith("data.jsonl line 3: ")
    assert reason in message


def test_jsonl_with_only_blank_lines_is_empty() -> None:
    rejected(EmptyDocument, "nothing.jsonl", b"\n  \n\n")
