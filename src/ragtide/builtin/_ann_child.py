"""HNSW graphs built in a child process, for both stores (``ann``, ``_pg_ann``).

``usearch`` releases the GIL while it adds vectors, but not while it copies a graph or
serialises one: ~0.5 s each at 1M vectors, every request of the replica stalled. A
graph being built also takes about twice the memory of the saved bytes a store then
searches (a view of them). So a graph is built, or extended from a saved one, by
``python -m ragtide.builtin._ann_child`` at a lower priority, fed through its stdin and
answering through its stdout: the server only writes and reads bytes (the GIL let go
in the system calls) and ends up holding the graph's saved bytes alone.

``GraphBuild`` is synchronous (an HNSW build thread, or ``asyncio.to_thread``)::

    with GraphBuild(dim=256) as build:
        for keys, vectors in batches:
            build.add(keys, vectors)
        count, data = build.result()

In: a JSON line of settings (``base``: the size of a saved graph that follows, 0 for
none), then batches of a u32 row count, u64 keys and float32 rows, until a count of 0.
Out: the graph's vector count and size (u64 each), then its bytes (``Index.save``).
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import subprocess
import sys
from typing import IO, Any

import numpy as np
import numpy.typing as npt

__all__ = ["Buffer", "GraphBuild", "main"]

Buffer = npt.NDArray[np.uint8]  # a graph's saved bytes (never zeroed: ``np.empty``)
_NICE = 10  # the child yields the CPU to the server's requests
_ROWS = struct.Struct("<I")
_DONE = struct.Struct("<QQ")


class GraphBuild:
    """One graph built in a child process: ``add`` batches of vectors, then ``result``.
    Left early (an exception, a cancelled build), the child is killed."""

    def __init__(
        self,
        *,
        dim: int,
        base: Buffer | None = None,
        quantisation: str = "i8",
        connectivity: int = 32,
        expansion_add: int = 128,
        threads: int = 1,
    ) -> None:
        self.dim = dim
        self._settings = {
            "dim": dim,
            "base": 0 if base is None else len(base),
            "quantisation": quantisation,
            "connectivity": connectivity,
            "expansion_add": expansion_add,
            "threads": threads,
        }
        self._base = base
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> GraphBuild:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the child and send it the settings and the base graph."""
        self._process = subprocess.Popen(
            [sys.executable, "-m", "ragtide.builtin._ann_child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._write(json.dumps(self._settings).encode() + b"\n")
        if self._base is not None:
            self._write(self._base)
            self._base = None

    def close(self) -> None:
        """Stop the child (killed unless it is done) and close its pipes."""
        process = self._running
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):  # a pipe the child left unread
                    stream.close()

    @property
    def pid(self) -> int:
        return self._running.pid

    def add(self, keys: npt.NDArray[Any], vectors: npt.NDArray[Any]) -> None:
        """Add ``vectors`` (rows of ``dim``) keyed ``keys``."""
        if not len(keys):
            return
        if vectors.shape != (len(keys), self.dim):
            raise ValueError(f"{vectors.shape} vectors for {len(keys)} keys of {self.dim}")
        self._write(
            _ROWS.pack(len(keys)),
            np.ascontiguousarray(keys, np.uint64),
            np.ascontiguousarray(vectors, np.float32),
        )

    def result(self) -> tuple[int, Buffer]:
        """The graph's vector count and saved bytes, once every batch is added."""
        process = self._running
        assert process.stdin is not None
        self._write(_ROWS.pack(0))
        process.stdin.close()
        try:
            count, size = _DONE.unpack(_read_exactly(process.stdout, _DONE.size))
            data = np.empty(size, np.uint8)
            _read_into(process.stdout, data.data)
        except EOFError:
            raise RuntimeError(self._failure()) from None
        return count, data

    @property
    def _running(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError("the graph build is not started")
        return self._process

    def _write(self, *pieces: bytes | npt.NDArray[Any]) -> None:
        stream = self._running.stdin
        assert stream is not None
        try:
            for piece in pieces:
                stream.write(piece.data.cast("B") if isinstance(piece, np.ndarray) else piece)
            stream.flush()
        except BrokenPipeError:
            raise RuntimeError(self._failure()) from None

    def _failure(self) -> str:
        """Why the child stopped (the last line it wrote to stderr)."""
        process = self._running
        code = process.wait()
        said = process.stderr.read() if process.stderr is not None else b""
        last = said.decode(errors="replace").strip().splitlines()[-1:] or ["nothing"]
        return f"the graph builder exited with {code}: {last[0]}"


def _read_exactly(stream: IO[bytes] | None, size: int) -> bytes:
    buffer = bytearray(size)
    _read_into(stream, memoryview(buffer))
    return bytes(buffer)


def _read_into(stream: IO[bytes] | None, view: memoryview) -> None:
    """Fill ``view`` from ``stream``; ``EOFError`` if it ends first."""
    assert stream is not None
    while len(view):
        got = stream.readinto(view)  # type: ignore[attr-defined]
        if not got:
            raise EOFError
        view = view[got:]


def main() -> int:
    """The child: build the graph ``GraphBuild`` sends and write it to stdout."""
    with contextlib.suppress(OSError):
        os.nice(_NICE)
    try:
        index = _built(sys.stdin.buffer)
    except EOFError:
        print("the input ended early", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    data = index.save()
    sink = sys.stdout.buffer
    sink.write(_DONE.pack(len(index), len(data)))
    sink.write(data)
    sink.flush()
    return 0


def _built(source: IO[bytes]) -> Any:
    from usearch.index import Index

    from ragtide.builtin.ann import new_index

    settings = json.loads(source.readline() or b"null")
    if not isinstance(settings, dict):
        raise EOFError
    dim, threads = int(settings["dim"]), int(settings["threads"])
    if settings["base"]:
        saved = np.empty(int(settings["base"]), np.uint8)
        _read_into(source, saved.data)
        index = Index.restore(saved.data)  # a copy in usearch's memory, which can grow
        if index is None or index.ndim != dim:
            raise ValueError(f"the base is not a graph of {dim} dimensions")
        del saved
    else:
        index = new_index(
            dim,
            quantisation=settings["quantisation"],
            connectivity=int(settings["connectivity"]),
            expansion_add=int(settings["expansion_add"]),
        )
    while rows := _ROWS.unpack(_read_exactly(source, _ROWS.size))[0]:
        keys = np.frombuffer(_read_exactly(source, 8 * rows), np.uint64)
        vectors = np.frombuffer(_read_exactly(source, 4 * rows * dim), np.float32)
        index.add(keys, vectors.reshape(rows, dim), threads=threads)
    return index


if __name__ == "__main__":
    sys.exit(main())
