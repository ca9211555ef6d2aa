"""``Analyzer.terms`` lower-cases ASCII text whole before finding its words: the terms
are those of ``content_words`` (each word found, then lower-cased) stemmed, for any text."""

from __future__ import annotations

import pytest
import Stemmer
from hypothesis import given, settings
from hypothesis import strategies as st

from ragtide.builtin.analyzer import Analyzer
from ragtide.text import content_words

_STEMMER = Stemmer.Stemmer("english")


def _straightforward(text: str) -> list[str]:
    return list(_STEMMER.stemWords(content_words(text)))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Grey HERONS wade; The herons' nests, O'Neil's and d\u2019Arcy\u2019s. snake_case x2 3D",
        "The AND of It: IS the STOPWORD list lower-cased? YES",
        "İstanbul İS big",  # "İ" lower-cases to "i" and U+0307, no letter: not ASCII
        "AΣ.B ΟΔΟΣ ΣΑΣ",  # a final sigma depends on what follows the word
        "café CAFÉ naïve",
        "tab\tnew\nline\r\nend",
    ],
)
def test_terms_are_the_stemmed_content_words(text: str) -> None:
    assert Analyzer().terms(text) == _straightforward(text)


@settings(max_examples=300, deadline=None)
@given(
    st.text()
    | st.text(alphabet=st.characters(max_codepoint=127))
    | st.text(alphabet="aAbBzZ '\u2019_-.0\u0130\u03a3\u03c3 \n")
)
def test_any_text_gives_the_stemmed_content_words(text: str) -> None:
    assert Analyzer().terms(text) == _straightforward(text)
