"""``Analyzer.terms``: each word found, then lower-cased, stopwords dropped, stemmed, for
any text (``ragtide.text.words`` lower-cases ASCII text whole first: the same words)."""

from __future__ import annotations

import pytest
import Stemmer
from hypothesis import given, settings
from hypothesis import strategies as st

from ragtide.builtin.analyzer import Analyzer
from ragtide.text import _WORD, STOPWORDS

_STEMMER = Stemmer.Stemmer("english")


def _straightforward(text: str) -> list[str]:
    found = [w.lower() for w in _WORD.findall(text)]
    return list(_STEMMER.stemWords([w for w in found if w not in STOPWORDS]))


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
