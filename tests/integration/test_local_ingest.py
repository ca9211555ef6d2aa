"""``ragtide ingest`` of a local file is not an upload: a JSONL file over the upload limit
is streamed in, all of it, in memory that does not grow with the file, while the API
still refuses the same file with 413.

The upload limit is lowered for the test (the same setting for the CLI and the server),
so that a file over it is quick to ingest on a shared machine; the batch the CLI reads at
a time is lowered with it, so that the file is many batches.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import httpx
import pytest

from ragtide import cli
from ragtide.builtin import sqlite_store
from ragtide.ingest import pipeline
from tests.integration.test_server_limits import Server

pytestmark = pytest.mark.integration

KIB = 1024
MIB = 1024 * KIB
UPLOAD_LIMIT = MIB
BATCH = 64 * KIB


def _word(i: int) -> str:
    letters = ""
    i += 26 * 26
    while i:
        i, r = divmod(i, 26)
        letters += chr(ord("a") + r)
    return "zq" + letters


def _write_jsonl(path: Path, size: int) -> int:
    """Records of one chunk each (~1 KB) until the file has ``size`` bytes; how many."""
    n = written = 0
    with path.open("w") as out:
        while written < size:
            words = " ".join(f"w{(n * 31 + k * 7) % 5000}" for k in range(150))
            line = json.dumps({"_id": f"r{n}", "text": f"Ledger {n} {_word(n)}: {words}"})
            written += out.write(line + "\n")
            n += 1
    return n


def _cli_ingest(path: Path, namespace: str, capsys: pytest.CaptureFixture[str]) -> tuple[dict, int]:
    """``ragtide ingest`` in this process (the CLI's own code path); its summary and the
    peak of memory allocated while it ran."""
    tracemalloc.start()
    try:
        code = cli.main(["ingest", str(path), "-n", namespace, "-q", "--json"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1]), peak


def test_a_local_jsonl_over_the_upload_limit_is_streamed_in_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {
        "RAGTIDE_DATA_DIR": str(tmp_path / "data"),
        "RAGTIDE_HTTP__MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
        "RAGTIDE_EMBEDDER__USE": "hashing",  # the embedder is not what is tested here
        "RAGTIDE_LOGGING__LEVEL": "WARNING",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(pipeline, "STREAM_BATCH_BYTES", BATCH)
    # The writer remembers the term ids it has seen, up to _WRITER_TERMS (~20 MB at its
    # default): every record here has words of its own, so below that bound the cache grows
    # with the file. Bounded low, it is full in both runs and only the streaming differs.
    monkeypatch.setattr(sqlite_store, "_WRITER_TERMS", 256)
    small, big = tmp_path / "small.jsonl", tmp_path / "big.jsonl"
    # Both files are past the ingest's own steady state (a write batch of 512 chunks and
    # one read batch ahead), so what differs between them is only the file's size.
    _write_jsonl(small, UPLOAD_LIMIT)
    records = _write_jsonl(big, 4 * UPLOAD_LIMIT)
    growth = big.stat().st_size - small.stat().st_size

    _, small_peak = _cli_ingest(small, "small", capsys)
    summary, big_peak = _cli_ingest(big, "big", capsys)

    assert (summary.get("created"), summary["chunks"], summary.get("rejected")) == (
        records,
        records,
        None,
    )
    # The whole file was never held: 4x the bytes cost less than a quarter of the extra
    # bytes in memory (reading it whole would cost all of them, and its chunks as many again).
    print(
        f"{big.stat().st_size:,}-byte file: peak {big_peak / MIB:.1f} MiB allocated, "
        f"{small.stat().st_size:,}-byte file: {small_peak / MIB:.1f} MiB"
    )
    assert big_peak - small_peak < growth / 4

    server = Server(tmp_path, **env)
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            info = client.get("/v1/namespaces/big").json()
            assert (info["documents"], info["chunks"]) == (records, records)
            last = client.post(
                "/v1/namespaces/big/search", json={"query": _word(records - 1), "top_k": 1}
            )
            assert last.json()["results"][0]["document_id"] == f"r{records - 1}"
            refused = client.post(
                "/v1/namespaces/other/documents", files={"file": ("big.jsonl", big.read_bytes())}
            )
            assert refused.status_code == 413, refused.text
            assert refused.json()["error"]["code"] == "payload_too_large"
            assert client.get("/v1/namespaces/other").status_code == 404
    finally:
        server.close()
