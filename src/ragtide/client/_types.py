"""The client's typed results: frozen dataclasses parsed from the API's JSON."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ApiKey",
    "ChatAnswer",
    "ChatToken",
    "Citation",
    "CreatedKey",
    "Document",
    "Intent",
    "Namespace",
    "SearchHit",
    "Session",
    "Tenant",
    "Turn",
    "UploadResult",
    "UploadedDocument",
]


@dataclass(frozen=True, slots=True)
class SearchHit:
    document_id: str
    chunk_id: str
    title: str
    text: str
    score: float

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> SearchHit:
        return cls(
            str(d["document_id"]),
            str(d["chunk_id"]),
            str(d.get("title", "")),
            str(d.get("text", "")),
            float(d.get("score", 0.0)),
        )


@dataclass(frozen=True, slots=True)
class Citation:
    index: int
    document_id: str
    chunk_id: str
    title: str
    text: str
    score: float

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> Citation:
        return cls(
            int(d["index"]),
            str(d["document_id"]),
            str(d["chunk_id"]),
            str(d.get("title", "")),
            str(d.get("text", "")),
            float(d.get("score", 0.0)),
        )


@dataclass(frozen=True, slots=True)
class Intent:
    kind: str
    query: str
    condensed: bool = False

    @classmethod
    def parse(cls, d: Mapping[str, Any] | None) -> Intent | None:
        if not d:
            return None
        return cls(str(d.get("kind", "")), str(d.get("query", "")), bool(d.get("condensed")))


@dataclass(frozen=True, slots=True)
class ChatAnswer:
    """A chat turn's answer; ``text`` cites its sources as ``[n]`` (``citations``)."""

    session_id: str
    text: str
    citations: tuple[Citation, ...]
    intent: Intent | None = None

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> ChatAnswer:
        return cls(
            str(d["session_id"]),
            str(d.get("answer", "")),
            tuple(Citation.parse(c) for c in d.get("citations", ())),
            Intent.parse(d.get("intent")),
        )


@dataclass(frozen=True, slots=True)
class ChatToken:
    """A piece of an answer as it is generated (``chat_stream``)."""

    text: str


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    documents: int
    chunks: int

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> Namespace:
        return cls(str(d["namespace"]), int(d.get("documents", 0)), int(d.get("chunks", 0)))


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    title: str
    source: str
    chunks: int
    content_hash: str
    created_at: float
    updated_at: float
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> Document:
        return cls(
            str(d["id"]),
            str(d.get("title", "")),
            str(d.get("source", "")),
            int(d.get("chunks", 0)),
            str(d.get("content_hash", "")),
            float(d.get("created_at", 0.0)),
            float(d.get("updated_at", 0.0)),
            dict(d.get("metadata") or {}),
        )


@dataclass(frozen=True, slots=True)
class UploadedDocument:
    """What became of one document of an uploaded file (a jsonl file holds many)."""

    source: str
    document_id: str | None
    status: str  # created, updated, unchanged, rejected
    chunks: int
    error_code: str | None = None
    error_message: str | None = None

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> UploadedDocument:
        error = d.get("error") or {}
        doc_id = d.get("document_id")
        return cls(
            str(d.get("source", "")),
            None if doc_id is None else str(doc_id),
            str(d.get("status", "")),
            int(d.get("chunks", 0)),
            error.get("code"),
            error.get("message"),
        )


@dataclass(frozen=True, slots=True)
class UploadResult:
    namespace: str
    documents: tuple[UploadedDocument, ...]
    changed: bool  # 201: something was created or updated; 200: all of it was unchanged

    @classmethod
    def parse(cls, d: Mapping[str, Any], status: int) -> UploadResult:
        return cls(
            str(d.get("namespace", "")),
            tuple(UploadedDocument.parse(o) for o in d.get("documents", ())),
            status == 201,
        )


@dataclass(frozen=True, slots=True)
class Turn:
    role: str
    content: str
    at: float

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> Turn:
        return cls(str(d["role"]), str(d["content"]), float(d.get("at", 0.0)))


@dataclass(frozen=True, slots=True)
class Session:
    namespace: str
    session_id: str
    turns: tuple[Turn, ...]

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> Session:
        return cls(
            str(d["namespace"]),
            str(d["session_id"]),
            tuple(Turn.parse(t) for t in d.get("turns", ())),
        )


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    config: Mapping[str, Any]
    version: int
    created_at: float
    updated_at: float
    webhook_secret: str | None = None  # only when created, replaced or read one by one

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> Tenant:
        return cls(
            str(d["id"]),
            dict(d.get("config") or {}),
            int(d.get("version", 0)),
            float(d.get("created_at", 0.0)),
            float(d.get("updated_at", 0.0)),
            d.get("webhook_secret"),
        )


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    tenant: str
    prefix: str
    scopes: tuple[str, ...]
    namespaces: tuple[str, ...] | None
    description: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> ApiKey:
        namespaces = d.get("namespaces")
        return cls(
            str(d["id"]),
            str(d.get("tenant", "")),
            str(d.get("prefix", "")),
            tuple(d.get("scopes", ())),
            None if namespaces is None else tuple(namespaces),
            str(d.get("description", "")),
            float(d.get("created_at", 0.0)),
            d.get("expires_at"),
            d.get("revoked_at"),
        )


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new API key: ``key`` is shown this once (only its hash is stored)."""

    key: str
    info: ApiKey

    def __repr__(self) -> str:  # never print the secret by accident
        return f"CreatedKey(key='{self.key[:6]}…', info={self.info!r})"
