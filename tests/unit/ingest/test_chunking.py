from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragtide.ingest.chunking import chunk_document
from ragtide.text import count_words, words
from ragtide.types import Chunk, ParsedDocument, Section

VOCABULARY = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
    "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu"
).split()


def sentence(n: int, seed: int = 0) -> str:
    """A sentence of exactly ``n`` words that split_sentences treats as one."""
    body = [VOCABULARY[(seed + i) % len(VOCABULARY)] for i in range(n)]
    return " ".join(body).capitalize() + "."


def doc(*sections: Section, title: str = "Doc", **metadata: object) -> ParsedDocument:
    return ParsedDocument(title=title, sections=sections, metadata=metadata)


def flat(text: str) -> str:
    return " ".join(text.split())


def count(chunk: Chunk) -> int:
    return len(words(chunk.text))


# --- identity and fields -------------------------------------------------------------------


def test_ids_ordinals_title_headings_and_metadata() -> None:
    source = doc(
        Section(" ".join(sentence(30, s) for s in range(8)), ("Guide", "Install")),
        title="Handbook",
        lang="en",
        acl_groups=["staff"],
    )
    chunks = chunk_document(source, "kb/handbook.md", max_words=100, overlap_words=20)
    assert len(chunks) > 1
    for n, chunk in enumerate(chunks):
        assert chunk.id == f"kb/handbook.md#{n}"
        assert (chunk.document_id, chunk.ordinal) == ("kb/handbook.md", n)
        assert chunk.title == "Handbook"
        assert chunk.headings == ("Guide", "Install")
        assert chunk.metadata == {"lang": "en", "acl_groups": ["staff"]}
        assert chunk.metadata is not source.metadata


def test_title_is_not_repeated_in_the_text() -> None:
    [chunk] = chunk_document(doc(Section("Body text."), title="Special Title"), "d")
    assert chunk.text == "Body text."


def test_empty_document_has_no_chunks() -> None:
    assert chunk_document(doc(), "d") == []
    assert chunk_document(doc(Section("  \n\n ")), "d") == []


@pytest.mark.parametrize(("max_words", "overlap_words"), [(0, 0), (10, 10), (10, -1), (5, 8)])
def test_bad_sizes_are_a_programming_error(max_words: int, overlap_words: int) -> None:
    with pytest.raises(ValueError):
        chunk_document(doc(Section("Text.")), "d", max_words=max_words, overlap_words=overlap_words)


# --- sentences and overlap ------------------------------------------------------------------


def test_chunks_break_between_sentences() -> None:
    sentences = [sentence(12, s) for s in range(10)]
    chunks = chunk_document(doc(Section(" ".join(sentences))), "d", max_words=40, overlap_words=0)
    assert [c.text for c in chunks] == [
        " ".join(sentences[0:3]),
        " ".join(sentences[3:6]),
        " ".join(sentences[6:9]),
        sentences[9],
    ]


def test_overlap_repeats_whole_trailing_sentences_up_to_the_budget() -> None:
    sentences = [sentence(n, s) for s, n in enumerate([15, 15, 10, 6, 15, 15, 15])]
    chunks = chunk_document(doc(Section(" ".join(sentences))), "d", max_words=50, overlap_words=15)
    assert (
        [c.text for c in chunks]
        == [
            " ".join(sentences[0:4]),  # 46 words
            " ".join(sentences[3:6]),  # starts with the 6-word sentence: 10 + 6 is over 15
            " ".join(sentences[5:7]),  # starts with one 15-word sentence: the whole budget
        ]
    )


def test_overlap_gives_way_when_the_next_sentence_needs_the_room() -> None:
    sentences = [sentence(20, 0), sentence(10, 1), sentence(45, 2)]
    chunks = chunk_document(doc(Section(" ".join(sentences))), "d", max_words=50, overlap_words=15)
    assert [c.text for c in chunks] == [" ".join(sentences[:2]), sentences[2]]


def test_sentence_longer_than_max_words_is_cut_between_words() -> None:
    long = sentence(25)
    chunks = chunk_document(doc(Section(long)), "d", max_words=10, overlap_words=0)
    assert [count(c) for c in chunks] == [10, 10, 5]
    assert flat(" ".join(c.text for c in chunks)) == long


def test_abbreviations_do_not_end_a_sentence() -> None:
    text = "Use a tool, e.g. Kubectl for this task. Then stop."
    chunks = chunk_document(doc(Section(text)), "d", max_words=9, overlap_words=0)
    assert [c.text for c in chunks] == ["Use a tool, e.g. Kubectl for this task.", "Then stop."]


