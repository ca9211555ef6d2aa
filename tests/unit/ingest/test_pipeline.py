"""The ingestion pipeline (``ragtide.ingest.pipeline``) on a real in-process runtime (the
embedded store, the hashing embedder): what each file becomes, the job each file is
prepared with, batching, quotas, what is embedded, metrics and the sandbox's life.

The only stand-ins wrap our own components to record calls (the embedder's batches, the
jobs given to the sandbox, the namespaces the answer cache is told to forget)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from ragtide.errors import (
    CorruptDocument,
    DocumentRejected,
    InvalidNamespace,
    QuotaExceeded,
)
from ragtide.ingest import pipeline
from ragtide.ingest.limits import ParseLimits
from ragtide.ingest.pipeline import (
    Budget,
    Ingestor,
    IngestOutcome,
    _embedding_text,
    _written,
    iter_files,
    parse_limits,
    sandbox_config,
)
from ragtide.ingest.prepare import PrepareJob
from ragtide.ingest.sandbox import ParseSandbox, SandboxConfig, shared_sandbox
from ragtide.observability import CHUNKS_INGESTED, DOCUMENTS_INGESTED
from ragtide.runtime import Runtime, build_runtime
from ragtide.settings import IngestSettings, Settings
from ragtide.types import Chunk, Filter

pytestmark = pytest.mark.anyio

POD = "A Pod runs one or more containers that share storage. " * 12  # 108 words
LIMIT = "Each container declares requests and limits for memory. " * 12
PODS = f"# Pods\n\n{POD.strip()}\n\n## Limits\n\n{LIMIT.strip()}\n".encode()  # two chunks


class RecordingEmbedder:
    """The runtime's embedder, recording each batch it is given."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.batches: list[list[str]] = []

    @property
    def dimension(self) -> int:
        return int(self.inner.dimension)

    @property
    def model_id(self) -> str:
        return str(self.inner.model_id)

    async def embed_query(self, text: str) -> Any:
        return await self.inner.embed_query(text)

    async def embed_documents(self, texts: Sequence[str]) -> Any:
        self.batches.append(list(texts))
        return await self.inner.embed_documents(texts)


class RecordingCache:
    """An answer cache that only records which namespaces it was told to forget."""

    def __init__(self) -> None:
        self.invalidated: list[str] = []

    async def invalidate(self, namespace: str) -> int:
        self.invalidated.append(namespace)
        return 0


class RecordingSandbox(ParseSandbox):
    """Our sandbox (everything inline), recording the jobs it prepares."""

    def __init__(self) -> None:
        super().__init__(SandboxConfig(workers=1, inline_max_bytes=1 << 30))
        self.jobs: list[PrepareJob] = []
        self.closed = False

    async def prepare(self, job: PrepareJob) -> Any:
        self.jobs.append(job)
        return await super().prepare(job)

    async def aclose(self) -> None:
        self.closed = True
        await super().aclose()


@pytest.fixture
async def rt(tmp_path: Path) -> AsyncIterator[Runtime]:
    settings = Settings(
        data_dir=tmp_path / "data",
        embedder={"use": "hashing"},
        http={"max_upload_bytes": 123_456},
        ingest={"max_line_chars": 5000, "workers": 1},
        logging={"format": "console", "access_log": False},
    )
    runtime = build_runtime(settings)
    await runtime.start()
    runtime.embedder = RecordingEmbedder(runtime.embedder)
    runtime.cache = RecordingCache()  # type: ignore[assignment]
    yield runtime
    await runtime.aclose()


def _embedder(rt: Runtime) -> RecordingEmbedder:
    assert isinstance(rt.embedder, RecordingEmbedder)
    return rt.embedder


def _cache(rt: Runtime) -> RecordingCache:
    assert isinstance(rt.cache, RecordingCache)
    return rt.cache


def _got(outcomes: list[IngestOutcome]) -> list[tuple[str | None, str, int, str | None]]:
    return [(o.document_id, o.status, o.chunks, o.error_code) for o in outcomes]


