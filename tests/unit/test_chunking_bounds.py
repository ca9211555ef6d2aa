"""The chunker's documented bounds, each at its edge (tiny = max_words // 4, overlap budget).

These live beside tests/unit/ingest/test_chunking.py and pin the off-by-one mutants that
the example-based tests there leave alive (mutation/reports/chunking.md).
"""

from __future__ import annotations

import pytest

from ragtide.ingest.chunking import chunk_document
from ragtide.types import ParsedDocument, Section

VOCABULARY = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima".split()


def sentence(n: int, seed: int = 0) -> str:
    body = [VOCABULARY[(seed + i) % len(VOCABULARY)] for i in range(n)]
    return " ".join(body).capitalize() + "."


def doc(*sections: Section) -> ParsedDocument:
    return ParsedDocument(title="Doc", sections=sections)


@pytest.mark.parametrize(("small", "merged"), [(24, True), (25, False)])
def test_a_section_under_a_quarter_of_max_words_merges_and_one_at_it_does_not(
    small: int, merged: bool
) -> None:
    # max_words 100: "tiny" is under 25 words
    sections = (Section(sentence(40, 0), ("API",)), Section(sentence(small, 1), ("API", "Fields")))
    chunks = chunk_document(doc(*sections), "d", max_words=100, overlap_words=0)
    if merged:
        assert [c.text for c in chunks] == [f"{sentence(40, 0)}\n\nFields\n\n{sentence(small, 1)}"]
        assert chunks[0].headings == ("API",)
    else:
        assert [(c.headings, c.text) for c in chunks] == [(s.headings, s.text) for s in sections]


@pytest.mark.parametrize(("small", "merged"), [(24, True), (25, False)])
def test_a_tiny_group_takes_the_next_section_in(small: int, merged: bool) -> None:
    sections = (Section(sentence(small, 0), ("API",)), Section(sentence(40, 1), ("API", "Use")))
    chunks = chunk_document(doc(*sections), "d", max_words=100, overlap_words=0)
    assert len(chunks) == (1 if merged else 2)


def test_with_tiny_max_words_a_one_word_section_is_not_tiny() -> None:
    # max_words 3: max(1, 3 // 4) = 1, so no section (each has at least one word) is tiny
    sections = (Section("Alpha.", ("A",)), Section("Bravo.", ("A", "B")))
    chunks = chunk_document(doc(*sections), "d", max_words=3, overlap_words=0)
    assert [c.text for c in chunks] == ["Alpha.", "Bravo."]


def test_a_merge_needs_a_shared_path_at_most_one_level_up() -> None:
    # ("A", "B") and ("A", "C", "D"): the shared path ("A",) is two levels above the second
    sections = (Section(sentence(5, 0), ("A", "B")), Section(sentence(5, 1), ("A", "C", "D")))
    chunks = chunk_document(doc(*sections), "d", max_words=100, overlap_words=0)
    assert len(chunks) == 2
    siblings = (Section(sentence(5, 0), ("A", "B")), Section(sentence(5, 1), ("A", "C")))
    assert len(chunk_document(doc(*siblings), "d", max_words=100, overlap_words=0)) == 1


@pytest.mark.parametrize("overlap", [0, 29, 30, 31])
def test_overlap_takes_whole_sentences_up_to_exactly_the_budget(overlap: int) -> None:
    # ten-word sentences, 100 words a chunk: the overlap is floor(overlap / 10) sentences
    text = " ".join(sentence(10, s) for s in range(15))
    chunks = chunk_document(doc(Section(text)), "d", max_words=100, overlap_words=overlap)
    first = chunks[0].text.split(". ")
    carried = overlap // 10
    assert len(first) == 10
    if carried:
        assert chunks[1].text.startswith(" ".join(sentence(10, s) for s in range(10 - carried, 10)))
    assert chunks[1].text.startswith(sentence(10, 10 - carried))
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))


def test_sizes_are_checked_at_their_edges() -> None:
    one = doc(Section("Alpha bravo."))
    assert chunk_document(one, "d", max_words=1, overlap_words=0)
    with pytest.raises(ValueError):
        chunk_document(one, "d", max_words=0, overlap_words=0)
    with pytest.raises(ValueError):
        chunk_document(one, "d", max_words=5, overlap_words=5)
    with pytest.raises(ValueError):
        chunk_document(one, "d", max_words=5, overlap_words=-1)
    assert chunk_document(one, "d", max_words=5, overlap_words=4)


