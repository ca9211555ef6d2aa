"""Chunks, documents, tenants and API keys from the rows both built-in stores select, in
the same column order.

SQLite hands JSON columns back as text and PostgreSQL (jsonb) as Python values, so a
store passes how its JSON columns decode: ``json.loads``, or nothing to do.
"""

from __future__ import annotations

import json as _json
from collections.abc import Callable, Sequence
from typing import Any

from ragtide.types import ApiKeyRecord, Chunk, DocumentInfo, TenantRecord

__all__ = [
    "KEY_COLUMNS",
    "TENANT_COLUMNS",
    "chunk_from_row",
    "document_from_row",
    "key_from_row",
    "key_to_row",
    "tenant_from_row",
]

TENANT_COLUMNS = "id, config, version, webhook_secret, created_at, updated_at"
KEY_COLUMNS = (
    "id, tenant, prefix, hash, scopes, namespaces, description, created_at, expires_at, revoked_at"
)


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


def tenant_from_row(row: Sequence[Any], json: Callable[[Any], Any] = _as_is) -> TenantRecord:
    """``TENANT_COLUMNS``"""
    return TenantRecord(row[0], json(row[1]), int(row[2]), row[3], row[4], row[5])


def key_to_row(key: ApiKeyRecord) -> tuple[Any, ...]:
    """``KEY_COLUMNS`` as parameters; the JSON columns (scopes, namespaces) as JSON text."""
    namespaces = None if key.namespaces is None else _json.dumps(list(key.namespaces))
    return (
        key.id,
        key.tenant,
        key.prefix,
        key.hash,
        _json.dumps(list(key.scopes)),
        namespaces,
        key.description,
        key.created_at,
        key.expires_at,
        key.revoked_at,
    )


def key_from_row(row: Sequence[Any], json: Callable[[Any], Any] = _as_is) -> ApiKeyRecord:
    """``KEY_COLUMNS``"""
    namespaces = None if row[5] is None else tuple(json(row[5]))
    return ApiKeyRecord(row[0], row[1], row[2], row[3], tuple(json(row[4])), namespaces, *row[6:10])
