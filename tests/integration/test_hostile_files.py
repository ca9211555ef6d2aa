"""Hostile uploads against a real server process: each is refused with its own 4xx, the
server stays up and small (/healthz answers throughout), and a good file still lands.

The bombs are built here, at full scale, and never written to the repository.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from ragtide.bench.server import free_port, wait_ready
from ragtide.testing.bombs import docx_bomb, nested_html, pdf_stream_bomb

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
GIB = 1024 * MIB
RSS_CEILING = 1536 * MIB  # the unbounded server passed 8 GB on the first bomb


def _hostile() -> list[tuple[str, bytes, int, str]]:
    """(file name, bytes, status, code) for every hostile case."""
    with ThreadPoolExecutor(3) as pool:  # zlib lets go of the GIL: build them side by side
        empty_paragraphs = pool.submit(docx_bomb, GIB + 100 * MIB)
        whitespace = pool.submit(docx_bomb, GIB + 100 * MIB, b" ")
        pdf = pool.submit(pdf_stream_bomb, GIB)
        cases = [
            ("paragraphs.docx", empty_paragraphs.result(), 413, "document_too_large"),
            ("whitespace.docx", whitespace.result(), 413, "document_too_large"),
            ("streams.pdf", pdf.result(), 413, "document_too_large"),
        ]
    assert all(len(data) < 3 * MIB for _, data, _, _ in cases)  # small files, huge insides
    one_mib_line = json.dumps({"_id": "big", "text": "x" * MIB})
    tiny_lines = "".join(f'{{"_id":{n},"text":"t"}}\n' for n in range(1_000_000))
    return [
        *cases,
        ("deep.html", nested_html(100_000), 422, "document_too_complex"),
        ("one-line.md", b"word " * (10 * MIB), 413, "document_too_large"),  # 50 MB, one line
        (
            "long-line.jsonl",
            f'{{"_id":"a","text":"ok"}}\n{one_mib_line}\n'.encode(),
            413,
            "document_too_large",
        ),
        ("many-lines.jsonl", tiny_lines.encode(), 413, "document_too_large"),
    ]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_hostile_files_are_refused_and_the_server_stays_up(tmp_path: Path) -> None:
    cases = _hostile()
    port = free_port()
    log = (tmp_path / "server.log").open("wb")
    env = {
        **os.environ,
        "RAGTIDE_DATA_DIR": str(tmp_path / "data"),
        "RAGTIDE_LOGGING__LEVEL": "WARNING",
        "RAGTIDE_HTTP__MAX_UPLOAD_BYTES": str(64 * MIB),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "ragtide.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    latencies: list[float] = []
    failures: list[str] = []
    stop = threading.Event()

    def poll_health() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            while not stop.is_set():
                began = time.perf_counter()
                try:
                    status = client.get("/healthz").status_code
                    if status != 200:
                        failures.append(f"status {status}")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                latencies.append(time.perf_counter() - began)
                stop.wait(0.01)

    poller = threading.Thread(target=poll_health, daemon=True)
    try:
        wait_ready(proc, port, time.perf_counter())
        poller.start()
        base = f"http://127.0.0.1:{port}/v1/namespaces/kb"
        got = {}
        with httpx.Client(timeout=120) as client:
            for name, data, _, _ in cases:
                began = time.perf_counter()
                r = client.post(f"{base}/documents", files={"file": (name, data)})
                error = r.json().get("error", {})
                got[name] = (r.status_code, error.get("code"))
                print(
                    f"{name}: {r.status_code} {error.get('message')} "
                    f"({time.perf_counter() - began:.2f} s)"
                )
                assert "(ingest." in error.get("message", ""), name
            good = b"# Harbour\n\nThe lighthouse keeper counts seventeen herons at dawn."
            r = client.post(f"{base}/documents", files={"file": ("good.md", good)})
            assert r.status_code == 201, r.text
            r = client.post(f"{base}/search", json={"query": "lighthouse herons"})
            assert r.status_code == 200
            assert r.json()["results"][0]["document_id"] == "good.md"
        assert got == {name: (status, code) for name, _, status, code in cases}
        workers = _children(proc.pid)
        hwm = _vm_hwm(proc.pid)
        stop.set()
        poller.join(15)
        print(
            f"server VmHWM {hwm / MIB:.0f} MiB; parse workers {workers}; /healthz "
            f"n={len(latencies)} p50={statistics.median(latencies) * 1000:.1f} ms "
            f"p99={statistics.quantiles(latencies, n=100)[98] * 1000:.1f} ms "
            f"max={max(latencies) * 1000:.1f} ms"
        )
        assert hwm < RSS_CEILING
        assert not failures, failures[:5]
        assert workers  # the parsing happened in child processes
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in workers):
            assert time.monotonic() < deadline, "parse workers outlived the server"
            time.sleep(0.05)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
