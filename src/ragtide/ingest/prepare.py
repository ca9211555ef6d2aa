"""The CPU-heavy half of ingestion, as one pure function the parse sandbox can run.

``prepare`` parses one file and, for each document in it, settles its id, hashes it
(title, text, metadata and the pipeline version) and chunks it. Chunking is where the
time goes (a 10 MB Markdown file: 0.4 s to parse, 3.9 s to chunk), so it runs in the
box with the parsing. What comes back is small: ids, hashes and chunks, not the text.
Every document is chunked, even one the store turns out to have unchanged: finding out
would cost a second round trip to the box, and the box's time is not the event loop's.

A job with ``first_line`` set is a batch of whole lines of a local JSONL file too large to
read at once (``ragtide.ingest.pipeline`` streams it): each line is parsed on its own and
each record is its own document, refused alone (naming its line) when it is bad.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from ragtide.builtin.analyzer import Analyzer, encode_terms
from ragtide.errors import InvalidRequest, RagtideError
from ragtide.ingest.chunking import chunk_document
from ragtide.ingest.limits import ParseLimits
from ragtide.ingest.parsers import parse, parse_jsonl_record
from ragtide.types import Chunk, ParsedDocument

__all__ = ["PrepareJob", "Prepared", "Refused", "content_hash", "prepare", "validate_document_id"]

_DOCUMENT_ID = re.compile(r"[^\x00-\x1f\x7f]{1,512}")


def validate_document_id(document_id: str) -> str:
    if not _DOCUMENT_ID.fullmatch(document_id) or document_id.strip() != document_id:
        raise InvalidRequest(
            f"invalid document id {document_id[:80]!r}: use 1-512 printable characters"
        )
    return document_id


@dataclass(frozen=True, slots=True)
class PrepareJob:
    """One file to prepare; picklable, so that it can cross to a worker process."""

    filename: str
    data: bytes
    document_id: str | None = None  # the id when the file does not name its own
    metadata: Mapping[str, Any] = field(default_factory=dict)  # set over the file's own
    max_bytes: int = 20 * 1024 * 1024
    limits: ParseLimits = field(default_factory=ParseLimits)
    max_words: int = 200
    overlap_words: int = 40
    version: str = ""  # the pipeline version, part of every content hash
    # Set: ``data`` is whole lines of a streamed JSONL file, the first being this line.
    first_line: int | None = None
    # Count each chunk's terms (``Chunk.terms``) here, for a store that indexes them as
    # given (``takes_chunk_terms``); a store that analyses its own way would not use them.
    count_terms: bool = False


@dataclass(frozen=True, slots=True)
class Prepared:
    """A document ready to be compared with the store and, if new or changed, written."""

    id: str
    title: str
    metadata: Mapping[str, Any]
    content_hash: str
    chunks: list[Chunk]
    text_bytes: int  # UTF-8 bytes of its chunks, what a tenant's quota counts
    line: int | None = None  # its line, for a record of a streamed JSONL file


@dataclass(frozen=True, slots=True)
class Refused:
    """A document of the file that cannot be ingested (the file's other documents can)."""

    document_id: str | None
    error: RagtideError
    line: int | None = None  # its line, for a record of a streamed JSONL file


def prepare(job: PrepareJob) -> list[Prepared | Refused]:
    """Parse, hash and chunk one file. A file refused as a whole raises ``RagtideError``."""
    # One per job: a stemmer is not to be shared between threads.
    analyzer = Analyzer() if job.count_terms else None
    if job.first_line is not None:
        return _prepare_records(job, job.first_line, analyzer)
    docs = parse(job.filename, job.data, max_bytes=job.max_bytes, limits=job.limits)
    return [_prepare_document(job, doc, analyzer) for doc in docs]


def _prepare_records(
    job: PrepareJob, first_line: int, analyzer: Analyzer | None
) -> list[Prepared | Refused]:
    name = PurePath(job.filename).name
    out: list[Prepared | Refused] = []
    for number, line in enumerate(job.data.split(b"\n"), start=first_line):
        if not line.strip():
            continue
        try:
            doc = parse_jsonl_record(f"{name} line {number}", line, job.limits)
        except RagtideError as exc:
            out.append(Refused(None, exc, line=number))
            continue
        out.append(dataclasses.replace(_prepare_document(job, doc, analyzer), line=number))
    return out


def _prepare_document(
    job: PrepareJob, doc: ParsedDocument, analyzer: Analyzer | None
) -> Prepared | Refused:
    if job.metadata:
        doc = dataclasses.replace(doc, metadata={**doc.metadata, **job.metadata})
    try:
        doc_id = validate_document_id(doc.id or job.document_id or PurePath(job.filename).name)
    except RagtideError as exc:
        return Refused(doc.id, exc)
    chunks = chunk_document(doc, doc_id, max_words=job.max_words, overlap_words=job.overlap_words)
    # Counted here, in the parse worker, rather than by the store's one writer thread:
    # the analysis was a quarter of the ingesting process's CPU.
    if analyzer is not None:
        chunks = [
            dataclasses.replace(c, terms=encode_terms(analyzer.chunk_terms(c))) for c in chunks
        ]
    return Prepared(
        id=doc_id,
        title=doc.title,
        metadata=dict(doc.metadata),
        content_hash=content_hash(job.version, doc),
        chunks=chunks,
        text_bytes=sum(len(c.text.encode()) for c in chunks),
    )


def content_hash(version: str, doc: ParsedDocument) -> str:
    digest = hashlib.sha256()
    parts = [version, doc.title, doc.text]
    if doc.metadata:  # only when there is any, so that older hashes stay valid
        parts.append(json.dumps(dict(doc.metadata), sort_keys=True, default=str))
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()
