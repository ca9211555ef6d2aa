"""The parse sandbox: worker processes with a memory ceiling and a deadline."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ragtide.errors import DocumentTooComplex, DocumentTooLarge
from ragtide.ingest.limits import ParseLimits
from ragtide.ingest.pipeline import Ingestor
from ragtide.ingest.prepare import Prepared, PrepareJob
from ragtide.ingest.sandbox import ParseSandbox, SandboxConfig
from ragtide.runtime import build_runtime
from ragtide.settings import Settings
from ragtide.testing.bombs import docx_bomb, docx_bytes

pytestmark = pytest.mark.anyio
MIB = 1024 * 1024
UNLIMITED = ParseLimits(max_line_chars=10**10, max_document_chars=10**10)


@pytest.fixture
async def sandbox() -> AsyncIterator[ParseSandbox]:
    box = ParseSandbox(SandboxConfig(workers=1, memory_bytes=256 * MIB, timeout_s=5.0))
    yield box
    await box.aclose()


async def test_a_file_is_parsed_and_chunked_in_a_worker(sandbox: ParseSandbox) -> None:
    [doc] = await sandbox.run(PrepareJob("a.docx", docx_bytes("First. Second.")))
    assert isinstance(doc, Prepared)
    assert (doc.id, [c.text for c in doc.chunks]) == ("a.docx", ["First. Second."])
    assert sandbox.pids and sandbox.pids[0] != os.getpid()


async def test_small_text_is_prepared_inline_and_docx_never(sandbox: ParseSandbox) -> None:
    assert await sandbox.prepare(PrepareJob("a.md", b"# T\n\nShort text."))
    assert sandbox.pids == []  # no worker was needed
    assert not sandbox.inline(PrepareJob("a.docx", b"x"))
    assert not sandbox.inline(PrepareJob("a.md", b"x" * (sandbox.config.inline_max_bytes + 1)))


async def test_over_the_memory_ceiling_costs_the_worker_not_the_server(
    sandbox: ParseSandbox,
) -> None:
    job = PrepareJob("huge.txt", b"x" * (200 * MIB), max_bytes=1 << 40, limits=UNLIMITED)
    with pytest.raises(DocumentTooLarge) as caught:
        await sandbox.run(job)
    assert caught.value.limit == "worker_memory_bytes"
    assert "(ingest.worker_memory_bytes)" in caught.value.message
    [doc] = await sandbox.run(PrepareJob("next.txt", b"Still here."))
    assert isinstance(doc, Prepared) and sandbox.lost == 1


async def test_past_the_deadline_the_worker_is_killed() -> None:
    box = ParseSandbox(SandboxConfig(workers=1, timeout_s=0.3))
    try:
        slow = PrepareJob("slow.md", ("word " * 2_000_000).encode(), limits=UNLIMITED)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        began = time.perf_counter()
        with pytest.raises(DocumentTooComplex) as caught:
            await box.run(slow)
        ticker.cancel()
        assert caught.value.limit == "parse_timeout_s"
        assert ticks >= 10  # the event loop kept running meanwhile
        print(f"refused after {time.perf_counter() - began:.2f} s, {ticks} ticks")
        assert await box.run(PrepareJob("ok.md", b"Fine."))
        assert box.lost == 1
    finally:
        await box.aclose()


async def test_a_worker_killed_while_idle_is_replaced(sandbox: ParseSandbox) -> None:
    await sandbox.run(PrepareJob("a.txt", b"One."))
    os.kill(sandbox.pids[0], signal.SIGKILL)
    await asyncio.sleep(0.1)
    [doc] = await sandbox.run(PrepareJob("b.txt", b"Two."))
    assert isinstance(doc, Prepared)


async def test_limits_refuse_in_the_worker_and_it_goes_on(sandbox: ParseSandbox) -> None:
    limits = ParseLimits(max_entry_bytes=MIB)
    with pytest.raises(DocumentTooLarge, match=r"ingest\.max_entry_bytes"):
        await sandbox.run(PrepareJob("bomb.docx", docx_bomb(8 * MIB), limits=limits))
    assert await sandbox.run(PrepareJob("ok.docx", docx_bytes("Fine.")))
    assert sandbox.lost == 0


async def test_concurrent_jobs_share_the_workers() -> None:
    box = ParseSandbox(SandboxConfig(workers=2))
    try:
        jobs = [PrepareJob(f"d{n}.docx", docx_bytes(f"Document {n}.")) for n in range(20)]
        results = await asyncio.gather(*(box.run(j) for j in jobs))
        assert [r[0].id for r in results] == [f"d{n}.docx" for n in range(20)]  # type: ignore[union-attr]
        assert len(box.pids) == 2
        pids = box.pids
    finally:
        await box.aclose()
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids)


async def test_the_rest_of_a_batch_lands(tmp_path: Path) -> None:
    files = tmp_path / "in"
    files.mkdir()
    (files / "a.md").write_text("# A\n\nThe first good file.")
    (files / "bomb.docx").write_bytes(docx_bomb(8 * MIB))
    (files / "deep.html").write_text("<div>" * 2000)
    (files / "z.docx").write_bytes(docx_bytes("The last good file."))
    settings = Settings(
        data_dir=tmp_path / "data",
        embedder={"use": "hashing"},
        ingest={"max_entry_bytes": MIB, "workers": 1},
        logging={"format": "console", "access_log": False},
    )
    rt = build_runtime(settings)
    await rt.start()
    try:
        async with Ingestor(rt) as ingestor:
            outcomes = await ingestor.ingest_paths("kb", [files])
    finally:
        await rt.aclose()
    got = {o.document_id: (o.status, o.error_code) for o in outcomes}
    assert got == {
        "a.md": ("created", None),
        "bomb.docx": ("rejected", "document_too_large"),
        "deep.html": ("rejected", "document_too_complex"),
        "z.docx": ("created", None),
    }
