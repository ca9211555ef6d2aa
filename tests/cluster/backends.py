"""The cluster's own PostgreSQL and Redis servers, which the outage scenarios stop and start.

Each test run starts private servers on free loopback ports rather than using the shared
ones on 5433 and 6379: the outage scenarios stop the servers, which must not break what
other test runs on this machine are doing at the same moment, and two runs must never
collide. They are started with the project's own tools (``scripts/pg-start`` and
``scripts/pg-stop`` with ``RAGTIDE_PG_DATA``/``RAGTIDE_PG_PORT``; ``redis-server``).

Redis runs with an append-only file. "No acknowledged turn is lost across a Redis
restart" can only hold for a Redis that keeps its data: the shared test Redis (``--save
"" --appendonly no``) forgets every session when it stops, and so would a production Redis
configured like it. ``SHUTDOWN NOSAVE`` skips the RDB snapshot but still flushes and
fsyncs the AOF, so every acknowledged write survives the restart.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from ragtide.bench.server import accepts, free_port
from tests.polling import until

__all__ = ["PrivatePostgres", "PrivateRedis", "accepts"]

REPO = Path(__file__).resolve().parents[2]


class PrivatePostgres:
    """A PostgreSQL 18 + pgvector server of this run, managed by scripts/pg-start|pg-stop."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.database = f"ragtide_cluster_{secrets.token_hex(4)}"
        self._env = {
            **os.environ,
            "RAGTIDE_PG_DATA": str(root / "pg"),
            "RAGTIDE_PG_PORT": str(self.port),
        }

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def dsn(self) -> str:
        return make_conninfo(self.admin_dsn, dbname=self.database)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def _script(self, name: str) -> None:
        done = subprocess.run(
            [str(REPO / "scripts" / name)], env=self._env, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"scripts/{name} failed: {done.stderr.strip()}")

    def start(self) -> None:
        self._script("pg-start")

    def stop(self) -> None:
        self._script("pg-stop")

    def create_database(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {self.database}")
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")

    def drop_database(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root / "pg", ignore_errors=True)


class PrivateRedis:
    """A Redis server of this run (a child process) that keeps its data in an AOF."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.prefix = f"ragtide-cluster-{secrets.token_hex(4)}"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=10,
        )

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        options = {
            "--port": str(self.port),
            "--bind": "127.0.0.1",
            "--dir": str(self.root),
            "--save": "",
            "--appendonly": "yes",
            "--appendfsync": "everysec",
        }
        with (self.root / "redis.log").open("ab") as log:
            self._proc = subprocess.Popen(
                ["redis-server", *(arg for pair in options.items() for arg in pair)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        until(lambda: self._cli("ping").stdout.strip() == "PONG", "redis answers PING", 20)

    def stop(self) -> None:
        """``SHUTDOWN NOSAVE``, as an operator would; returns when the port is closed."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        self._cli("shutdown", "nosave")
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        until(lambda: not accepts(self.port), "redis port closed", 5)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None
