"""The real server process: readiness, drain on SIGTERM, clean exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
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


@pytest.fixture(scope="module")
def gated_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory that, on ``PYTHONPATH``, registers the worker tests' ``gated`` model."""
    root = tmp_path_factory.mktemp("plugins")
    info = root / "ragtide_lifecycle_test_plugins-0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: ragtide-lifecycle-test-plugins\nVersion: 0.0\n"
    )
    (info / "entry_points.txt").write_text(
        "[ragtide.chat_models]\ngated = tests.integration.worker_plugins:GatedChatModel\n"
    )
    return root


def _refused(base: str) -> bool:
    try:
        httpx.get(f"{base}/healthz", timeout=1)
    except httpx.TransportError:
        return True
    return False


# How long the stream is held open after the server stopped accepting: any cut of
# in-flight streams shorter than the grace period (10 s here) would land inside it. A
# correctness bound on the server, not a measurement: nothing here is timed.
HOLD_AFTER_SIGTERM_S = 1.5


def test_in_flight_stream_finishes_after_sigterm(tmp_path: Path, gated_plugin: Path) -> None:
    """A stream whose model is mid-answer when SIGTERM comes is finished, not cut.

    The model is gated (tests/integration/worker_plugins.py): it answers only once the
    test creates ``release``, so the stream is provably open across the signal, the
    drain and the listener's close, however fast the machine is.
    """
    port = free_port()
    gate = tmp_path / "gate"
    gate.mkdir()
    root = Path(__file__).resolve().parents[2]
    path = os.pathsep.join(
        p for p in (str(gated_plugin), str(root), os.environ.get("PYTHONPATH")) if p
    )
    proc = _spawn(
        tmp_path,
        port,
        PYTHONPATH=path,
        RAGTIDE_HTTP__DRAIN_SECONDS="0",
        RAGTIDE_HTTP__GRACE_SECONDS="10",
        RAGTIDE_EMBEDDER__USE="hashing",
        RAGTIDE_ANSWER_CACHE_ENABLED="false",
        RAGTIDE_CHAT_MODEL__USE="gated",
        RAGTIDE_CHAT_MODEL__CONFIG__DIR=str(gate),
    )
    received: list[str] = []
    status: list[int] = []
    failures: list[Exception] = []

    def converse() -> None:
        body = {"message": "[gate] How does Ragtide scale?", "stream": True}
        try:
            with httpx.stream("POST", f"{base}/v1/namespaces/kb/chat", json=body, timeout=60) as r:
                status.append(r.status_code)
                received.extend(r.iter_text())
        except httpx.HTTPError as exc:  # a cut stream: reported by the asserts below
            failures.append(exc)

    try:
        wait_ready(proc, port, time.perf_counter())
        base = f"http://127.0.0.1:{port}"
        demo = Path(__file__).resolve().parents[2] / "src" / "ragtide" / "demo" / "scaling.md"
        files = {"file": ("scaling.md", demo.read_bytes())}
        assert httpx.post(f"{base}/v1/namespaces/kb/documents", files=files).status_code == 201
        client = threading.Thread(target=converse)
        client.start()
        _until(lambda: any(gate.glob("started-*")), timeout=30)  # the model is answering
        proc.send_signal(signal.SIGTERM)
        _until(lambda: _refused(base), timeout=30)  # drained: no new connections
        client.join(HOLD_AFTER_SIGTERM_S)
        assert client.is_alive(), f"the stream ended before its answer: {received} {failures}"
        assert proc.poll() is None  # still finishing the stream
        (gate / "release").touch()
        client.join(30)
        assert not client.is_alive()
        rest = "".join(received)
        assert failures == [] and status == [200]
        assert "event: token" in rest and "answer to: [gate] How does Ragtide scale?" in rest
        assert "event: done" in rest
        assert proc.wait(timeout=30) == 0
    finally:
        (gate / "release").touch()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