# --- structure: paragraphs, lists, code -------------------------------------------------------


def test_paragraphs_and_list_items_keep_their_line_structure() -> None:
    text = "Intro line one\ncontinues here.\n\n- First item.\n- Second item\n  wraps.\n1. Numbered."
    [chunk] = chunk_document(doc(Section(text)), "d")
    assert chunk.text == (
        "Intro line one continues here.\n\n- First item.\n- Second item wraps.\n1. Numbered."
    )


def test_code_block_is_never_split_when_it_fits() -> None:
    code = "```yaml\napiVersion: v1\nkind: Pod\n\nmetadata:\n  name: web\n```"
    text = f"{sentence(20, 0)}\n\n{code}\n\n{sentence(20, 1)}"
    chunks = chunk_document(doc(Section(text)), "d", max_words=25, overlap_words=0)
    assert [c.text for c in chunks] == [sentence(20, 0), code, sentence(20, 1)]


def test_code_block_over_max_words_is_cut_between_lines_and_refenced() -> None:
    lines = [f"echo step{n} done" for n in range(12)]  # 3 words a line
    code = "```shell\n" + "\n".join(lines) + "\n```"
    chunks = chunk_document(doc(Section(code)), "d", max_words=10, overlap_words=0)
    assert all(c.text.startswith("```shell\n") and c.text.endswith("\n```") for c in chunks)
    assert all(count(c) <= 10 for c in chunks)
    body = [line for c in chunks for line in c.text.split("\n")[1:-1]]
    assert body == lines


def test_wordless_blocks_stay_with_their_neighbours() -> None:
    text = f"{sentence(5)}\n\n```\n{{}}\n```\n\n---"
    [chunk] = chunk_document(doc(Section(text)), "d", max_words=5, overlap_words=0)
    assert chunk.text == f"{sentence(5)}\n\n```\n{{}}\n```\n\n---"


def test_text_opening_with_bare_punctuation_is_chunked() -> None:
    [chunk] = chunk_document(doc(Section("...\n\n? Odd start. Then more.")), "d")
    assert chunk.text == "...\n\n? Odd start. Then more."


# --- sections -----------------------------------------------------------------------------------


def test_chunks_do_not_span_sections_of_normal_size() -> None:
    sections = [
        Section(sentence(30, 0), ("Install",)),
        Section(sentence(30, 1), ("Install", "Linux")),
        Section(sentence(30, 2), ("Configure",)),
    ]
    chunks = chunk_document(doc(*sections), "d", max_words=100, overlap_words=10)
    assert [(c.headings, c.text) for c in chunks] == [(s.headings, s.text) for s in sections]


def test_tiny_sibling_sections_merge_under_their_parent() -> None:
    sections = [
        Section(sentence(8, 0), ("API",)),
        Section(sentence(10, 1), ("API", "Fields")),
        Section(sentence(10, 2), ("API", "Status")),
        Section(sentence(40, 3), ("Usage",)),
    ]
    chunks = chunk_document(doc(*sections), "d", max_words=100, overlap_words=0)
    assert chunks[0].headings == ("API",)
    assert chunks[0].text == (
        f"{sentence(8, 0)}\n\nFields\n\n{sentence(10, 1)}\n\nStatus\n\n{sentence(10, 2)}"
    )
    assert (chunks[1].headings, chunks[1].text) == (("Usage",), sentence(40, 3))


def test_tiny_section_joins_a_large_neighbour_without_exceeding_max_words() -> None:
    sections = [
        Section(" ".join(sentence(20, s) for s in range(4)), ("Guide",)),
        Section(sentence(6, 9), ("What's next",)),
    ]
    chunks = chunk_document(doc(*sections), "d", max_words=50, overlap_words=0)
    assert [c.headings for c in chunks] == [("Guide",), ()]
    assert chunks[-1].text.endswith(f"What's next\n\n{sentence(6, 9)}")
    assert all(count(c) <= 50 for c in chunks)


def test_tiny_sections_in_different_branches_do_not_merge() -> None:
    sections = [
        Section(sentence(5, 0), ("A", "Deep", "Deeper")),
        Section(sentence(5, 1), ("B",)),
    ]
    chunks = chunk_document(doc(*sections), "d", max_words=100, overlap_words=0)
    assert [(c.headings, c.text) for c in chunks] == [(s.headings, s.text) for s in sections]


