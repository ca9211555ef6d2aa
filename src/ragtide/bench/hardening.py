"""``ragtide bench hardening``: one real ``ragtide serve`` process under hostile and heavy work.

One server (embedded SQLite store, the default static embedder, as ``ragtide bench
server``) over a 100,000-chunk namespace written straight into its database file before
it starts (as ``tests/integration/test_index_maintenance.py`` builds it). A separate
process probes ``/healthz`` every 20 ms for the whole run and samples the server's and
its parse workers' memory from ``/proc``; each phase is a window of that timeline:

(a) quiet: nothing but the probe; then ``/search`` alone at 50 req/s open loop (the
    search baseline);
(b) mixed: ``/search`` at 50 req/s open loop while another process uploads a small
    Markdown file every 100 ms, for 20 s;
(c) a 10 MB single-line ``.md`` upload (``http.max_upload_bytes`` raised for the run);
(d) a ``.docx`` bomb: about 1 MB that inflates to more than 1 GB of empty paragraphs.

Reported: ``/healthz`` p50/p99/max per phase, search p50/p99 quiet and mixed, upload
statuses and times, the server's VmHWM and the parse workers' peak RSS per phase. Timings
are measured, never asserted.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ragtide.bench.server import _open_loop, cpu_seconds, free_port, stop, wait_ready
from ragtide.testing.bombs import docx_bomb

__all__ = ["measure_hardening"]

MIB = 1024 * 1024
GIB = 1024 * MIB
NAMESPACE = "big"  # stored as default/big: the default tenant's
CHUNKS = 100_000
PER_DOCUMENT = 500
VOCABULARY = 5_000
PROBE_INTERVAL = 0.020
SEARCH_RATE = 50.0
UPLOAD_INTERVAL = 0.100
MIXED_SECONDS = 20.0
QUIET_SECONDS = 10.0
_SELF = (sys.executable, "-m", "ragtide.bench.hardening")


# --- the 100k-chunk namespace --------------------------------------------------------------


def _vocab(i: int) -> str:
    return f"vocab{i}"


def _seed(data_dir: Path, work: Path) -> tuple[str, str, int]:
    """Ingest one small file with the CLI: the schema, the namespace, and the embedder's
    id and dimension the server will search with. Returns (namespace, embedder, dim)."""
    import apsw

    seed = work / "seed.md"
    seed.write_text("# Seed\n\nThe lighthouse keeper counts seventeen herons at dawn.\n")
    env = {**os.environ, "RAGTIDE_DATA_DIR": str(data_dir), "RAGTIDE_LOGGING__LEVEL": "WARNING"}
    subprocess.run(
        [sys.executable, "-m", "ragtide.cli", "ingest", str(seed), "-n", NAMESPACE, "-q"],
        env=env,
        check=True,
        capture_output=True,
    )
    conn = apsw.Connection(str(data_dir / "ragtide.db"))
    row = conn.execute("SELECT namespace, embedder, length(vector) FROM chunks LIMIT 1").fetchone()
    conn.close()
    assert row is not None
    return str(row[0]), str(row[1]), int(row[2]) // 4


def _fill(path: Path, namespace: str, embedder: str, dim: int) -> None:
    """100k chunks written straight into the file: random unit vectors, 30 draws from a
    5k-word vocabulary per chunk (``put_document`` would take minutes)."""
    import apsw

    from ragtide.text import stem

    rng = np.random.default_rng(0)
    conn = apsw.Connection(str(path))
    with conn:
        conn.executemany(
            "INSERT OR IGNORE INTO terms(term) VALUES(?)",
            ((stem(_vocab(i)),) for i in range(VOCABULARY)),
        )
        term_id = {str(t): int(i) for t, i in conn.execute("SELECT term, id FROM terms")}
        ids = np.array([term_id[stem(_vocab(i))] for i in range(VOCABULARY)], np.int64)
        now = time.time()
        for d in range(CHUNKS // PER_DOCUMENT):
            doc = f"bulk{d}"
            meta = json.dumps({"part": str(d % 7)})
            conn.execute(
                "INSERT INTO documents(namespace, id, title, source, content_hash, metadata,"
                " chunks, created_at, updated_at, bytes) VALUES(?, ?, '', '', ?, ?, ?, ?, ?, 0)",
                (namespace, doc, doc, meta, PER_DOCUMENT, now, now),
            )
            vectors = rng.standard_normal((PER_DOCUMENT, dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True)
            draws = rng.integers(0, VOCABULARY, (PER_DOCUMENT, 30))
            rows = []
            for o in range(PER_DOCUMENT):
                terms, tfs = np.unique(ids[draws[o]], return_counts=True)
                rows.append(
                    (
                        namespace,
                        doc,
                        f"{doc}:{o}",
                        o,
                        f"text of {doc} {o}",
                        meta,
                        embedder,
                        vectors[o].tobytes(),
                        terms.astype(np.uint32).tobytes(),
                        tfs.astype(np.uint16).tobytes(),
                    )
                )
            conn.executemany(
                "INSERT INTO chunks(namespace, document_id, chunk_id, ordinal, title, headings,"
                " text, metadata, embedder, vector, term_ids, term_tfs)"
                " VALUES(?, ?, ?, ?, '', '[]', ?, ?, ?, ?, ?, ?)",
                rows,
            )
    conn.close()


# --- the probe process: /healthz every 20 ms, and memory from /proc ------------------------


def _status_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in kB; (0, 0) once the process is gone."""
    rss = hwm = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                found += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    except OSError:
        pass
    return found


