"""The real server process: readiness, drain on SIGTERM, clean exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ragtide.bench.server import free_port, wait_ready

pytestmark = pytest.mark.integration


def _spawn(tmp_path: Path, port: int, **env: str) -> subprocess.Popen[bytes]:
    environ = {
        **os.environ,
        "RAGTIDE_DATA_DIR": str(tmp_path),
        "RAGTIDE_LOGGING__LEVEL": "INFO",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "ragtide.cli", "serve", "--port", str(port)],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


def test_sigterm_drains_then_exits_zero(tmp_path: Path) -> None:
    port = free_port()
    proc = _spawn(tmp_path, port, RAGTIDE_HTTP__DRAIN_SECONDS="1.5")
    try:
        wait_ready(proc, port, time.perf_counter())
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/ready").status_code == 200
        proc.send_signal(signal.SIGTERM)
        _until(lambda: httpx.get(f"{base}/ready").status_code == 503)
        r = httpx.get(f"{base}/ready")
        assert r.json() == {"status": "unavailable", "reason": "draining"}
        # Still serving while the load balancer notices: new connections are accepted.
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.put(f"{base}/v1/namespaces/late").status_code == 201
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert '"msg":"draining"' in stderr and '"msg":"ragtide stopped"' in stderr


def test_in_flight_stream_finishes_after_sigterm(tmp_path: Path) -> None:
    port = free_port()
    proc = _spawn(tmp_path, port, RAGTIDE_HTTP__DRAIN_SECONDS="0")
    try:
        wait_ready(proc, port, time.perf_counter())
        base = f"http://127.0.0.1:{port}"
        demo = Path(__file__).resolve().parents[2] / "src" / "ragtide" / "demo" / "scaling.md"
        files = {"file": ("scaling.md", demo.read_bytes())}
        assert httpx.post(f"{base}/v1/namespaces/kb/documents", files=files).status_code == 201
        body = {"message": "How does Ragtide scale?", "stream": True}
        with httpx.stream("POST", f"{base}/v1/namespaces/kb/chat", json=body, timeout=30) as r:
            chunks = r.iter_text()
            first = next(chunks)  # the stream has started: the request is in flight
            proc.send_signal(signal.SIGTERM)
            rest = "".join(chunks)
        assert first.startswith("event: token")
        assert "event: done" in rest
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
