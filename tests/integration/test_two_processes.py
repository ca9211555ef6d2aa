"""What the unit tests can only imitate in one process, with real processes.

* Two processes on one SQLite file: each sees the other's writes and deletes (the unit
  test ``test_two_connections_share_one_file`` uses two connections of one process).
* The hashing embedder gives the same vector in processes with different hash seeds
  (the unit test pins the buckets in one process).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ragtide.builtin.embedders import HashingEmbedder
from ragtide.builtin.sqlite_store import SQLiteStore
from ragtide.testing.fakes import make_chunks, make_document
from ragtide.types import Filter

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

# One SQLite operation in a fresh interpreter: put or delete a document, or list what a
# keyword search and a vector search find. Prints JSON.
CHILD = r"""
import asyncio, json, sys
import numpy as np
from ragtide.builtin.sqlite_store import SQLiteStore
from ragtide.testing.fakes import make_chunks, make_document
from ragtide.types import Filter

async def main(path, op, arg):
    store = SQLiteStore(SQLiteStore.Config(path=path, poll_seconds=0))
    await store.start()
    one = np.array([[1.0, 0.0]], dtype=np.float32)
    try:
        if op == "put":
            chunks = make_chunks(arg, [arg + " shared"])
            await store.put_document("ns", make_document(arg), chunks, one, "e")
            print(json.dumps("ok"))
        elif op == "delete":
            print(json.dumps(await store.delete_document("ns", arg)))
        else:
            kw = await store.keyword_search("ns", "shared", 9, Filter())
            vs = await store.vector_search("ns", one[0], 9, Filter())
            ids = [sorted(h.document_id for h in hits) for hits in (kw, vs)]
            print(json.dumps(ids))
    finally:
        await store.aclose()

asyncio.run(main(*sys.argv[1:4]))
"""


def _child(path: Path, op: str, arg: str = "", **env: str) -> object:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), op, arg],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


async def _eventually(store: SQLiteStore, want: list[str]) -> None:
    one = np.array([1.0, 0.0], dtype=np.float32)
    for _ in range(500):  # polls (10 ms apart): a bound on a hang, nothing is timed
        kw = sorted(h.document_id for h in await store.keyword_search("ns", "shared", 9, Filter()))
        vs = sorted(h.document_id for h in await store.vector_search("ns", one, 9, Filter()))
        if kw == vs == want:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"this process never saw {want}")


@pytest.mark.anyio
async def test_two_processes_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    here = SQLiteStore(SQLiteStore.Config(path=path, poll_seconds=0))
    await here.start()
    try:
        assert _child(path, "put", "a") == "ok"  # another process writes ...
        await _eventually(here, ["a"])  # ... this one sees it
        one = np.array([[1.0, 0.0]], dtype=np.float32)
        await here.put_document("ns", make_document("b"), make_chunks("b", ["b shared"]), one, "e")
        assert _child(path, "list") == [["a", "b"], ["a", "b"]]  # and the other way round
        await _eventually(here, ["a", "b"])  # this process's cache keeps its own write
        assert _child(path, "delete", "a") is True
        await _eventually(here, ["b"])
        await here.delete_document("ns", "b")
        assert _child(path, "list") == [[], []]
    finally:
        await here.aclose()


EMBED = r"""
import asyncio, json
from ragtide.builtin.embedders import HashingEmbedder

async def main():
    embedder = HashingEmbedder(HashingEmbedder.Config())
    await embedder.start()
    print(json.dumps([float(x) for x in await embedder.embed_query("Hello hello world")]))

asyncio.run(main())
"""


@pytest.mark.anyio
async def test_hashing_is_stable_across_processes() -> None:
    # Python's str hash() is salted per process (PYTHONHASHSEED): buckets taken from it
    # would differ between these children and this process.
    here = HashingEmbedder(HashingEmbedder.Config())
    await here.start()
    mine = await here.embed_query("Hello hello world")
    seen = []
    for seed in ("1", "2", "random"):
        done = subprocess.run(
            [sys.executable, "-c", EMBED],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        seen.append(np.asarray(json.loads(done.stdout), np.float32))
    assert np.count_nonzero(mine) == 4
    for theirs in seen:
        np.testing.assert_array_equal(theirs, mine)