def test_defaults_are_200_words_and_a_40_word_overlap() -> None:
    text = " ".join(sentence(10, s) for s in range(25))
    chunks = chunk_document(doc(Section(text)), "d")
    assert len(chunks[0].text.split()) == 200
    assert chunks[1].text.startswith(" ".join(sentence(10, s) for s in range(16, 20)))
    assert not chunks[1].text.startswith(sentence(10, 15))


def _chunks(*sections: Section, max_words: int = 100) -> list[tuple[tuple[str, ...], str]]:
    chunks = chunk_document(doc(*sections), "d", max_words=max_words, overlap_words=0)
    return [(c.headings, c.text) for c in chunks]


def test_wordless_blocks_join_the_words_after_or_before_them() -> None:
    assert _chunks(Section("---\n\n***\n\nAlpha bravo charlie.")) == [
        ((), "---\n\n***\n\nAlpha bravo charlie.")
    ]
    assert _chunks(Section("Alpha bravo.\n\n---\n\n***")) == [((), "Alpha bravo.\n\n---\n\n***")]


def test_merged_sections_are_labelled_by_their_path_below_the_shared_one() -> None:
    sections = (
        Section("Alpha.", ("A", "B")),
        Section("Bravo.", ("A", "C")),
        Section("Charlie.", ("B",)),
    )
    assert _chunks(*sections) == [((), "A > B\n\nAlpha.\n\nA > C\n\nBravo.\n\nB\n\nCharlie.")]


def test_a_section_two_levels_below_does_not_merge_up() -> None:
    sections = (Section("Alpha.", ("A", "B", "C")), Section("Bravo.", ("A",)))
    assert _chunks(*sections) == [(("A", "B", "C"), "Alpha."), (("A",), "Bravo.")]


def test_long_code_is_cut_between_lines_and_each_piece_fenced() -> None:
    code = "```python\n" + "\n".join(f"x{i} = a b c" for i in range(6)) + "\n```"
    # 4 words a line, 9 words a piece (10 less the opener's one)
    assert [text for _, text in _chunks(Section(code), max_words=10)] == [
        f"```python\nx{i} = a b c\nx{i + 1} = a b c\n```" for i in (0, 2, 4)
    ]


def test_an_unclosed_code_block_is_cut_and_closed() -> None:
    code = "```\n" + "\n".join(f"w{i} w w w" for i in range(5))
    assert [text for _, text in _chunks(Section(code), max_words=10)] == [
        "```\nw0 w w w\nw1 w w w\n```",
        "```\nw2 w w w\nw3 w w w\n```",
        "```\nw4 w w w\n```",
    ]


def test_a_code_line_longer_than_a_piece_is_cut_between_words() -> None:
    code = "```\none two three four five six seven eight nine ten eleven twelve\n```"
    assert [text for _, text in _chunks(Section(code), max_words=5)] == [
        "```\none two three four five\n```",
        "```\nsix seven eight nine ten\n```",
        "```\neleven twelve\n```",
    ]
    assert _chunks(Section("```\none two three four\n```"), max_words=5) == [
        ((), "```\none two three four\n```")
    ]


def test_a_longer_closing_fence_closes_and_another_character_does_not() -> None:
    closed = "````\nalpha bravo\n````\n\nCharlie delta."
    assert _chunks(Section(closed)) == [((), closed)]
    tilde = "```\nalpha bravo\n~~~\ncharlie\n```"
    assert _chunks(Section(tilde)) == [((), tilde)]


@pytest.mark.parametrize(("per_line", "per_piece"), [(3, 3), (2, 4)])
def test_code_pieces_fill_exactly_the_budget_left_by_the_opener(
    per_line: int, per_piece: int
) -> None:
    # max_words 10, the opener "```python" has one word: 9 words of code a piece
    lines = [f"x{i} " + " ".join("v" for _ in range(per_line - 1)) for i in range(12)]
    code = "```python\n" + "\n".join(lines) + "\n```"
    pieces = [text for _, text in _chunks(Section(code), max_words=10)]
    expected = [lines[i : i + per_piece] for i in range(0, 12, per_piece)]
    assert pieces == ["```python\n" + "\n".join(p) + "\n```" for p in expected]


