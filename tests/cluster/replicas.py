"""Ragtide replicas on loopback ports behind one nginx, and the operations on them.

``Cluster`` plays the orchestrator: it starts replicas and adds them to nginx once
``/ready`` says 200, and it removes a replica the way Kubernetes does: SIGTERM, the
replica's ``/ready`` turns 503, the watcher (here: ``drain``) takes it out of the upstream
set and reloads nginx, and only then, ``drain_seconds`` after the signal, does the
replica stop accepting connections and finish what it has.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ragtide.bench.cluster import Nginx
from ragtide.bench.server import free_port, wait_ready
from tests.polling import until

__all__ = ["Cluster", "DrainReport", "Replica", "ready_status"]

DRAIN_SECONDS = 2.0  # SIGTERM -> still serving this long; nginx must drop it in this time
GRACE_SECONDS = 10.0


@dataclass(slots=True)
class Replica:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass(frozen=True, slots=True)
class DrainReport:
    ready_503_after_s: float  # SIGTERM -> /ready 503 seen
    removed_after_s: float  # SIGTERM -> no nginx worker routes to it any more
    exit_code: int


def ready_status(url: str) -> tuple[int | None, dict[str, Any]]:
    """``GET /ready`` of one replica: (status, body), or (None, {}) when it does not answer."""
    try:
        r = httpx.get(f"{url}/ready", timeout=5)
    except httpx.HTTPError:
        return None, {}
    try:
        body = r.json()
    except ValueError:
        body = {}
    return r.status_code, body


class Cluster:
    """Replicas sharing one PostgreSQL database and one Redis, behind ``nginx``."""

    def __init__(self, root: Path, env: dict[str, str], nginx: Nginx) -> None:
        self.root = root
        self.env = {
            **os.environ,
            "RAGTIDE_LOGGING__LEVEL": "WARNING",
            "RAGTIDE_HTTP__DRAIN_SECONDS": str(DRAIN_SECONDS),
            "RAGTIDE_HTTP__GRACE_SECONDS": str(GRACE_SECONDS),
            **env,
        }
        self.nginx = nginx
        self.replicas: dict[int, Replica] = {}  # live ones, by port
        self.exited: list[Replica] = []

    # --- starting ------------------------------------------------------------------------

    def spawn(self) -> Replica:
        port = free_port()
        log = self.root / f"replica-{port}.log"
        data = self.root / f"data-{port}"
        with log.open("ab") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ragtide.cli", "serve", "--port", str(port)],
                env={**self.env, "RAGTIDE_DATA_DIR": str(data)},
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        replica = Replica(port, proc, log)
        self.replicas[port] = replica
        return replica

    def start(self, count: int) -> list[Replica]:
        """Start ``count`` replicas and wait until each is ready (not yet behind nginx)."""
        fresh = [self.spawn() for _ in range(count)]
        for r in fresh:
            try:
                wait_ready(r.proc, r.port, time.perf_counter(), timeout=60)
            except (RuntimeError, TimeoutError) as exc:
                raise AssertionError(f"replica {r.addr} not ready: {exc}\n{r.log_tail()}") from exc
        return fresh

    def route(self, replicas: list[Replica] | None = None) -> float:
        """Make nginx balance over ``replicas`` (default: every live one); seconds taken."""
        ports = sorted(r.port for r in (replicas if replicas is not None else self.live()))
        if self.nginx.upstreams:
            return self.nginx.set_upstreams(ports)
        self.nginx.start(ports)
        return 0.0

    def scale_out(self, count: int) -> list[Replica]:
        fresh = self.start(count)
        self.route([*self.routed(), *fresh])
        return fresh

    # --- stopping ------------------------------------------------------------------------

    def live(self) -> list[Replica]:
        return [r for r in self.replicas.values() if r.proc.poll() is None]

    def routed(self) -> list[Replica]:
        return [self.replicas[p] for p in self.nginx.upstreams if p in self.replicas]

    def drain(self, replica: Replica) -> DrainReport:
        """SIGTERM, wait for /ready 503, drop it from nginx, wait for exit 0."""
        began = time.monotonic()
        replica.proc.send_signal(signal.SIGTERM)
        until(lambda: ready_status(replica.url)[0] == 503, "/ready turns 503", DRAIN_SECONDS)
        ready_after = time.monotonic() - began
        self.route([r for r in self.routed() if r is not replica])
        removed_after = time.monotonic() - began
        # Correctness bound, not a measurement: the replica keeps accepting for
        # DRAIN_SECONDS after SIGTERM and then closes its listener; nginx must stop
        # routing to it before that, or new connections are refused (failed turns).
        assert removed_after < DRAIN_SECONDS, (
            f"nginx dropped {replica.addr} {removed_after:.2f}s after SIGTERM, later than "
            f"the replica's drain of {DRAIN_SECONDS}s: connections could have been refused"
        )
        code = replica.proc.wait(DRAIN_SECONDS + GRACE_SECONDS + 10)
        self._forget(replica)
        return DrainReport(ready_after, removed_after, code)

    def scale_in(self, count: int) -> list[DrainReport]:
        victims = self.routed()[-count:]
        return [self.drain(r) for r in victims]

    def kill(self, replica: Replica) -> None:
        """SIGKILL, no drain: nginx finds out by its passive health check."""
        replica.proc.kill()
        replica.proc.wait()
        self._forget(replica)

    def _forget(self, replica: Replica) -> None:
        self.replicas.pop(replica.port, None)
        self.exited.append(replica)

    def reconcile(self, count: int) -> None:
        """Back to ``count`` ready replicas, all behind nginx, nothing else routed."""
        for r in [r for r in self.replicas.values() if r.proc.poll() is not None]:
            self._forget(r)
        missing = count - len(self.replicas)
        if missing > 0:
            self.start(missing)
        for r in list(self.replicas.values())[count:]:
            if r.port in self.nginx.upstreams:
                self.drain(r)
            else:
                self.terminate(r)
        if set(self.nginx.upstreams) != set(self.replicas):
            self.route()
        for r in self.live():
            until(lambda r=r: ready_status(r.url)[0] == 200, f"{r.addr} ready", 30)

    def terminate(self, replica: Replica) -> None:
        if replica.proc.poll() is None:
            replica.proc.terminate()
            try:
                replica.proc.wait(DRAIN_SECONDS + GRACE_SECONDS + 5)
            except subprocess.TimeoutExpired:
                replica.proc.kill()
                replica.proc.wait()
        self._forget(replica)

    def close(self) -> None:
        self.nginx.stop()
        for r in list(self.replicas.values()):
            r.proc.kill()  # teardown: no need to drain
            r.proc.wait()
            self._forget(r)
