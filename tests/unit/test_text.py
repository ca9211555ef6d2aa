from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ragtide.text import content_words, split_sentences, words


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