def test_a_piece_of_code_holds_at_least_one_word() -> None:
    # max_words 2 less the opener's word leaves 1: a word a piece
    pieces = [text for _, text in _chunks(Section("```python\nalpha bravo\n```"), max_words=2)]
    assert pieces == ["```python\nalpha\n```", "```python\nbravo\n```"]


def test_wordless_blocks_keep_their_own_separators() -> None:
    three = "---\n\n***\n\n___\n\nAlpha bravo."  # three leading blocks, then words
    assert _chunks(Section(three)) == [((), three)]
    after = "Alpha.\n\nBravo charlie.\n\n---"  # a trailing block after two paragraphs
    assert _chunks(Section(after)) == [((), after)]


def test_code_blocks_keep_their_indentation_and_last_characters() -> None:
    indented = "  ```\n  alpha bravo\n  ```"
    assert _chunks(Section(indented)) == [((), indented)]
    assert _chunks(Section("```\nvalue = X")) == [((), "```\nvalue = X")]


def test_default_sizes_counted_in_single_words() -> None:
    # one-word sentences: 200 a chunk, the next starting 40 back (not 201, not 41)
    text = " ".join(f"W{i}." for i in range(260))
    chunks = chunk_document(doc(Section(text)), "d")
    assert len(chunks[0].text.split()) == 200
    assert chunks[1].text.split()[0] == "W160."


def test_size_errors_say_what_was_wrong() -> None:
    one = doc(Section("Alpha."))
    with pytest.raises(ValueError, match=r"^max_words must be at least 1, got 0$"):
        chunk_document(one, "d", max_words=0, overlap_words=0)
    with pytest.raises(ValueError, match=r"^overlap_words must be in \[0, max_words\), got 5$"):
        chunk_document(one, "d", max_words=5, overlap_words=5)


def test_a_backtick_fence_with_a_backtick_after_it_is_text() -> None:
    # CommonMark: a ``` line whose info string holds a backtick opens no code block
    text = "``` inline ` tick\nalpha bravo charlie delta\n```"
    assert [t for _, t in _chunks(Section(text), max_words=3)] == [
        "``` inline ` tick alpha",
        "bravo charlie delta\n\n```",
    ]
    tilde = "~~~ a ` b\nalpha bravo charlie delta\n~~~"  # a tilde fence may have one
    assert [t for _, t in _chunks(Section(tilde), max_words=3)] == [
        f"~~~ a ` b\n{w}\n~~~" for w in ("alpha", "bravo", "charlie", "delta")
    ]


def test_code_blocks_end_at_their_closing_fence() -> None:
    assert _chunks(Section("```\n```\n\nAlpha bravo.")) == [((), "```\n```\n\nAlpha bravo.")]
    assert _chunks(Section("```\ncode here\n```\nAlpha bravo charlie.")) == [
        ((), "```\ncode here\n```\n\nAlpha bravo charlie.")
    ]


def test_tiny_is_a_whole_number_of_words() -> None:
    # max_words 10: tiny is under 10 // 4 = 2 words, so two-word sections stay apart
    sections = (Section("Alpha bravo.", ("A", "B")), Section("Charlie delta.", ("A", "C")))
    assert _chunks(*sections, max_words=10) == [
        (("A", "B"), "Alpha bravo."),
        (("A", "C"), "Charlie delta."),
    ]


def test_code_lines_that_fit_keep_their_spacing() -> None:
    code = "```\nx  =  1  2  3\ny = 4\n```"
    assert [t for _, t in _chunks(Section(code), max_words=4)] == [
        "```\nx  =  1  2  3\n```",
        "```\ny = 4\n```",
    ]


def test_an_empty_code_block_closes_on_the_next_line() -> None:
    text = "```\n```\nAlpha bravo charlie delta."
    assert [t for _, t in _chunks(Section(text), max_words=2)] == [
        "```\n```\n\nAlpha bravo",
        "charlie delta.",
    ]