def _probe(argv: Sequence[str]) -> None:
    """Until SIGTERM: one JSON line per probe — monotonic time, /healthz latency (ms) and
    status, the server's RSS/HWM and each child's (kB)."""
    import signal

    port, pid, out = int(argv[0]), int(argv[1]), Path(argv[2])
    running = True

    def _stop(*_: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, _stop)
    request = b"GET /healthz HTTP/1.1\r\nHost: probe\r\n\r\n"
    conn: socket.socket | None = None
    with out.open("w", buffering=1) as sink:
        next_at = time.monotonic()
        while running:
            began = time.monotonic()
            status: int | None = None
            try:
                if conn is None:
                    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
                conn.sendall(request)
                buf = b""
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(4096)
                    if not chunk:
                        raise OSError("closed")
                    buf += chunk
                head, _, rest = buf.partition(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                while len(rest) < length:
                    chunk = conn.recv(4096)
                    if not chunk:
                        raise OSError("closed")
                    rest += chunk
            except (OSError, ValueError, IndexError):
                if conn is not None:
                    conn.close()
                conn = None
            latency = (time.monotonic() - began) * 1000
            children = {c: _status_kb(c) for c in _children(pid)}
            sink.write(
                json.dumps([began, round(latency, 3), status, _status_kb(pid), children]) + "\n"
            )
            next_at = max(next_at + PROBE_INTERVAL, time.monotonic())
            time.sleep(max(0.0, next_at - time.monotonic()))


# --- the uploader process: a small Markdown file every 100 ms ------------------------------


def _upload(argv: Sequence[str]) -> None:
    import httpx

    port, seconds, out = int(argv[0]), float(argv[1]), Path(argv[2])
    url = f"http://127.0.0.1:{port}/v1/namespaces/{NAMESPACE}/documents"
    results = []
    with httpx.Client(timeout=30) as client:
        start = time.monotonic()
        i = 0
        while True:
            scheduled = start + i * UPLOAD_INTERVAL
            if scheduled - start >= seconds:
                break
            time.sleep(max(0.0, scheduled - time.monotonic()))
            body = (
                f"# Note {i}\n\nUpload number {i} mentions {_vocab(i % VOCABULARY)} and "
                f"qxnote{i} beside the harbour lighthouse.\n"
            ).encode()
            began = time.monotonic()
            try:
                status = client.post(url, files={"file": (f"note{i}.md", body)}).status_code
            except httpx.HTTPError:
                status = 0
            results.append([status, round((time.monotonic() - began) * 1000, 2)])
            i += 1
    out.write_text(json.dumps(results))


# --- the measurement -----------------------------------------------------------------------


def _pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def _window(samples: list[list[Any]], t0: float, t1: float) -> dict[str, Any]:
    """/healthz latency and memory over the probes begun in [t0, t1]."""
    inside = [s for s in samples if t0 <= s[0] <= t1]
    ok = [s[1] for s in inside if s[2] == 200]
    worker_rss = [rss for s in inside for rss, _ in s[4].values()]
    worker_hwm = [hwm for s in inside for _, hwm in s[4].values()]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(inside)]
    return {
        "seconds": round(t1 - t0, 2),
        "healthz": {
            "probes": len(inside),
            "failed": len(inside) - len(ok),
            "p50_ms": _pct(ok, 0.50),
            "p99_ms": _pct(ok, 0.99),
            "max_ms": round(max(ok), 2) if ok else None,
            "longest_gap_between_probes_ms": round(max(gaps) * 1000, 1) if gaps else None,
        },
        "server_vmhwm_mb": round(max((s[3][1] for s in inside), default=0) / 1024, 1),
        "server_rss_max_mb": round(max((s[3][0] for s in inside), default=0) / 1024, 1),
        "workers_seen": len({c for s in inside for c in s[4]}),
        "worker_rss_max_mb": round(max(worker_rss, default=0) / 1024, 1),
        "worker_vmhwm_max_mb": round(max(worker_hwm, default=0) / 1024, 1),
    }


