"""Index maintenance never blocks serving: a 100k-chunk namespace under writes and searches.

The SQLite store searches a per-namespace in-memory index. It used to rebuild that index
from every row, on the event loop, at the first search after any write (0.7-0.9 s at
100k chunks, seconds at 300k), so one client alternating tiny uploads and searches
stalled every other request of the process. Now a write advances the index in the
writer thread before it returns, another process's writes are loaded in a thread while
searches keep the snapshot they have, and a first load runs in a thread too.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from pathlib import Path

import apsw
import numpy as np
import pytest

from ragtide.builtin.sqlite_store import SQLiteStore
from ragtide.testing.fakes import make_chunks, make_document
from ragtide.types import Filter

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

CHUNKS = 100_000
PER_DOCUMENT = 500
DIM = 384
VOCABULARY = 5_000
NS = "t1/big"
# The longest the event loop may go without running a ready callback. A rebuild of the
# 100k-chunk index on the loop took 0.7-0.9 s (3-4 s on this shared CI box); what is left
# on the loop now is a search (a 100k x 384 matrix-vector product, ~25 ms) and the
# GIL handed back and forth with the writer and loader threads (5 ms switch interval).
# 250 ms leaves room for a slow, shared machine and still fails any rebuild on the loop.
# On a machine with more runnable threads than cores the OS alone delays the loop's thread
# (seen: 0.4-0.7 s at a load of 13 on 2 cores, with nothing blocking the loop), so the bound
# grows with the load per core; a rebuild on the loop (seconds here) still fails it.
MAX_STALL = 0.25


def _max_stall() -> float:
    return MAX_STALL * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))


def _word(i: int) -> str:
    """A word of letters only, unlike any other ``_word`` and the vocabulary's."""
    letters = ""
    i += 26 * 26
    while i:
        i, r = divmod(i, 26)
        letters += chr(ord("a") + r)
    return "qx" + letters


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, np.float32)
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


