"""Chunks and documents from the rows both built-in stores select, in the same column order.

SQLite hands JSON columns back as text and PostgreSQL (jsonb) as Python values, so a
store passes how its JSON columns decode: ``json.loads``, or nothing to do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ragtide.types import Chunk, DocumentInfo

__all__ = ["chunk_from_row", "document_from_row"]


def _as_is(value: Any) -> Any:
    return value


def chunk_from_row(row: Sequence[Any], json: Callable[[Any], Any] = _as_is) -> Chunk:
    """``(chunk_id, document_id, ordinal, text, title, headings, metadata, ...)``"""
    return Chunk(
        id=row[0],
        document_id=row[1],
        ordinal=row[2],
        text=row[3],
        title=row[4],
        headings=tuple(json(row[5])),
        metadata=json(row[6]),
    )


def document_from_row(row: Sequence[Any], json: Callable[[Any], Any] = _as_is) -> DocumentInfo:
    """``(id, title, source, content_hash, chunks, created_at, updated_at, metadata)``"""
    return DocumentInfo(
        id=row[0],
        title=row[1],
        source=row[2],
        content_hash=row[3],
        chunks=row[4],
        created_at=row[5],
        updated_at=row[6],
        metadata=json(row[7]),
    )
