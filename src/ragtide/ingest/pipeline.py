"""Ingestion: files in, chunks with vectors out, one document at a time, nothing half-done.

Each file is parsed, each document it holds is hashed (title, text and the pipeline
version), and skipped when the store already has that hash; otherwise it is chunked,
embedded (in batches across documents, for speed) and written, replacing the old
chunks in one transaction (a batch's documents in one: the store's ``put_documents``).
A file that cannot be ingested is reported with its reason and the rest of the batch
still lands.

Parsing, hashing and chunking (``ragtide.ingest.prepare``) are the CPU-heavy part and
meet untrusted bytes: they run in the parse sandbox (``ragtide.ingest.sandbox``), worker
processes with a memory ceiling and a deadline, under the limits of ``settings.ingest``,
while the event loop only awaits them. Only small text files are prepared inline. The
loop below still touches every document (store look-ups, hashes compared): it yields to
the event loop every few milliseconds, so a 100,000-line JSONL does not stall it.

Local files (``ingest_paths``, what ``ragtide ingest`` runs) are not uploads: they are
not held to the upload limit, and a JSONL file is streamed (``ragtide.ingest.local``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Literal

from ragtide.errors import CorruptDocument, QuotaExceeded, RagtideError
from ragtide.ingest.limits import ParseLimits
from ragtide.ingest.local import Source, iter_files, local_sources
from ragtide.ingest.prepare import Prepared, PrepareJob, Refused, validate_document_id
from ragtide.ingest.sandbox import (
    ParseSandbox,
    SandboxConfig,
    close_shared_sandboxes,
    shared_sandbox,
)
from ragtide.observability import CHUNKS_INGESTED, DOCUMENTS_INGESTED
from ragtide.runtime import Runtime
from ragtide.settings import IngestSettings
from ragtide.types import Chunk, DocumentInfo, validate_namespace_key

__all__ = [
    "IngestOutcome",
    "Ingestor",
    "iter_files",
    "parse_limits",
    "sandbox_config",
    "validate_document_id",
]

logger = logging.getLogger(__name__)

Status = Literal["created", "updated", "unchanged", "rejected"]
_YIELD_EVERY_S = 0.005
# A streamed local JSONL file is prepared this many bytes of whole lines at a time (one
# sandbox job each, well inside its deadline).
STREAM_BATCH_BYTES = 2 * 1024 * 1024
# A source's prepared documents, or why it cannot be ingested at all.
_Ready = tuple[str, str | None, list[Prepared | Refused] | RagtideError]


def parse_limits(settings: IngestSettings) -> ParseLimits:
    """The ``ParseLimits`` that ``settings.ingest`` sets."""
    return ParseLimits(
        **{name: getattr(settings, name) for name in ParseLimits.__dataclass_fields__}
    )


def sandbox_config(settings: IngestSettings) -> SandboxConfig:
    return SandboxConfig(
        workers=settings.workers,
        memory_bytes=settings.worker_memory_bytes,
        timeout_s=settings.parse_timeout_s,
        inline_max_bytes=settings.inline_max_bytes,
    )


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


class Ingestor:
    """Ingests into one runtime's store with its embedder.

    Files are prepared in ``sandbox``, by default the process's shared sandbox for
    ``settings.ingest`` (started on first use). ``aclose`` (or ``async with``) stops its
    workers; they are daemonic and end with the process anyway.
    """

    def __init__(
        self,
        rt: Runtime,
        *,
        max_words: int = 200,
        overlap_words: int = 40,
        batch_chunks: int = 512,
        sandbox: ParseSandbox | None = None,
    ) -> None:
        self._rt = rt
        self._max_words = max_words
        self._overlap = overlap_words
        self._batch_chunks = batch_chunks
        self._version = f"{rt.embedder.model_id}|{max_words}|{overlap_words}"
        # The parse workers count each chunk's terms only for a store that indexes them
        # as given (the embedded one); PostgreSQL analyses each field its own way.
        self._count_terms = bool(getattr(rt.store, "takes_chunk_terms", False))
        ingest = rt.settings.ingest
        self._limits = parse_limits(ingest)
        self._own_sandbox = sandbox
        self._sandbox_config = sandbox_config(ingest)

    @property
    def sandbox(self) -> ParseSandbox:
        return self._own_sandbox or shared_sandbox(self._sandbox_config)

    async def aclose(self) -> None:
        """Stop the parse workers: this ingestor's sandbox, or the shared ones."""
        if self._own_sandbox is not None:
            await self._own_sandbox.aclose()
        else:
            await close_shared_sandboxes()

    async def __aenter__(self) -> Ingestor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def ingest_bytes(
        self,
        namespace: str,
        filename: str,
        data: bytes,
        document_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        budget: Budget | None = None,
    ) -> list[IngestOutcome]:
        """Ingest one uploaded file's bytes; a file may hold many documents (JSONL).

        ``metadata`` (such as ``acl_groups``) is set on every document of the file, over
        what the file itself says. The file is held to the upload limit.
        """
        job = self._job(filename, data, document_id, dict(metadata or {}))

        async def one() -> AsyncIterator[Source]:
            yield filename, document_id, job

        outcomes: list[IngestOutcome] = []
        await self._ingest(namespace, one(), outcomes.append, budget)
        return outcomes

    async def ingest_paths(
        self,
        namespace: str,
        paths: Iterable[Path],
        on_outcome: Callable[[IngestOutcome], None] = lambda o: None,
        *,
        keep: bool = True,
    ) -> list[IngestOutcome]:
        """Ingest local files and folders (see the module docstring: streamed, not held to
        the upload limit). ``keep=False`` returns no outcomes, only reports them to
        ``on_outcome``: a file of millions of records then costs no memory per record."""
        outcomes: list[IngestOutcome] = []

        def record(outcome: IngestOutcome) -> None:
            if keep:
                outcomes.append(outcome)
            on_outcome(outcome)

        def job(
            filename: str, data: bytes, document_id: str | None, line: int | None
        ) -> PrepareJob:
            return self._job(filename, data, document_id, max_bytes=len(data), first_line=line)

        memory = self._sandbox_config.memory_bytes
        sources = local_sources(paths, self._limits, memory, job, STREAM_BATCH_BYTES)
        await self._ingest(namespace, sources, record)
        return outcomes

    def _job(
        self,
        filename: str,
        data: bytes,
        document_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        max_bytes: int | None = None,
        first_line: int | None = None,
    ) -> PrepareJob:
        return PrepareJob(
            filename=filename,
            data=data,
            document_id=document_id,
            metadata=dict(metadata or {}),
            max_bytes=self._rt.settings.http.max_upload_bytes if max_bytes is None else max_bytes,
            limits=self._limits,
            max_words=self._max_words,
            overlap_words=self._overlap,
            version=self._version,
            first_line=first_line,
            count_terms=self._count_terms,
        )

    async def _ingest(
        self,
        namespace: str,
        sources: AsyncIterator[Source],
        record: Callable[[IngestOutcome], None],
        budget: Budget | None = None,
    ) -> None:
        validate_namespace_key(namespace)  # the store creates it with the first document
        pending: list[_Pending] = []
        ids_source, first_lines = "", dict[str, int]()  # a streamed file's ids so far
        async with contextlib.aclosing(self._prepared(sources)) as each:
            async for source, document_id, prepared in each:
                if isinstance(prepared, RagtideError):
                    record(_rejected(source, document_id, prepared))
                    continue
                if source != ids_source:
                    ids_source, first_lines = source, {}
                await self._take(namespace, source, prepared, first_lines, pending, record, budget)
        await self._flush(namespace, pending, record)

    async def _prepared(self, sources: AsyncIterator[Source]) -> AsyncGenerator[_Ready, None]:
        """Each source's job prepared, in order; the next jobs are already in the sandbox
        while the caller writes this one's documents (so a streamed file's batches are
        parsed and chunked while the previous one is embedded and written), one per parse
        worker: with one, the other worker sat idle and each batch's preparation had to
        fit inside the previous one's write."""
        sandbox = self.sandbox
        depth = max(1, sandbox.config.workers)

        async def run(job: PrepareJob | RagtideError) -> list[Prepared | Refused] | RagtideError:
            if isinstance(job, RagtideError):
                return job
            try:
                return await sandbox.prepare(job)
            except RagtideError as exc:
                return exc

        ahead: collections.deque[tuple[str, str | None, asyncio.Task[Any]]] = collections.deque()
        try:
            async for source, document_id, job in sources:
                ahead.append((source, document_id, asyncio.ensure_future(run(job))))
                del job
                if len(ahead) > depth:
                    yield await _first_done(ahead)
            while ahead:
                yield await _first_done(ahead)
        finally:
            for _, _, task in ahead:
                task.cancel()

    async def _take(
        self,
        namespace: str,
        source: str,
        prepared: list[Prepared | Refused],
        first_lines: dict[str, int],
        pending: list[_Pending],
        record: Callable[[IngestOutcome], None],
        budget: Budget | None,
    ) -> None:
        """Compare one file's (or batch's) documents with the store; write in batches."""
        slice_began = time.perf_counter()
        queued = sum(len(p.chunks) for p in pending)  # chunks waiting (from earlier files too)
        for doc in prepared:
            if time.perf_counter() - slice_began > _YIELD_EVERY_S:
                await asyncio.sleep(0)  # let other requests in (/healthz among them)
                slice_began = time.perf_counter()
            if isinstance(doc, Refused):
                record(_rejected(source, doc.document_id, doc.error))
                continue
            if doc.line is not None:  # a record of a streamed file: its id is unique
                first = first_lines.setdefault(doc.id, doc.line)
                if first != doc.line:
                    error = CorruptDocument(
                        f"{PurePath(source).name} line {doc.line}: duplicate "
                        f'"_id" {doc.id!r} (first on line {first})'
                    )
                    record(_rejected(source, doc.id, error))
                    continue
            item = await self._compare(namespace, source, doc)
            if item is None:
                record(IngestOutcome(source, doc.id, "unchanged"))
                continue
            if budget is not None and item.status == "created":
                refusal = budget.take(doc.text_bytes)
                if refusal is not None:
                    record(_rejected(source, doc.id, refusal))
                    continue
            pending.append(item)
            queued += len(item.chunks)  # summing ``pending`` per document was quadratic
            if queued >= self._batch_chunks:
                await self._flush(namespace, pending, record)
                queued = 0
                slice_began = time.perf_counter()

    async def _compare(self, namespace: str, source: str, doc: Prepared) -> _Pending | None:
        existing = await self._rt.store.get_document(namespace, doc.id)
        if existing is not None and existing.content_hash == doc.content_hash:
            return None
        now = time.time()
        info = DocumentInfo(
            id=doc.id,
            title=doc.title,
            source=source,
            content_hash=doc.content_hash,
            chunks=0,
            created_at=now,
            updated_at=now,
            metadata=doc.metadata,
        )
        return _Pending(source, info, doc.chunks, "created" if existing is None else "updated")

    async def _flush(
        self, namespace: str, pending: list[_Pending], record: Callable[[IngestOutcome], None]
    ) -> None:
        if not pending:
            return
        texts = [_embedding_text(c) for p in pending for c in p.chunks]
        vectors = await self._rt.embedder.embed_documents(texts)
        model, store, offset = self._rt.embedder.model_id, self._rt.store, 0
        writes = []
        for item in pending:
            writes.append((item.info, item.chunks, vectors[offset : offset + len(item.chunks)]))
            offset += len(item.chunks)
        # One transaction per batch (SQLiteStore: one commit; PostgresStore: one COPY).
        batch = getattr(store, "put_documents", None)
        if batch is not None:
            hashes = await batch(namespace, writes, model)
        else:
            hashes = [await store.put_document(namespace, *w, model) for w in writes]
        for item, previous in zip(pending, hashes, strict=True):
            n = len(item.chunks)
            # What the store saw inside its write, not the read before it: of concurrent
            # uploads of one id exactly one is "created".
            status = _written(previous, item.info.content_hash)
            DOCUMENTS_INGESTED.labels(status).inc()
            CHUNKS_INGESTED.inc(n)
            record(IngestOutcome(item.source, item.info.id, status, chunks=n))
        pending.clear()
        await self._rt.documents_changed(namespace)


async def _first_done(
    ahead: collections.deque[tuple[str, str | None, asyncio.Task[Any]]],
) -> _Ready:
    """The first job's result, taken off ``ahead`` once it has one (until then it stays,
    to be cancelled if the caller stops)."""
    source, document_id, task = ahead[0]
    result = await task
    ahead.popleft()
    return source, document_id, result


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


def _written(previous: str | None, content_hash: str) -> Status:
    if previous is None:
        return "created"
    return "unchanged" if previous == content_hash else "updated"


def _embedding_text(chunk: Chunk) -> str:
    context = " / ".join(h for h in (chunk.title, *chunk.headings) if h)
    return f"{context}\n{chunk.text}" if context else chunk.text


def _rejected(source: str, document_id: str | None, exc: RagtideError) -> IngestOutcome:
    DOCUMENTS_INGESTED.labels("rejected").inc()
    logger.warning("document rejected", extra={"source": source, "error": exc.code})
    return IngestOutcome(source, document_id, "rejected", error=exc)
