"""Local files, as ``ragtide ingest`` reads them: not uploads, so not held to the upload
limit (``http.max_upload_bytes``), and never read whole when they hold many documents.

``local_sources`` turns files and folders into the jobs the ingestor prepares:

- A JSONL file of any size is streamed: read a batch of whole lines at a time
  (``batch_bytes``) and prepared batch by batch, so memory stays bounded by the
  batch, not the file (plus ~100 bytes per record in the ingestor: the ids seen, to
  refuse a duplicate ``_id``). Each record is its own document, refused alone with its
  line number when it breaks a rule (invalid JSON, ``max_document_chars``,
  ``max_line_chars``, a duplicate id) while the rest of the file lands. An upload's JSONL
  is all or nothing, but that needs the whole file at hand; ``max_jsonl_lines`` bounds an
  upload, not a local file. A line too long to be a record is skipped without being held.
  A UTF-16 JSONL file is refused (convert it to UTF-8): its lines cannot be split as bytes.
- A file of one document (Markdown, PDF, ...) is read whole, and refused unread when its
  size alone breaks a per-document limit: more bytes than ``max_document_chars``
  characters can take (4 bytes a character at most), or a quarter of a parse worker's
  memory (``worker_memory_bytes``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from ragtide.errors import (
    CorruptDocument,
    DocumentRejected,
    DocumentTooLarge,
    EmptyDocument,
    RagtideError,
)
from ragtide.ingest.limits import ParseLimits, too_large
from ragtide.ingest.parsers import SUPPORTED_EXTENSIONS, parse
from ragtide.ingest.prepare import PrepareJob

__all__ = ["JsonlBatches", "Source", "iter_files", "local_sources"]

_MIB = 1024 * 1024
_TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown", ".html", ".htm"})
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")

# One file's source, the id for a document that does not name its own, and its job (or
# why it cannot be read).
Source = tuple[str, str | None, PrepareJob | RagtideError]
# (file name, bytes, document id, first line of a streamed batch or None) -> the job
MakeJob = Callable[[str, bytes, str | None, int | None], PrepareJob]


def iter_files(paths: Iterable[Path]) -> Iterator[tuple[Path, str]]:
    """Yield (file, document id) for files and, recursively, directories (sorted)."""
    for path in paths:
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                if not any(part.startswith(".") for part in file.relative_to(path).parts):
                    yield file, file.relative_to(path).as_posix()
        else:
            yield path, path.name


async def local_sources(
    paths: Iterable[Path],
    limits: ParseLimits,
    worker_memory_bytes: int,
    make_job: MakeJob,
    batch_bytes: int,
) -> AsyncIterator[Source]:
    """Every file under ``paths`` as jobs, a JSONL file as many of about ``batch_bytes``
    (files are read in a thread: the event loop never waits on the disk)."""
    for file, doc_id in iter_files(paths):
        source = str(file)
        if file.suffix.lower() != ".jsonl":
            job = await asyncio.to_thread(
                _one_document, file, doc_id, limits, worker_memory_bytes, make_job
            )
            yield source, doc_id, job
            continue
        try:
            handle = await asyncio.to_thread(file.open, "rb")
        except OSError as exc:
            yield source, doc_id, _unreadable(source, exc)
            continue
        with handle:
            async for item in _streamed(file, handle, limits, make_job, batch_bytes):
                yield source, None, item


async def _streamed(
    file: Path, handle: BinaryIO, limits: ParseLimits, make_job: MakeJob, batch_bytes: int
) -> AsyncIterator[PrepareJob | RagtideError]:
    batches = JsonlBatches(handle, limits.max_line_chars, batch_bytes)
    blank = True
    while True:
        try:
            batch = await asyncio.to_thread(batches.next)
        except OSError as exc:
            yield _unreadable(str(file), exc)
            return
        if batch is None:
            if blank:
                yield EmptyDocument(f"{file.name}: no records found")
            return
        first_line, data, too_long = batch
        if first_line == 1 and data.startswith(_UTF16_BOMS):
            yield CorruptDocument(
                f"{file.name}: a UTF-16 JSONL file cannot be streamed; convert it to UTF-8"
            )
            return
        blank = blank and not too_long and not data.strip()
        for number in too_long:
            n = limits.max_line_chars
            where = f"{file.name} line {number}"
            yield too_large(where, f"a line of more than {n:,} characters", "max_line_chars", n)
        yield make_job(str(file), data, None, first_line)


def _one_document(
    file: Path, doc_id: str, limits: ParseLimits, worker_memory_bytes: int, make_job: MakeJob
) -> PrepareJob | RagtideError:
    """A local file of one document, read whole unless its size alone refuses it."""
    suffix = file.suffix.lower()
    try:
        if suffix not in SUPPORTED_EXTENSIONS:
            parse(file.name, b"")  # raises the one UnsupportedMediaType message
        size = file.stat().st_size
        chars = limits.max_document_chars
        if suffix in _TEXT_SUFFIXES and size > 4 * chars + 4:  # <= 4 bytes a character
            return too_large(
                file.name,
                f"{size:,} bytes (at least {size // 4:,} characters)",
                "max_document_chars",
                chars,
            )
        if suffix not in _TEXT_SUFFIXES and size > worker_memory_bytes // 4:
            return DocumentTooLarge(
                f"{file.name}: a {size:,}-byte file, too large to parse within a parse "
                f"worker's {worker_memory_bytes // _MIB:,} MiB (ingest.worker_memory_bytes)",
                limit="worker_memory_bytes",
            )
        data = file.read_bytes()
    except OSError as exc:
        return _unreadable(str(file), exc)
    except RagtideError as exc:
        return exc
    return make_job(str(file), data, doc_id, None)


class JsonlBatches:
    """Whole lines of a JSONL file, about ``batch_bytes`` at a time: ``next()`` gives (the
    number of its first line, the lines, the numbers of lines skipped as too long) or
    None at the end. A line of more bytes than ``max_line_chars`` characters can take
    cannot be a record: it is skipped without being held, and left empty in the batch so
    that the numbering holds."""

    def __init__(self, handle: BinaryIO, max_line_chars: int, batch_bytes: int) -> None:
        self._handle = handle
        self._limit = 4 * max_line_chars + 2  # the line's bytes, a CR and the LF
        self._batch_bytes = batch_bytes
        self._line = 1

    def next(self) -> tuple[int, bytes, list[int]] | None:
        first = self._line
        lines: list[bytes] = []
        size = 0
        too_long: list[int] = []
        while size < self._batch_bytes:
            line = self._handle.readline(self._limit)
            if not line:
                break
            if len(line) == self._limit and not line.endswith(b"\n"):
                while (rest := self._handle.readline(_MIB)) and not rest.endswith(b"\n"):
                    pass
                too_long.append(self._line)
                line = b"\n"
            lines.append(line)
            size += len(line)
            self._line += 1
        if not lines:
            return None
        return first, b"".join(lines), too_long


def _unreadable(source: str, exc: OSError) -> RagtideError:
    return DocumentRejected(f"{source}: cannot read: {exc.strerror}")