def _search_bodies(n: int = 500) -> list[dict[str, Any]]:
    rng = random.Random(7)
    return [
        {
            "query": " ".join(_vocab(rng.randrange(VOCABULARY)) for _ in range(3))
            + " lighthouse herons",
            "top_k": 5,
        }
        for _ in range(n)
    ]


def _big_upload(port: int, name: str, data: bytes) -> dict[str, Any]:
    import httpx

    url = f"http://127.0.0.1:{port}/v1/namespaces/{NAMESPACE}/documents"
    began = time.monotonic()
    with httpx.Client(timeout=180) as client:
        r = client.post(url, files={"file": (name, data)})
    try:
        error = r.json().get("error", {})
    except ValueError:
        error = {}
    return {
        "file": name,
        "bytes": len(data),
        "status": r.status_code,
        "code": error.get("code"),
        "message": error.get("message"),
        "seconds": round(time.monotonic() - began, 3),
    }


def _sequential_searches(port: int, pid: int, bodies: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One search at a time: the service time of a search on this namespace, and the
    server's CPU per search, i.e. the rate one process can sustain."""
    import httpx

    url = f"http://127.0.0.1:{port}/v1/namespaces/{NAMESPACE}/search"
    latencies = []
    with httpx.Client(timeout=30) as client:
        cpu0 = cpu_seconds(pid)
        for body in bodies:
            began = time.perf_counter()
            client.post(url, json=body).raise_for_status()
            latencies.append((time.perf_counter() - began) * 1000)
        cpu = cpu_seconds(pid) - cpu0
    return {
        "requests": len(latencies),
        "p50_ms": _pct(latencies, 0.50),
        "p99_ms": _pct(latencies, 0.99),
        "server_cpu_ms_per_search": round(cpu * 1000 / len(latencies), 2),
    }


def _read_samples(path: Path) -> list[list[Any]]:
    samples = []
    for line in path.read_text().splitlines():
        try:
            sample = json.loads(line)
        except ValueError:
            continue  # the last line, cut by SIGTERM
        sample[4] = {int(k): v for k, v in sample[4].items()}
        samples.append(sample)
    return samples


def measure_hardening(work: Path, argv: Sequence[str] = ()) -> dict[str, Any]:
    load_start = os.getloadavg()
    data_dir = work / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with ThreadPoolExecutor(1) as pool:  # zlib lets go of the GIL: build the bomb meanwhile
        bomb_future = pool.submit(docx_bomb, GIB + 100 * MIB)
        namespace, embedder, dim = _seed(data_dir, work)
        _fill(data_dir / "ragtide.db", namespace, embedder, dim)
        fill_s = time.perf_counter() - started
        bomb = bomb_future.result()
    setup_s = time.perf_counter() - started
    one_line = b"word " * (2 * MIB)  # 10 MiB, no newline

    port = free_port()
    env = {
        **os.environ,
        "RAGTIDE_DATA_DIR": str(data_dir),
        "RAGTIDE_LOGGING__LEVEL": "WARNING",
        "RAGTIDE_ANSWER_CACHE_ENABLED": "false",
        "RAGTIDE_HTTP__MAX_UPLOAD_BYTES": str(64 * MIB),
        # Exact vector search: the random vectors have no neighbourhoods for an HNSW
        # graph (its build would take minutes and find little; `bench scale` measures it).
        "RAGTIDE_STORE__CONFIG__ANN_MIN_CHUNKS": "0",
    }
    log = (work / "server.log").open("wb")
    began = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ragtide.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    probe: subprocess.Popen[bytes] | None = None
    samples_file = work / "probe.jsonl"
    phases: dict[str, Any] = {}
    windows: dict[str, tuple[float, float]] = {}
    try:
        ready_s = wait_ready(proc, port, began, timeout=120)
        bodies = _search_bodies()
        # Warm-up: the first search loads the 100k-chunk index (in a thread), the first
        # upload starts the write path.
        t = time.perf_counter()
        asyncio.run(_open_loop(port, f"/v1/namespaces/{NAMESPACE}/search", bodies[:5], 5, 1))
        first_search_s = time.perf_counter() - t
        asyncio.run(_open_loop(port, f"/v1/namespaces/{NAMESPACE}/search", bodies, 50, 3))
        probe = subprocess.Popen([*_SELF, "--probe", str(port), str(proc.pid), str(samples_file)])
        time.sleep(1.0)

        t0 = time.monotonic()
        time.sleep(QUIET_SECONDS)
        windows["quiet"] = (t0, time.monotonic())
        sequential = _sequential_searches(port, proc.pid, bodies[:100])
        time.sleep(1.0)

        t0 = time.monotonic()
        search_quiet = asyncio.run(
            _open_loop(
                port, f"/v1/namespaces/{NAMESPACE}/search", bodies, SEARCH_RATE, MIXED_SECONDS
            )
        )
        windows["search_only"] = (t0, time.monotonic())
        time.sleep(1.0)

        uploads_file = work / "uploads.json"
        t0 = time.monotonic()
        uploader = subprocess.Popen(
            [*_SELF, "--upload", str(port), str(MIXED_SECONDS), str(uploads_file)]
        )
        search_mixed = asyncio.run(
            _open_loop(
                port, f"/v1/namespaces/{NAMESPACE}/search", bodies, SEARCH_RATE, MIXED_SECONDS
            )
        )
        uploader.wait(120)
        windows["mixed"] = (t0, time.monotonic())
        uploads = json.loads(uploads_file.read_text())
        statuses: dict[str, int] = {}
        for status, _ in uploads:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
        upload_ms = [ms for _, ms in uploads]
        time.sleep(2.0)

        big: dict[str, Any] = {}
        for key, name, data in (
            ("large_md", "one-line.md", one_line),
            ("docx_bomb", "paragraphs.docx", bomb),
        ):
            t0 = time.monotonic()
            big[key] = _big_upload(port, name, data)
            time.sleep(1.0)  # the workers' memory after the answer, too
            windows[key] = (t0, time.monotonic())
            time.sleep(1.0)

        # Read-your-write after all this: the server still answers and searches.
        after = asyncio.run(
            _open_loop(port, f"/v1/namespaces/{NAMESPACE}/search", bodies[:10], 10, 1)
        )
        probe.terminate()
        probe.wait(30)
        server_hwm_kb = _status_kb(proc.pid)[1]
        server_alive = proc.poll() is None
    finally:
        if probe is not None and probe.poll() is None:
            probe.terminate()
            probe.wait(30)
        stop(proc)
        log.close()

    samples = _read_samples(samples_file)
    for name, (t0, t1) in windows.items():
        phases[name] = _window(samples, t0, t1)
    phases["search_only"]["sequential"] = sequential
    phases["search_only"]["search"] = search_quiet
    phases["mixed"]["search"] = search_mixed
    phases["mixed"]["uploads"] = {
        "attempted": len(uploads),
        "statuses": statuses,
        "p50_ms": _pct(upload_ms, 0.50),
        "p99_ms": _pct(upload_ms, 0.99),
        "max_ms": max(upload_ms) if upload_ms else None,
    }
    phases["large_md"]["upload"] = big["large_md"]
    phases["docx_bomb"]["upload"] = big["docx_bomb"]
    return {
        "machine": {
            "cores": os.cpu_count(),
            "loadavg_at_start": [round(x, 2) for x in load_start],
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
            # Other work shared the cores: timings are upper bounds, not this code's alone.
            "machine_busy": max(load_start[0], os.getloadavg()[0]) > (os.cpu_count() or 1) / 2,
        },
        "setup": {
            "namespace": namespace,
            "chunks": CHUNKS + 1,
            "embedder": embedder,
            "dim": dim,
            "fill_s": round(fill_s, 1),
            "setup_s_with_bomb": round(setup_s, 1),
            "bomb_bytes": len(bomb),
            "bomb_inflated_bytes": GIB + 100 * MIB,
            "large_md_bytes": len(one_line),
            "max_upload_bytes": 64 * MIB,
            "ready_s": round(ready_s, 3),
            "first_search_s": round(first_search_s, 3),
            "probe_interval_ms": PROBE_INTERVAL * 1000,
            "search_rate": SEARCH_RATE,
            "upload_interval_ms": UPLOAD_INTERVAL * 1000,
            "vector_search": "exact (random vectors; no HNSW index)",
        },
        "phases": phases,
        "search_after_all": after,
        "server": {
            "alive_at_end": server_alive,
            "vmhwm_mb_end": round(server_hwm_kb / 1024, 1),
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--probe"]:
        _probe(argv[1:])
        return 0
    if argv[:1] == ["--upload"]:
        _upload(argv[1:])
        return 0
    with tempfile.TemporaryDirectory(prefix="ragtide-hardening-") as tmp:
        print(json.dumps(measure_hardening(Path(tmp), argv), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