def test_settings_become_parse_limits_and_the_sandbox_config() -> None:
    settings = IngestSettings(
        workers=3,
        worker_memory_bytes=100 * 1_048_576,
        parse_timeout_s=7.5,
        inline_max_bytes=99,
        max_line_chars=1234,
        max_jsonl_lines=77,
        max_pdf_pages=5,
        max_html_depth=9,
    )
    limits = parse_limits(settings)
    assert isinstance(limits, ParseLimits)
    assert (limits.max_line_chars, limits.max_jsonl_lines) == (1234, 77)
    assert (limits.max_pdf_pages, limits.max_html_depth) == (5, 9)
    for name in ParseLimits.__dataclass_fields__:
        assert getattr(limits, name) == getattr(settings, name), name
    assert sandbox_config(settings) == SandboxConfig(
        workers=3, memory_bytes=100 * 1_048_576, timeout_s=7.5, inline_max_bytes=99
    )


def test_an_outcome_names_its_error() -> None:
    ok = IngestOutcome("a.md", "a.md", "created", chunks=2)
    assert (ok.error_code, ok.reason) == (None, None)
    bad = IngestOutcome("b.md", None, "rejected", error=CorruptDocument("b.md: garbled"))
    assert (bad.error_code, bad.reason) == ("corrupt_document", "b.md: garbled")


