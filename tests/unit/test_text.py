from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ragtide.text import content_words, passage_sentences, split_sentences, stem, words


def test_words_and_content_words() -> None:
    assert words("The Pod's CPU-limit is 2!") == ["the", "pod's", "cpu", "limit", "is", "2"]
    assert content_words("What is the limit of a Pod?") == ["limit", "pod"]


def test_sentences_keep_abbreviations_and_initials() -> None:
    text = "See e.g. the docs. J. Smith wrote it! Is 3.5 big? Yes (it is). Fig. 2 shows it"
    assert split_sentences(text) == [
        "See e.g. the docs.",
        "J. Smith wrote it!",
        "Is 3.5 big?",
        "Yes (it is).",
        "Fig. 2 shows it",
    ]


def test_sentences_starting_with_punctuation() -> None:
    assert split_sentences("... Hello there. ? Yes.")[-1] == "Yes."


@given(st.text())
def test_split_never_loses_words(text: str) -> None:
    assert words(" ".join(split_sentences(text))) == words(text)


def test_sentences_survive_code_urls_and_decimals() -> None:
    text = (
        "Run `ragtide ingest ./docs. Now` first. See http://x.org/a.b/C. Then it rose 3.5% "
        "in v2.0. The U.S. Army won. Call `foo()`. `bar` works."
    )
    assert split_sentences(text) == [
        "Run `ragtide ingest ./docs. Now` first.",
        "See http://x.org/a.b/C.",
        "Then it rose 3.5% in v2.0.",
        "The U.S. Army won.",
        "Call `foo()`.",
        "`bar` works.",
    ]


def test_passage_sentences_set_headings_code_and_lists_apart() -> None:
    text = (
        "Office Guide\n\nBuilding access\n\nThe office opens at 8. Badges work.\n\n"
        "- Bring a badge.\n- Sign in\n\n| day | hours |\n|---|---|\n| Mon | 8-5 |\n\n"
        "```\nbadge --print\n```\n\n## Parking\n\nUse level 2."
    )
    got = [(s.kind, s.text) for s in passage_sentences(text)]
    assert got == [
        ("heading", "Office Guide"),
        ("heading", "Building access"),
        ("sentence", "The office opens at 8."),
        ("sentence", "Badges work."),
        ("item", "Bring a badge."),
        ("item", "Sign in"),
        ("item", "day; hours"),
        ("item", "Mon; 8-5"),
        ("code", "```\nbadge --print\n```"),
        ("heading", "Parking"),
        ("sentence", "Use level 2."),
    ]


def test_a_sentence_that_is_mostly_a_command_is_code() -> None:
    kinds = [s.kind for s in passage_sentences("Then: `curl -s localhost:8000/v1/chat -d x`.")]
    assert kinds == ["code"]


def test_a_lone_short_paragraph_is_not_a_heading() -> None:
    assert [s.kind for s in passage_sentences("Short text")] == ["sentence"]


def test_stem_folds_suffixes() -> None:
    assert stem("owns") == stem("owned") == "own"
    assert stem("running") == "run"


@given(
    st.text()
    | st.text(alphabet=st.characters(max_codepoint=127))
    | st.text(alphabet="aAbBzZ '\u2019_-.0\u0130\u03a3\u03c3 \n")
)
def test_words_are_each_word_found_then_lower_cased(text: str) -> None:
    # ASCII text is lower-cased whole first: the same words, one call.
    from ragtide.text import _WORD

    assert words(text) == [w.lower() for w in _WORD.findall(text)]
