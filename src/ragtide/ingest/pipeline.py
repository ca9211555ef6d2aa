"""Ingestion: files in, chunks with vectors out, one document at a time, nothing half-done.

Each file is parsed, each document it holds is hashed (title, text and the pipeline
version), and skipped when the store already has that hash; otherwise it is chunked,
embedded (in batches across documents, for speed) and written, replacing the old
chunks in one transaction. A file that cannot be ingested is reported with its reason
and the rest of the batch still lands.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ragtide.errors import DocumentRejected, InvalidRequest, QuotaExceeded, RagtideError
from ragtide.ingest.chunking import chunk_document
from ragtide.ingest.parsers import parse
from ragtide.observability import CHUNKS_INGESTED, DOCUMENTS_INGESTED
from ragtide.runtime import Runtime
from ragtide.types import (
    Chunk,
    DocumentInfo,
    ParsedDocument,
    validate_namespace_key,
)

__all__ = ["IngestOutcome", "Ingestor", "iter_files", "validate_document_id"]

logger = logging.getLogger(__name__)

Status = Literal["created", "updated", "unchanged", "rejected"]
_DOCUMENT_ID = re.compile(r"[^\x00-\x1f\x7f]{1,512}")


def validate_document_id(document_id: str) -> str:
    if not _DOCUMENT_ID.fullmatch(document_id) or document_id.strip() != document_id:
        raise InvalidRequest(
            f"invalid document id {document_id[:80]!r}: use 1-512 printable characters"
        )
    return document_id


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    source: str
    document_id: str | None
    status: Status
    chunks: int = 0
    error: RagtideError | None = None

    @property
    def error_code(self) -> str | None:
        return self.error.code if self.error else None

    @property
    def reason(self) -> str | None:
        return self.error.message if self.error else None


@dataclass(slots=True)
class _Pending:
    source: str
    info: DocumentInfo
    chunks: list[Chunk]
    status: Status


def iter_files(paths: Iterable[Path]) -> Iterator[tuple[Path, str]]:
    """Yield (file, document id) for files and, recursively, directories (sorted)."""
    for path in paths:
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                if not any(part.startswith(".") for part in file.relative_to(path).parts):
                    yield file, file.relative_to(path).as_posix()
        else:
            yield path, path.name


class Ingestor:
    """Ingests into one runtime's store with its embedder."""

    def __init__(
        self,
        rt: Runtime,
        *,
        max_words: int = 200,
        overlap_words: int = 40,
        batch_chunks: int = 512,
    ) -> None:
        self._rt = rt
        self._max_words = max_words
        self._overlap = overlap_words
        self._batch_chunks = batch_chunks
        self._version = f"{rt.embedder.model_id}|{max_words}|{overlap_words}"

    async def ingest_bytes(
        self,
        namespace: str,
        filename: str,
        data: bytes,
        document_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        budget: Budget | None = None,
    ) -> list[IngestOutcome]:
        """Ingest one file's bytes; a file may hold many documents (JSONL).

        ``metadata`` (such as ``acl_groups``) is set on every document of the file, over
        what the file itself says.
        """
        outcomes: list[IngestOutcome] = []
        await self._ingest(
            namespace, [(filename, data, document_id)], outcomes.append, metadata or {}, budget
        )
        return outcomes

    async def ingest_paths(
        self,
        namespace: str,
        paths: Iterable[Path],
        on_outcome: Callable[[IngestOutcome], None] = lambda o: None,
    ) -> list[IngestOutcome]:
        outcomes: list[IngestOutcome] = []

        def record(outcome: IngestOutcome) -> None:
            outcomes.append(outcome)
            on_outcome(outcome)

        def sources() -> Iterator[tuple[str, bytes | OSError, str]]:
            for file, doc_id in iter_files(paths):
                try:
                    yield str(file), file.read_bytes(), doc_id
                except OSError as exc:
                    yield str(file), exc, doc_id

        await self._ingest(namespace, sources(), record)
        return outcomes

    async def _ingest(
        self,
        namespace: str,
        sources: Iterable[tuple[str, bytes | OSError, str | None]],
        record: Callable[[IngestOutcome], None],
        metadata: Mapping[str, Any] | None = None,
        budget: Budget | None = None,
    ) -> None:
        validate_namespace_key(namespace)  # the store creates it with the first document
        pending: list[_Pending] = []
        for source, data, document_id in sources:
            if isinstance(data, OSError):
                error = DocumentRejected(f"{source}: cannot read: {data.strerror}")
                record(_rejected(source, document_id, error))
                continue
            try:
                docs = parse(source, data, max_bytes=self._rt.settings.http.max_upload_bytes)
            except RagtideError as exc:
                record(_rejected(source, document_id, exc))
                continue
            for doc in docs:
                if metadata:
                    doc = dataclasses.replace(doc, metadata={**doc.metadata, **metadata})
                try:
                    doc_id = validate_document_id(doc.id or document_id or Path(source).name)
                except RagtideError as exc:
                    record(_rejected(source, doc.id, exc))
                    continue
                item = await self._prepare(namespace, source, doc_id, doc)
                if item is None:
                    record(IngestOutcome(source, doc_id, "unchanged"))
                    continue
                if budget is not None and item.status == "created":
                    refusal = budget.take(sum(len(c.text.encode()) for c in item.chunks))
                    if refusal is not None:
                        record(_rejected(source, doc_id, refusal))
                        continue
                pending.append(item)
                if sum(len(p.chunks) for p in pending) >= self._batch_chunks:
                    await self._flush(namespace, pending, record)
        await self._flush(namespace, pending, record)

    async def _prepare(
        self, namespace: str, source: str, doc_id: str, doc: ParsedDocument
    ) -> _Pending | None:
        digest = hashlib.sha256()
        parts = [self._version, doc.title, doc.text]
        if doc.metadata:  # only when there is any, so that older hashes stay valid
            parts.append(json.dumps(dict(doc.metadata), sort_keys=True, default=str))
        for part in parts:
            digest.update(part.encode())
            digest.update(b"\0")
        content_hash = digest.hexdigest()
        existing = await self._rt.store.get_document(namespace, doc_id)
        if existing is not None and existing.content_hash == content_hash:
            return None
        now = time.time()
        info = DocumentInfo(
            id=doc_id,
            title=doc.title,
            source=source,
            content_hash=content_hash,
            chunks=0,
            created_at=now,
            updated_at=now,
            metadata=dict(doc.metadata),
        )
        chunks = chunk_document(doc, doc_id, max_words=self._max_words, overlap_words=self._overlap)
        return _Pending(source, info, chunks, "created" if existing is None else "updated")

    async def _flush(
        self, namespace: str, pending: list[_Pending], record: Callable[[IngestOutcome], None]
    ) -> None:
        if not pending:
            return
        texts = [_embedding_text(c) for p in pending for c in p.chunks]
        vectors = await self._rt.embedder.embed_documents(texts)
        offset = 0
        for item in pending:
            n = len(item.chunks)
            await self._rt.store.put_document(
                namespace,
                item.info,
                item.chunks,
                vectors[offset : offset + n],
                self._rt.embedder.model_id,
            )
            offset += n
            DOCUMENTS_INGESTED.labels(item.status).inc()
            CHUNKS_INGESTED.inc(n)
            record(IngestOutcome(item.source, item.info.id, item.status, chunks=n))
        pending.clear()
        await self._rt.documents_changed(namespace)


@dataclass(slots=True)
class Budget:
    """What a tenant may still add (None: unlimited); new documents draw on it, updates of
    documents it already has do not."""

    documents: int | None = None
    bytes: int | None = None

    def take(self, size: int) -> QuotaExceeded | None:
        if self.documents is not None and self.documents < 1:
            return QuotaExceeded("the tenant's documents quota is used up", retry_after=3600)
        if self.bytes is not None and self.bytes < size:
            return QuotaExceeded("the tenant's stored bytes quota is used up", retry_after=3600)
        if self.documents is not None:
            self.documents -= 1
        if self.bytes is not None:
            self.bytes -= size
        return None


def _embedding_text(chunk: Chunk) -> str:
    context = " / ".join(h for h in (chunk.title, *chunk.headings) if h)
    return f"{context}\n{chunk.text}" if context else chunk.text


def _rejected(source: str, document_id: str | None, exc: RagtideError) -> IngestOutcome:
    DOCUMENTS_INGESTED.labels("rejected").inc()
    logger.warning("document rejected", extra={"source": source, "error": exc.code})
    return IngestOutcome(source, document_id, "rejected", error=exc)