def test_iter_files_walks_folders_sorted_and_skips_hidden_paths(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    for rel in ("b.md", "a/z.txt", "a/y.md", ".hidden.md", ".git/config.md", "a/.x/w.md"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    single = tmp_path / "single.md"
    single.write_text("x")
    got = list(iter_files([root, single]))
    assert got == [
        (root / "a" / "y.md", "a/y.md"),
        (root / "a" / "z.txt", "a/z.txt"),
        (root / "b.md", "b.md"),
        (single, "single.md"),
    ]
    hidden_root = tmp_path / ".cache"  # only paths below a given folder are judged
    hidden_root.mkdir()
    (hidden_root / "c.md").write_text("x")
    assert list(iter_files([hidden_root])) == [(hidden_root / "c.md", "c.md")]


async def test_each_job_carries_the_ingestors_settings(rt: Runtime) -> None:
    sandbox = RecordingSandbox()
    async with Ingestor(rt, sandbox=sandbox) as ingestor:
        await ingestor.ingest_bytes("kb", "pods.md", PODS, "p1", {"acl_groups": ["ops"]})
    assert sandbox.closed
    (job,) = sandbox.jobs
    assert (job.filename, job.data, job.document_id) == ("pods.md", PODS, "p1")
    assert job.metadata == {"acl_groups": ["ops"]}
    assert job.max_bytes == 123_456  # an upload is held to http.max_upload_bytes
    assert job.limits == parse_limits(rt.settings.ingest)
    assert (job.max_words, job.overlap_words, job.first_line) == (200, 40, None)
    assert job.version == f"{rt.embedder.model_id}|200|40"
    doc = await rt.store.get_document("kb", "p1")
    assert doc is not None and doc.metadata["acl_groups"] == ["ops"]
    assert (doc.title, doc.source) == ("Pods", "pods.md")

    other = RecordingSandbox()
    async with Ingestor(rt, max_words=50, overlap_words=5, sandbox=other) as ingestor:
        [outcome] = await ingestor.ingest_bytes("kb", "pods.md", PODS, "p1")
    (job,) = other.jobs
    assert (job.max_words, job.overlap_words, job.metadata) == (50, 5, {})
    assert job.version == f"{rt.embedder.model_id}|50|5"
    assert outcome.status == "updated"  # same text, other chunking: a new content hash


async def test_created_unchanged_updated(rt: Runtime) -> None:
    async with Ingestor(rt, sandbox=RecordingSandbox()) as ingestor:
        first = await ingestor.ingest_bytes("kb", "pods.md", PODS)
        again = await ingestor.ingest_bytes("kb", "pods.md", PODS)
        changed = await ingestor.ingest_bytes("kb", "pods.md", PODS + b"\nAnd one more line.\n")
    assert _got(first) == [("pods.md", "created", 2, None)]
    assert _got(again) == [("pods.md", "unchanged", 0, None)]
    assert _got(changed) == [("pods.md", "updated", 2, None)]
    assert len(_embedder(rt).batches) == 2  # nothing embedded for the unchanged one
    assert _cache(rt).invalidated == ["kb", "kb"]  # only when something was written


def test_written_is_what_the_store_saw() -> None:
    assert _written(None, "h1") == "created"
    assert _written("h1", "h1") == "unchanged"
    assert _written("h0", "h1") == "updated"


async def test_chunks_are_embedded_with_their_title_and_headings(rt: Runtime) -> None:
    async with Ingestor(rt, sandbox=RecordingSandbox()) as ingestor:
        await ingestor.ingest_bytes("kb", "pods.md", PODS)
        record = b'{"_id": "plain", "text": "no title, no headings"}\n'
        await ingestor.ingest_bytes("kb", "plain.jsonl", record)
    pods, plain = _embedder(rt).batches
    assert pods == [f"Pods\n{POD.strip()}", f"Pods / Limits\n{LIMIT.strip()}"]
    assert plain == ["no title, no headings"]
    assert _embedding_text(Chunk("c", "d", 0, "body", title="", headings=("", "H"))) == "H\nbody"
    assert _embedding_text(Chunk("c", "d", 0, "body", title="T", headings=("A", "B"))) == (
        "T / A / B\nbody"
    )


async def test_documents_are_written_in_batches_of_chunks(rt: Runtime) -> None:
    lines = b"".join(b'{"_id": "d%d", "text": "record %d"}\n' % (i, i) for i in range(5))
    async with Ingestor(rt, batch_chunks=2, sandbox=RecordingSandbox()) as ingestor:
        outcomes = await ingestor.ingest_bytes("kb", "five.jsonl", lines)
    assert _got(outcomes) == [(f"d{i}", "created", 1, None) for i in range(5)]
    assert [len(b) for b in _embedder(rt).batches] == [2, 2, 1]  # at 2 chunks, and the rest
    assert _cache(rt).invalidated == ["kb"] * 3
    async with Ingestor(rt, sandbox=RecordingSandbox()) as ingestor:
        await ingestor.ingest_bytes("kb", "six.jsonl", lines.replace(b"record", b"entry"))
    assert [len(b) for b in _embedder(rt).batches][3:] == [5]  # the default: 512 chunks


async def test_batches_of_chunks_span_files(rt: Runtime, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b", "c", "d", "e"):
        (folder / f"{name}.txt").write_text(f"the file {name}")
    async with Ingestor(rt, batch_chunks=2, sandbox=RecordingSandbox()) as ingestor:
        outcomes = await ingestor.ingest_paths("kb", [folder])
    assert [o.status for o in outcomes] == ["created"] * 5
    # one chunk per file: a batch fills across files, the last one is what is left
    assert [len(b) for b in _embedder(rt).batches] == [2, 2, 1]


async def test_a_file_that_cannot_be_prepared_is_rejected_and_the_rest_lands(
    rt: Runtime, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.md").write_bytes(PODS)
    (folder / "b.exe").write_bytes(b"MZ")
    (folder / "c.txt").write_bytes(b"")
    (folder / "d.txt").write_text("the last good file")
    seen: list[IngestOutcome] = []
    async with Ingestor(rt, sandbox=RecordingSandbox()) as ingestor:
        outcomes = await ingestor.ingest_paths("kb", [folder], seen.append)
    assert _got(outcomes) == [
        ("b.exe", "rejected", 0, "unsupported_media_type"),
        ("c.txt", "rejected", 0, "empty_document"),
        ("a.md", "created", 2, None),
        ("d.txt", "created", 1, None),
    ]
    assert seen == outcomes
    assert [o.source for o in outcomes] == [
        str(folder / n) for n in ("b.exe", "c.txt", "a.md", "d.txt")
    ]


async def test_outcomes_are_only_reported_when_not_kept(rt: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "a.md"
    path.write_bytes(PODS)
    seen: list[IngestOutcome] = []
    async with Ingestor(rt, sandbox=RecordingSandbox()) as ingestor:
        assert await ingestor.ingest_paths("kb", [path], seen.append, keep=False) == []
    assert _got(seen) == [("a.md", "created", 2, None)]


async def test_unreadable_local_files_are_rejected_with_the_reason(
    rt: Runtime, tmp_path: Path
) -> None:
    async with Ingestor(rt, sandbox=RecordingSandbox()) as ingestor:
        outcomes = await ingestor.ingest_paths(
            "kb", [tmp_path / "gone.md", tmp_path / "gone.jsonl"]
        )
    assert _got(outcomes) == [
        ("gone.md", "rejected", 0, "document_rejected"),
        ("gone.jsonl", "rejected", 0, "document_rejected"),
    ]
    assert [o.reason for o in outcomes] == [
        f"{tmp_path / 'gone.md'}: cannot read: No such file or directory",
        f"{tmp_path / 'gone.jsonl'}: cannot read: No such file or directory",
    ]
    assert all(isinstance(o.error, DocumentRejected) for o in outcomes)


async def test_local_files_are_read_with_their_own_size_as_the_limit(
    rt: Runtime, tmp_path: Path
) -> None:
    big = tmp_path / "big.md"
    big.write_text(
        "# Big\n\n" + "The harbour floods twice a day.\n" * 5000
    )  # over the upload limit
    sandbox = RecordingSandbox()
    async with Ingestor(rt, sandbox=sandbox) as ingestor:
        [outcome] = await ingestor.ingest_paths("kb", [big])
    assert outcome.status == "created"
    (job,) = sandbox.jobs
    assert job.max_bytes == big.stat().st_size > rt.settings.http.max_upload_bytes
    assert (job.filename, job.document_id, job.first_line) == (str(big), "big.md", None)


async def test_a_binary_file_too_large_for_a_parse_worker_is_refused_unread(
    rt: Runtime, tmp_path: Path
) -> None:
    memory = rt.settings.ingest.worker_memory_bytes
    path = tmp_path / "huge.pdf"
    with path.open("wb") as f:
        f.truncate(memory // 4 + 1)  # sparse: no disk, no memory
    sandbox = RecordingSandbox()
    async with Ingestor(rt, sandbox=sandbox) as ingestor:
        [outcome] = await ingestor.ingest_paths("kb", [path])
    assert (outcome.status, outcome.error_code) == ("rejected", "document_too_large")
    assert outcome.reason == (
        f"huge.pdf: a {memory // 4 + 1:,}-byte file, too large to parse within a parse "
        f"worker's {memory // 1_048_576:,} MiB (ingest.worker_memory_bytes)"
    )
    assert outcome.error.limit == "worker_memory_bytes"  # type: ignore[union-attr]
    assert sandbox.jobs == []


async def test_a_utf16_jsonl_file_cannot_be_streamed(rt: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "wide.jsonl"
    path.write_bytes('{"_id": "a", "text": "x"}\n'.encode("utf-16"))
    async with Ingestor(rt, sandbox=RecordingSandbox()) as ingestor:
        [outcome] = await ingestor.ingest_paths("kb", [path])
    assert (outcome.document_id, outcome.error_code) == (None, "corrupt_document")
    assert (
        outcome.reason == "wide.jsonl: a UTF-16 JSONL file cannot be streamed; convert it to UTF-8"
    )


async def test_streamed_jsonl_jobs_start_at_their_first_line(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "STREAM_BATCH_BYTES", 60)
    path = tmp_path / "recs.jsonl"
    path.write_text("".join(f'{{"_id": "r{i}", "text": "record {i}"}}\n' for i in range(4)))
    sandbox = RecordingSandbox()
    async with Ingestor(rt, sandbox=sandbox) as ingestor:
        outcomes = await ingestor.ingest_paths("kb", [path])
    assert [(o.document_id, o.status) for o in outcomes] == [(f"r{i}", "created") for i in range(4)]
    assert [j.first_line for j in sandbox.jobs] == [1, 3]
    assert all(j.max_bytes == len(j.data) and j.document_id is None for j in sandbox.jobs)
    assert all(j.filename == str(path) for j in sandbox.jobs)


async def test_a_duplicate_id_is_only_refused_within_one_file(rt: Runtime, tmp_path: Path) -> None:
    (tmp_path / "one.jsonl").write_text('{"_id": "same", "text": "from one"}\n')
    # on another line than in one.jsonl: the lines of one file are not the other's
    (tmp_path / "two.jsonl").write_text(
        '{"_id": "other", "text": "x"}\n{"_id": "same", "text": "from two"}\n'
    )
    async with Ingestor(rt, sandbox=RecordingSandbox()) as ingestor:
        outcomes = await ingestor.ingest_paths(
            "kb", [tmp_path / "one.jsonl", tmp_path / "two.jsonl"]
        )
    assert [(o.document_id, o.status) for o in outcomes] == [
        ("same", "created"),
        ("other", "created"),
        ("same", "updated"),
    ]


def test_a_budget_draws_for_new_documents_until_used_up() -> None:
    unlimited = Budget()
    assert unlimited.take(10**9) is None and unlimited == Budget()
    budget = Budget(documents=2, bytes=100)
    assert budget.take(60) is None
    assert (budget.documents, budget.bytes) == (1, 40)
    over = budget.take(41)
    assert isinstance(over, QuotaExceeded)
    assert (over.message, over.retry_after) == ("the tenant's stored bytes quota is used up", 3600)
    assert (budget.documents, budget.bytes) == (1, 40)  # a refusal takes nothing
    assert budget.take(40) is None  # exactly what is left
    assert (budget.documents, budget.bytes) == (0, 0)
    used = budget.take(0)
    assert isinstance(used, QuotaExceeded)
    assert (used.message, used.retry_after) == ("the tenant's documents quota is used up", 3600)
    only_documents = Budget(documents=1)
    assert only_documents.take(10**9) is None and only_documents == Budget(documents=0)
    only_bytes = Budget(bytes=5)
    assert only_bytes.take(5) is None and only_bytes == Budget(bytes=0)


async def test_a_budget_refuses_new_documents_not_updates(rt: Runtime) -> None:
    async with Ingestor(rt, sandbox=RecordingSandbox()) as ingestor:
        await ingestor.ingest_bytes("kb", "pods.md", PODS)
        budget = Budget(documents=0)
        update = await ingestor.ingest_bytes("kb", "pods.md", PODS + b"\nMore.\n", budget=budget)
        new = await ingestor.ingest_bytes("kb", "new.md", PODS, budget=budget)
    assert _got(update) == [("pods.md", "updated", 2, None)]
    assert _got(new) == [("new.md", "rejected", 0, "quota_exceeded")]
    assert await rt.store.get_document("kb", "new.md") is None


def _count(outcome: str) -> float:
    return float(DOCUMENTS_INGESTED.labels(outcome)._value.get())


async def test_outcomes_and_chunks_are_counted(rt: Runtime) -> None:
    before = {s: _count(s) for s in ("created", "updated", "unchanged", "rejected")}
    chunks = float(CHUNKS_INGESTED._value.get())
    async with Ingestor(rt, sandbox=RecordingSandbox()) as ingestor:
        await ingestor.ingest_bytes("kb", "pods.md", PODS)
        await ingestor.ingest_bytes("kb", "pods.md", PODS + b"\nMore.\n")
        await ingestor.ingest_bytes("kb", "empty.txt", b"")
    after = {s: _count(s) - before[s] for s in before}
    assert after == {"created": 1, "updated": 1, "unchanged": 0, "rejected": 1}
    assert CHUNKS_INGESTED._value.get() - chunks == 4


async def test_an_invalid_namespace_is_refused_before_anything(rt: Runtime) -> None:
    sandbox = RecordingSandbox()
    async with Ingestor(rt, sandbox=sandbox) as ingestor:
        with pytest.raises(InvalidNamespace):
            await ingestor.ingest_bytes("Bad Name!", "pods.md", PODS)
    assert sandbox.jobs == []


async def test_without_its_own_sandbox_an_ingestor_uses_and_stops_the_shared_one(
    rt: Runtime,
) -> None:
    ingestor = Ingestor(rt)
    shared = shared_sandbox(sandbox_config(rt.settings.ingest))
    assert ingestor.sandbox is shared
    await ingestor.aclose()
    assert ingestor.sandbox is not shared  # closed: the next use starts another
    own = RecordingSandbox()
    assert Ingestor(rt, sandbox=own).sandbox is own


async def test_a_rejection_is_logged_with_its_source_and_code(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="ragtide.ingest.pipeline"):
        async with Ingestor(rt, sandbox=RecordingSandbox()) as ingestor:
            await ingestor.ingest_bytes("kb", "empty.txt", b"")
    (record,) = [r for r in caplog.records if r.name == "ragtide.ingest.pipeline"]
    assert (record.levelno, record.getMessage()) == (logging.WARNING, "document rejected")
    assert (record.source, record.error) == ("empty.txt", "empty_document")  # type: ignore[attr-defined]


async def test_a_refused_document_is_reported_under_its_file_and_id(rt: Runtime) -> None:
    long_id = "x" * 600  # over 512 characters
    records = b'{"_id": "%s", "text": "x"}\n{"_id": "ok", "text": "fine"}\n' % long_id.encode()
    async with Ingestor(rt, sandbox=RecordingSandbox()) as ingestor:
        outcomes = await ingestor.ingest_bytes("kb", "two.jsonl", records)
    assert [(o.source, o.document_id, o.status, o.error_code) for o in outcomes] == [
        ("two.jsonl", long_id, "rejected", "invalid_request"),
        ("two.jsonl", "ok", "created", None),
    ]


async def test_a_long_file_yields_to_the_event_loop_between_documents(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "_YIELD_EVERY_S", 0.0)  # yield before every document
    records = b"".join(b'{"_id": "r%d", "text": "record %d"}\n' % (i, i) for i in range(20))
    async with Ingestor(rt, sandbox=RecordingSandbox()) as ingestor:
        outcomes = await ingestor.ingest_bytes("kb", "many.jsonl", records)
    assert [o.status for o in outcomes] == ["created"] * 20


async def test_documents_after_an_unchanged_one_are_still_compared(
    rt: Runtime, tmp_path: Path
) -> None:
    first = b'{"_id": "r1", "text": "one"}\n{"_id": "r2", "text": "two"}\n'
    second = b'{"_id": "r1", "text": "one"}\n{"_id": "r2", "text": "two, changed"}\n'
    async with Ingestor(rt, sandbox=RecordingSandbox()) as ingestor:
        await ingestor.ingest_bytes("kb", "recs.jsonl", first)
        outcomes = await ingestor.ingest_bytes("kb", "recs.jsonl", second)
    assert [(o.source, o.document_id, o.status) for o in outcomes] == [
        ("recs.jsonl", "r1", "unchanged"),
        ("recs.jsonl", "r2", "updated"),
    ]
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"_id": "a", "text": "first"}\n{"_id": "a", "text": "again"}\n')
    async with Ingestor(rt, sandbox=RecordingSandbox()) as ingestor:
        outcomes = await ingestor.ingest_paths("kb", [dup])
    assert [(o.source, o.document_id, o.status, o.error_code) for o in outcomes] == [
        (str(dup), "a", "rejected", "corrupt_document"),
        (str(dup), "a", "created", None),
    ]


async def test_a_budget_refuses_each_document_past_it_by_size_or_count(rt: Runtime) -> None:
    records = b"".join(b'{"_id": "r%d", "text": "record number %d"}\n' % (i, i) for i in range(3))
    async with Ingestor(rt, sandbox=RecordingSandbox()) as ingestor:
        by_count = await ingestor.ingest_bytes(
            "kb", "count.jsonl", records, budget=Budget(documents=1)
        )
        by_size = await ingestor.ingest_bytes(
            "other", "size.jsonl", records, budget=Budget(bytes=20)
        )
    assert [(o.source, o.document_id, o.status, o.error_code) for o in by_count] == [
        ("count.jsonl", "r1", "rejected", "quota_exceeded"),
        ("count.jsonl", "r2", "rejected", "quota_exceeded"),
        ("count.jsonl", "r0", "created", None),
    ]
    assert [(o.document_id, o.status) for o in by_size] == [
        ("r1", "rejected"),
        ("r2", "rejected"),
        ("r0", "created"),
    ]  # each record's text is 15 bytes: one fits in 20
    assert by_size[0].reason == "the tenant's stored bytes quota is used up"


async def test_an_ingest_stopped_midway_raises_its_own_error(rt: Runtime, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"")  # rejected: its outcome is reported first
    (tmp_path / "b.md").write_bytes(PODS)  # already being prepared by then

    def stop(outcome: IngestOutcome) -> None:
        raise RuntimeError(f"stop at {outcome.document_id}")

    async with Ingestor(rt, sandbox=RecordingSandbox()) as ingestor:
        with pytest.raises(RuntimeError, match=r"stop at a\.txt"):
            await ingestor.ingest_paths("kb", [tmp_path], stop)
    assert await rt.store.get_document("kb", "b.md") is None


async def test_each_chunk_is_stored_with_its_own_vector(rt: Runtime) -> None:
    texts = ["alpha beta gamma", "delta epsilon zeta", "eta theta iota", "kappa lambda mu"]
    records = b"".join(
        b'{"_id": "d%d", "text": "%s"}\n' % (i, t.encode()) for i, t in enumerate(texts)
    )
    async with Ingestor(rt, sandbox=RecordingSandbox()) as ingestor:
        await ingestor.ingest_bytes("kb", "four.jsonl", records)  # one flush of four
    for i, text in enumerate(texts):
        vector = await rt.embedder.embed_documents([text])
        [best] = await rt.store.vector_search("kb", vector[0], 1, Filter())
        assert best.chunk.document_id == f"d{i}"


async def test_concurrent_ingests_of_one_file_create_it_once(rt: Runtime) -> None:
    async with Ingestor(rt, sandbox=RecordingSandbox()) as ingestor:
        results = await asyncio.gather(
            *(ingestor.ingest_bytes("kb", "pods.md", PODS) for _ in range(5))
        )
    statuses = sorted(o.status for outcomes in results for o in outcomes)
    assert statuses == ["created", "unchanged", "unchanged", "unchanged", "unchanged"]


async def test_the_default_batch_is_512_chunks(rt: Runtime) -> None:
    records = b"".join(b'{"_id": "r%d", "text": "record %d"}\n' % (i, i) for i in range(513))
    async with Ingestor(rt, sandbox=RecordingSandbox()) as ingestor:
        await ingestor.ingest_bytes("kb", "many.jsonl", records)
    assert [len(b) for b in _embedder(rt).batches] == [512, 1]


class BatchStore:
    """The runtime's store with a batch write (as PostgresStore has), recording its calls."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.models: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def put_documents(self, namespace: str, writes: Any, model: str) -> list[Any]:
        self.models.append(model)
        return [await self.inner.put_document(namespace, *w, model) for w in writes]


async def test_a_store_with_a_batch_write_gets_one_call_with_the_model(rt: Runtime) -> None:
    store = BatchStore(rt.store)
    rt.store = store  # type: ignore[assignment]
    records = b"".join(b'{"_id": "r%d", "text": "record %d"}\n' % (i, i) for i in range(3))
    async with Ingestor(rt, sandbox=RecordingSandbox()) as ingestor:
        outcomes = await ingestor.ingest_bytes("kb", "three.jsonl", records)
    assert [o.status for o in outcomes] == ["created"] * 3
    assert store.models == [rt.embedder.model_id]


async def test_the_parse_workers_count_terms_only_for_a_store_that_takes_them(
    rt: Runtime,
) -> None:
    sandbox = RecordingSandbox()
    async with Ingestor(rt, sandbox=sandbox) as ingestor:  # the embedded store takes them
        await ingestor.ingest_bytes("kb", "a.md", PODS)
    rt.store = AnalysingStore(rt.store)  # type: ignore[assignment]
    async with Ingestor(rt, sandbox=sandbox) as ingestor:
        await ingestor.ingest_bytes("kb", "b.md", PODS)
    assert [job.count_terms for job in sandbox.jobs] == [True, False]


class AnalysingStore(BatchStore):
    """The runtime's store as one that analyses chunks itself (as PostgresStore does)."""

    takes_chunk_terms = False


class BlindReads(BatchStore):
    """The runtime's store whose reads before a write never see the document, as when
    another upload of the same id writes between this one's read and its write."""

    async def get_document(self, namespace: str, document_id: str) -> None:
        return None


async def test_what_the_write_found_decides_the_status_not_the_read_before(rt: Runtime) -> None:
    rt.store = BlindReads(rt.store)  # type: ignore[assignment]
    async with Ingestor(rt, sandbox=RecordingSandbox()) as ingestor:
        first = await ingestor.ingest_bytes("kb", "pods.md", PODS)
        same = await ingestor.ingest_bytes("kb", "pods.md", PODS)
        changed = await ingestor.ingest_bytes("kb", "pods.md", PODS + b"\nMore text.\n")
    assert [o.status for o in (*first, *same, *changed)] == ["created", "unchanged", "updated"]


class GatedSandbox(ParseSandbox):
    """A sandbox of ``workers`` whose jobs finish only when the test opens their gate."""

    def __init__(self, workers: int) -> None:
        super().__init__(SandboxConfig(workers=workers, inline_max_bytes=1 << 30))
        self.started: list[str] = []
        self.cancelled: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}

    async def prepare(self, job: PrepareJob) -> Any:
        self.started.append(job.filename)
        gate = self.gates.setdefault(job.filename, asyncio.Event())
        try:
            await gate.wait()
        except asyncio.CancelledError:
            self.cancelled.append(job.filename)
            raise
        return job.filename  # what the test reads back, in place of documents


async def _settle() -> None:
    """Run every task that can run (nothing here waits on anything but the gates)."""
    for _ in range(50):
        await asyncio.sleep(0)


@pytest.mark.parametrize("workers", [1, 2, 3])
async def test_one_job_per_parse_worker_is_prepared_ahead_and_results_come_in_order(
    rt: Runtime, workers: int
) -> None:
    """While the first job's documents wait to be written, the next jobs are already in
    the sandbox, one for each worker (with one ahead, a second worker sat idle); the
    results still come in the sources' order, whichever job finishes first."""
    sandbox = GatedSandbox(workers)
    names = [f"f{i}" for i in range(6)]

    async def sources() -> AsyncIterator[Any]:
        for name in names:
            yield name, None, PrepareJob(name, b"")

    async with Ingestor(rt, sandbox=sandbox) as ingestor:
        prepared = ingestor._prepared(sources())
        first = asyncio.ensure_future(anext(prepared))
        await _settle()
        assert sandbox.started == names[: 1 + workers] and not first.done()
        for name in reversed(names):  # the last job finishes first
            sandbox.gates.setdefault(name, asyncio.Event()).set()
        got = [await first] + [item async for item in prepared]
    assert got == [(name, None, name) for name in names]
    assert sandbox.cancelled == []


async def test_jobs_ahead_are_cancelled_when_the_caller_stops(rt: Runtime) -> None:
    sandbox = GatedSandbox(2)

    async def sources() -> AsyncIterator[Any]:
        for name in ("a", "b", "c", "d"):
            yield name, None, PrepareJob(name, b"")

    async with Ingestor(rt, sandbox=sandbox) as ingestor:
        prepared = ingestor._prepared(sources())
        sandbox.gates["a"] = asyncio.Event()
        sandbox.gates["a"].set()
        assert await anext(prepared) == ("a", None, "a")
        await _settle()
        await prepared.aclose()
        await _settle()
    # "a" was handed over, "b" and "c" were in the sandbox, "d" never read
    assert sandbox.started == ["a", "b", "c"]
    assert sorted(sandbox.cancelled) == ["b", "c"]