# --- properties ---------------------------------------------------------------------------------


@st.composite
def documents(draw: st.DrawFn) -> tuple[ParsedDocument, list[str], int, int]:
    max_words = draw(st.integers(4, 60))
    overlap_words = draw(st.integers(0, max_words - 1))
    paths = st.lists(st.sampled_from(["Intro", "Setup", "Usage"]), max_size=3).map(tuple)
    sentences: list[str] = []
    sections = []
    for _ in range(draw(st.integers(1, 5))):
        paragraphs = []
        for _ in range(draw(st.integers(1, 3))):
            lengths = draw(st.lists(st.integers(1, 2 * max_words), min_size=1, max_size=6))
            seeds = draw(st.lists(st.integers(0, 25), min_size=len(lengths), max_size=len(lengths)))
            batch = [sentence(n, seed) for n, seed in zip(lengths, seeds, strict=True)]
            sentences.extend(batch)
            paragraphs.append(" ".join(batch))
        sections.append(Section("\n\n".join(paragraphs), draw(paths)))
    return doc(*sections), sentences, max_words, overlap_words


def covered(text: str, chunk_texts: str) -> bool:
    """Is ``text`` inside one chunk, or (if it had to be cut) in consecutive pieces of some?"""
    tokens = text.split()
    start = 0
    while start < len(tokens):
        end = len(tokens)
        while end > start and f" {' '.join(tokens[start:end])} " not in chunk_texts:
            end -= 1
        if end == start:
            return False
        start = end
    return True


@settings(max_examples=100, deadline=None)
@given(documents())
def test_chunking_properties(case: tuple[ParsedDocument, list[str], int, int]) -> None:
    source, sentences, max_words, overlap_words = case
    chunks = chunk_document(source, "doc", max_words=max_words, overlap_words=overlap_words)
    texts = "\0".join(f" {flat(c.text)} " for c in chunks)  # NUL: no match spans two chunks

    # every sentence appears; whole unless it alone is longer than max_words
    for s in sentences:
        if len(words(s)) <= max_words:
            assert f" {s} " in texts, s
        else:
            assert covered(s, texts), s
    # no chunk is over max_words (every word here is a separate token, so none has to be)
    assert all(count(c) <= max_words for c in chunks)
    # ordinals are contiguous and ids follow them
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert [c.id for c in chunks] == [f"doc#{n}" for n in range(len(chunks))]
    # a chunk's headings are a heading path of the document or a prefix of one
    paths = [s.headings for s in source.sections]
    assert all(any(p[: len(c.headings)] == c.headings for p in paths) for c in chunks)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 30), min_size=1, max_size=30), st.integers(10, 50))
def test_overlap_property(lengths: list[int], max_words: int) -> None:
    overlap_words = max_words // 3
    text = " ".join(sentence(n, i) for i, n in enumerate(lengths))
    chunks = chunk_document(doc(Section(text)), "d", max_words=max_words, overlap_words=0)
    overlapped = chunk_document(
        doc(Section(text)), "d", max_words=max_words, overlap_words=overlap_words
    )
    # without overlap, chunks partition the text exactly
    assert " ".join(c.text for c in chunks) == text
    # with it, each chunk begins with at most overlap_words of the previous chunk's tail
    for before, after in itertools.pairwise(overlapped):
        shared = 0
        for size in range(min(len(before.text), len(after.text)), 0, -1):
            if before.text.endswith(after.text[:size]):
                shared = len(words(after.text[:size]))
                break
        assert shared <= overlap_words


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.text(st.sampled_from("ab Zy.?!…\"')]\n\n-*|`~{}1 ")).filter(bool), min_size=1, max_size=4
    ),
    st.integers(1, 12),
)
def test_any_text_is_chunked_without_losing_words(texts: list[str], max_words: int) -> None:
    source = doc(*(Section(t, ("H", str(n % 2))) for n, t in enumerate(texts)))
    chunks = chunk_document(source, "d", max_words=max_words, overlap_words=max_words // 2)
    produced = Counter(w for c in chunks for w in words(c.text))
    assert not Counter(words(source.text)) - produced


@settings(max_examples=200, deadline=None)
@given(st.text() | st.text(alphabet="aAB '\u2019_-.0\u0130\u03a3 \n`"))
def test_words_are_counted_as_words_finds_them(text: str) -> None:
    assert count_words(text) == len(words(text))
