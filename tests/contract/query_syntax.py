"""What the contract's ``test_query_syntax_is_not_interpreted`` only says "must not raise"
about: query syntax is taken as plain words, so it neither fails, nor filters, nor finds
what its words do not.

The contract lives in ``ragtide.testing.contracts`` (shipped with the package); these
checks are mixed into each store's contract class here until it asserts them itself.
"""

from __future__ import annotations

import pytest

from ragtide.components import DocumentStore
from ragtide.types import Filter


class QuerySyntaxIsPlainWords:
    _put: object  # DocumentStoreContract._put

    @pytest.mark.anyio
    async def test_query_syntax_is_matched_as_plain_words(self, store: DocumentStore) -> None:
        put = self._put
        await put(store, "ns", "d", ["quotes and stars"], [[1, 0]])  # type: ignore[operator]
        await put(store, "ns", "e", ["tables of values"], [[0, 1]])  # type: ignore[operator]

        async def found(text: str) -> list[str]:
            return [h.document_id for h in await store.keyword_search("ns", text, 5, Filter())]

        # operators of FTS5, tsquery and Lucene are not operators here: their words count
        assert await found('"quotes') == ["d"]
        assert await found("stars*") == ["d"]
        assert await found("NEAR(quotes stars)") == ["d"]
        assert await found("-quotes") == ["d"]  # not a negation
        assert sorted(await found("quotes OR values")) == ["d", "e"]
        assert sorted(await found("quotes AND values")) == ["d", "e"]  # not a conjunction
        assert await found("col:value") == ["e"]  # "value" is a word, "col:" no column
        assert await found("()") == [] and await found("*") == []
        # an injection attempt is a query for its words; the tables are intact afterwards
        assert await found("'; DROP TABLE chunks; --") == ["e"]
        assert sorted(await found("quotes values")) == ["d", "e"]
