"""Fakes that implement the role protocols, for tests of code that uses them."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence

from pydantic import BaseModel

from ragtide.types import Chunk, DocumentInfo, Prompt, Reply

__all__ = ["FakeChatModel", "make_chunks", "make_document"]


class FakeChatModel:
    """Replies with the given texts in turn (the last one repeats) and records prompts."""

    class Config(BaseModel):
        replies: list[str] = ["ok [1]"]

    def __init__(self, config: Config | None = None, *, replies: Sequence[str] = ()) -> None:
        self._replies = list(replies) or list((config or self.Config()).replies)
        self.prompts: list[Prompt] = []

    @property
    def model_id(self) -> str:
        return "fake"

    def _next(self, prompt: Prompt) -> str:
        self.prompts.append(prompt)
        return self._replies.pop(0) if len(self._replies) > 1 else self._replies[0]

    async def generate(self, prompt: Prompt) -> Reply:
        from ragtide.prompts import cited_indexes

        text = self._next(prompt)
        return Reply(text, cited_indexes(text, len(prompt.hits)))

    async def stream(self, prompt: Prompt) -> AsyncIterator[str]:
        text = self._next(prompt)
        for i in range(0, len(text), 4):
            yield text[i : i + 4]


def make_document(document_id: str, title: str = "", content_hash: str = "h") -> DocumentInfo:
    now = time.time()
    return DocumentInfo(document_id, title or document_id, "test", content_hash, 0, now, now)


def make_chunks(
    document_id: str,
    texts: Sequence[str],
    title: str = "",
    metadata: dict[str, object] | None = None,
) -> list[Chunk]:
    return [
        Chunk(
            f"{document_id}#{i}",
            document_id,
            i,
            text,
            title or document_id,
            (),
            dict(metadata or {}),
        )
        for i, text in enumerate(texts)
    ]