async def _fill(path: Path) -> None:
    """100k chunks written straight into the file (put_document would take minutes):
    random unit vectors, 30 draws from a 5k-word vocabulary per chunk."""
    store = SQLiteStore(SQLiteStore.Config(path=path))
    await store.start()
    await store.create_namespace(NS)
    await store.aclose()
    rng = np.random.default_rng(0)
    conn = apsw.Connection(str(path))
    with conn:
        conn.executemany(
            "INSERT INTO terms(term) VALUES(?)", ((f"vocab{i}",) for i in range(VOCABULARY))
        )
        first = conn.execute("SELECT min(id) FROM terms WHERE term LIKE 'vocab%'").fetchone()[0]
        now = time.time()
        for d in range(CHUNKS // PER_DOCUMENT):
            doc = f"bulk{d}"
            conn.execute(
                "INSERT INTO documents(namespace, id, title, source, content_hash, metadata,"
                " chunks, created_at, updated_at, bytes) VALUES(?, ?, '', '', ?, ?, ?, ?, ?, 0)",
                (NS, doc, doc, json.dumps({"part": str(d % 7)}), PER_DOCUMENT, now, now),
            )
            vectors = _unit(rng.standard_normal((PER_DOCUMENT, DIM)))
            draws = rng.integers(0, VOCABULARY, (PER_DOCUMENT, 30))
            rows = []
            for o in range(PER_DOCUMENT):
                ids, tfs = np.unique(draws[o], return_counts=True)
                rows.append(
                    (
                        NS,
                        doc,
                        f"{doc}:{o}",
                        o,
                        f"text of {doc} {o}",
                        json.dumps({"part": str(d % 7)}),
                        vectors[o].tobytes(),
                        (ids + first).astype(np.uint32).tobytes(),
                        tfs.astype(np.uint16).tobytes(),
                    )
                )
            conn.executemany(
                "INSERT INTO chunks(namespace, document_id, chunk_id, ordinal, title, headings,"
                " text, metadata, embedder, vector, term_ids, term_tfs)"
                " VALUES(?, ?, ?, ?, '', '[]', ?, ?, 'e', ?, ?, ?)",
                rows,
            )
    conn.close()


class _Lag:
    """How late ``asyncio.sleep(0.005)`` wakes up: the event loop's responsiveness."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(0.005)
            self.lags.append(time.perf_counter() - start - 0.005)

    def __enter__(self) -> _Lag:
        self._task = asyncio.ensure_future(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    def report(self, label: str) -> float:
        lags = np.array(self.lags) * 1000
        worst = float(lags.max()) if len(lags) else 0.0
        print(
            f"\n{label}: {len(lags)} ticks, loop lag p50 {np.percentile(lags, 50):.1f} ms,"
            f" p99 {np.percentile(lags, 99):.1f} ms, max {worst:.1f} ms"
        )
        return worst / 1000


_OTHER_PROCESS = """
import asyncio, sys
import numpy as np
from pathlib import Path
from ragtide.builtin.sqlite_store import SQLiteStore
from ragtide.testing.fakes import make_chunks, make_document

async def main():
    store = SQLiteStore(SQLiteStore.Config(path=Path(sys.argv[1])))
    await store.start()
    vector = np.zeros((1, int(sys.argv[3])), np.float32)
    vector[0, 7] = 1.0
    chunks = make_chunks("other", [sys.argv[2]])
    await store.put_document(sys.argv[4], make_document("other"), chunks, vector, "e")
    await store.aclose()

asyncio.run(main())
"""


async def test_writes_and_searches_never_stall_the_loop(tmp_path: Path) -> None:
    """Alternating 1-chunk uploads and searches on a 100k-chunk namespace.

    Asserts that (1) no event-loop stall exceeds ``_max_stall()`` - not during the first
    (cold) load, not while writes advance the index, not while another process's write
    is loaded in the background; this bounds blocking, the old synchronous rebuild broke
    it on every search after a write; (2) every search right after an upload finds the
    upload, by keyword and by vector, and none after a deletion finds the deleted one
    (read-your-writes); (3) another process's write becomes visible within a bounded
    number of polls, while searches meanwhile keep answering.
    """
    path = tmp_path / "big.sqlite"
    started = time.perf_counter()
    await _fill(path)
    print(f"\nsetup: {CHUNKS} chunks in {time.perf_counter() - started:.1f} s")
    # Exact vector search: random vectors have no neighbourhoods for an HNSW graph to
    # find (the HNSW path under writes and deletions: tests/unit/builtin/test_ann.py).
    store = SQLiteStore(SQLiteStore.Config(path=path, ann_min_chunks=0))
    await store.start()
    rng = np.random.default_rng(1)
    try:
        with _Lag() as cold:
            started = time.perf_counter()
            hits = await store.keyword_search(NS, "vocab1 vocab2", 5, Filter())
            print(f"cold load and search: {time.perf_counter() - started:.2f} s")
        assert hits
        assert cold.report("cold load") < _max_stall()

        with _Lag() as lag:
            started = time.perf_counter()
            write_times, search_times = [], []
            for i in range(40):
                doc, word = f"tiny{i}", _word(i)
                vector = _unit(rng.standard_normal((1, DIM)))
                t = time.perf_counter()
                chunks = make_chunks(doc, [f"{word} vocab3"])
                await store.put_document(NS, make_document(doc), chunks, vector, "e")
                write_times.append(time.perf_counter() - t)
                t = time.perf_counter()
                kw = await store.keyword_search(NS, word, 5, Filter())
                vs = await store.vector_search(NS, vector[0], 5, Filter())
                search_times.append(time.perf_counter() - t)
                assert [h.document_id for h in kw] == [doc], i
                assert vs and vs[0].document_id == doc, i
                if i % 5 == 4:  # and a deletion, seen at once too
                    gone = f"tiny{i - 2}"
                    assert await store.delete_document(NS, gone)
                    assert await store.keyword_search(NS, _word(i - 2), 5, Filter()) == []
                filtered = await store.vector_search(NS, vector[0], 5, Filter.any_of("part", ["3"]))
                assert filtered and all(h.chunk.metadata.get("part") == "3" for h in filtered)
            print(
                f"40 uploads + searches in {time.perf_counter() - started:.2f} s;"
                f" upload p50 {np.median(write_times) * 1000:.1f} ms"
                f" max {max(write_times) * 1000:.1f} ms;"
                f" search after upload p50 {np.median(search_times) * 1000:.1f} ms"
                f" max {max(search_times) * 1000:.1f} ms"
            )
        assert lag.report("uploads and searches") < _max_stall()

        with _Lag() as foreign:
            word = _word(10_000)
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _OTHER_PROCESS, str(path), word, str(DIM), NS
            )
            assert await process.wait() == 0
            probe = np.zeros(DIM, np.float32)
            probe[7] = 1.0
            started = time.perf_counter()
            polls = 0
            while True:
                polls += 1
                hits = await store.vector_search(NS, probe, 5, Filter())
                assert hits  # answered from the snapshot it has while the next one loads
                if hits[0].document_id == "other":
                    break
                assert polls < 400, "the other process's write never became visible"
                await asyncio.sleep(0.025)
            print(
                f"another process's write visible after {polls} polls,"
                f" {time.perf_counter() - started:.2f} s"
            )
            kw = await store.keyword_search(NS, word, 5, Filter())
            assert [h.document_id for h in kw] == ["other"]
        assert foreign.report("another process's write") < _max_stall()
        assert polls <= 400
    finally:
        await store.aclose()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the test process: {peak:.0f} MB ({CHUNKS} chunks of {DIM} dims)")
