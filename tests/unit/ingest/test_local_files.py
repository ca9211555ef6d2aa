"""Local files (``Ingestor.ingest_paths``, what ``ragtide ingest`` runs): not held to the
upload limit; a JSONL file is streamed a batch of lines at a time, each record its own
document, refused alone with its line number."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ragtide.ingest import pipeline
from ragtide.ingest.local import JsonlBatches
from ragtide.ingest.pipeline import Ingestor, IngestOutcome
from ragtide.runtime import Runtime, build_runtime
from ragtide.settings import Settings

pytestmark = pytest.mark.anyio


def _line(doc_id: str | int, text: str) -> str:
    return json.dumps({"_id": doc_id, "text": text}) + "\n"


def _settings(tmp_path: Path, **ingest: int) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        embedder={"use": "hashing"},
        http={"max_upload_bytes": 1000},  # an upload limit every file below is over
        ingest={"max_line_chars": 300, "max_document_chars": 200, "workers": 1, **ingest},
        logging={"format": "console", "access_log": False},
    )


@pytest.fixture
async def rt(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Runtime]:
    runtime = build_runtime(_settings(tmp_path, **getattr(request, "param", {})))
    await runtime.start()
    yield runtime
    await runtime.aclose()


async def _ingest(rt: Runtime, *paths: Path) -> list[IngestOutcome]:
    async with Ingestor(rt) as ingestor:
        return await ingestor.ingest_paths("kb", paths)


def test_batches_are_whole_lines_numbered_across_batches() -> None:
    data = b"".join(_line(i, f"record {i}").encode() for i in range(10))
    batches = JsonlBatches(io.BytesIO(data), max_line_chars=100, batch_bytes=60)
    seen = []
    while (batch := batches.next()) is not None:
        first, lines, too_long = batch
        assert lines.endswith(b"\n") and not too_long
        seen += [(first + k, line) for k, line in enumerate(lines.splitlines())]
    assert len(seen) > 1 and [n for n, _ in seen] == list(range(1, 11))
    assert [json.loads(line)["_id"] for _, line in seen] == list(range(10))


def test_a_line_too_long_to_be_a_record_is_skipped_unread() -> None:
    data = _line("a", "ok").encode() + b"x" * 5000 + b"\n" + _line("b", "ok").encode()
    batches = JsonlBatches(io.BytesIO(data), max_line_chars=100, batch_bytes=1 << 20)
    first, lines, too_long = batches.next()  # type: ignore[misc]
    assert (first, too_long) == (1, [2])
    assert lines.split(b"\n")[1] == b""  # left empty: line 3 is still line 3
    assert json.loads(lines.split(b"\n")[2])["_id"] == "b"
    assert batches.next() is None


async def test_a_jsonl_file_over_the_upload_limit_lands_record_by_record(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "STREAM_BATCH_BYTES", 200)  # many batches
    path = tmp_path / "big.jsonl"
    path.write_text("".join(_line(f"r{i}", f"harbour record number {i}") for i in range(100)))
    assert path.stat().st_size > rt.settings.http.max_upload_bytes
    outcomes = await _ingest(rt, path)
    assert [(o.document_id, o.status) for o in outcomes] == [
        (f"r{i}", "created") for i in range(100)
    ]
    assert await rt.store.get_document("kb", "r99") is not None


async def test_bad_records_are_refused_alone_naming_their_line(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "STREAM_BATCH_BYTES", 100)  # the duplicate is a batch later
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        _line("a", "first")
        + "\n"  # blank lines are skipped, and counted
        + "{not json\n"
        + _line("long", "y" * 250)  # over max_document_chars (200), under max_line_chars
        + "z" * 2000  # over 4 bytes a character of max_line_chars: skipped unread
        + "\n"
        + _line("b", "second")
        + _line("a", "again")
        + _line("c", "last").rstrip("\n")  # no newline at the end
    )
    outcomes = await _ingest(rt, path)
    got = {(o.document_id, o.status, o.error_code) for o in outcomes}
    assert got == {
        ("a", "created", None),
        (None, "rejected", "corrupt_document"),
        (None, "rejected", "document_too_large"),
        (None, "rejected", "document_too_large"),
        ("b", "created", None),
        ("a", "rejected", "corrupt_document"),
        ("c", "created", None),
    }
    reasons = sorted(o.reason or "" for o in outcomes if o.status == "rejected")
    assert reasons == [
        "mixed.jsonl line 3: invalid JSON (Expecting property name enclosed in double quotes)",
        "mixed.jsonl line 4: 250 characters of text, over the 200 limit "
        "(ingest.max_document_chars)",
        "mixed.jsonl line 5: a line of more than 300 characters, over the 300 limit "
        "(ingest.max_line_chars)",
        "mixed.jsonl line 7: duplicate \"_id\" 'a' (first on line 1)",
    ]
    assert (await rt.store.get_document("kb", "a")).title == ""  # type: ignore[union-attr]


async def test_an_empty_jsonl_file_is_reported(rt: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n  \n")
    [outcome] = await _ingest(rt, path)
    assert (outcome.status, outcome.error_code) == ("rejected", "empty_document")


@pytest.mark.parametrize("rt", [{"max_document_chars": 2000}], indirect=True)
async def test_a_one_document_file_is_held_to_per_document_limits_not_the_upload_limit(
    rt: Runtime, tmp_path: Path
) -> None:
    (tmp_path / "in").mkdir()
    ok = tmp_path / "in" / "ok.md"
    ok.write_text("# Tides\n\n" + "The harbour floods twice a day.\n" * 40)
    assert ok.stat().st_size > rt.settings.http.max_upload_bytes
    huge = tmp_path / "in" / "huge.txt"
    huge.write_bytes(b"w " * 4100)  # 8,200 bytes: at least 2,050 characters, refused unread
    outcomes = await _ingest(rt, tmp_path / "in")
    assert {o.document_id: (o.status, o.error_code) for o in outcomes} == {
        "ok.md": ("created", None),
        "huge.txt": ("rejected", "document_too_large"),
    }
    [refused] = [o for o in outcomes if o.status == "rejected"]
    assert refused.reason == (
        "huge.txt: 8,200 bytes (at least 2,050 characters), over the 2,000 limit "
        "(ingest.max_document_chars)"
    )


async def test_files_too_large_for_any_rule_are_refused_without_being_read(
    rt: Runtime, tmp_path: Path
) -> None:
    """Sparse files of many GiB: reading any of them whole would take the test down."""
    (tmp_path / "in").mkdir()
    for name in ("scan.pdf", "notes.md", "dump.bin"):
        with (tmp_path / "in" / name).open("wb") as f:
            f.truncate(8 * 1024**3)
    outcomes = await _ingest(rt, tmp_path / "in")
    got = {o.document_id: (o.status, o.error_code) for o in outcomes}
    assert got == {
        "dump.bin": ("rejected", "unsupported_media_type"),
        "notes.md": ("rejected", "document_too_large"),
        "scan.pdf": ("rejected", "document_too_large"),
    }
    reasons = {o.document_id: o.reason for o in outcomes}
    assert "(ingest.worker_memory_bytes)" in (reasons["scan.pdf"] or "")
    assert "(ingest.max_document_chars)" in (reasons["notes.md"] or "")
