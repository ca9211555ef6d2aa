"""The ingestion defaults the README documents, seen through the API: chunks of at most
200 words whose successor repeats whole trailing sentences, up to 40 words."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.api.conftest import upload

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima".split()


def _sentence(i: int) -> str:
    # ten words: a numbered marker plus nine vocabulary words, so every sentence is distinct
    return f"Marker{i} " + " ".join(WORDS[(i + j) % len(WORDS)] for j in range(9)) + "."


def test_uploaded_text_is_chunked_at_200_words_with_a_40_word_overlap(
    client: TestClient,
) -> None:
    text = " ".join(_sentence(i) for i in range(30))
    r = upload(client, "kb", "long.txt", text.encode())
    assert r.status_code == 201, r.text  # type: ignore[attr-defined]
    found = client.post("/v1/namespaces/kb/search", json={"query": "alpha bravo", "top_k": 10})
    chunks = {h["chunk_id"]: h["text"] for h in found.json()["results"]}
    assert set(chunks) == {"long.txt#0", "long.txt#1"}
    first, second = chunks["long.txt#0"], chunks["long.txt#1"]
    assert first == " ".join(_sentence(i) for i in range(20))  # 200 words
    # the overlap: the last four sentences (40 words) of the first chunk, no more, no less
    assert second == " ".join(_sentence(i) for i in range(16, 30))
