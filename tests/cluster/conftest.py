"""Fixtures for the cluster: private PostgreSQL and Redis, three replicas, nginx.

One cluster serves the whole session (starting it costs a few seconds); ``cluster``
hands it to each test with three ready replicas routed and both backends up, whatever
the previous test did to it. The demo corpus is ingested once, through the HTTP API,
into a namespace of its own.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ragtide.bench.cluster import Nginx, NginxOptions
from ragtide.bench.server import free_port

from .backends import PrivatePostgres, PrivateRedis, accepts
from .replicas import Cluster

REPLICAS = 3
NAMESPACE = "kb"
DEMO = Path(__file__).resolve().parents[2] / "src" / "ragtide" / "demo"


@dataclass(slots=True)
class Backends:
    postgres: PrivatePostgres
    redis: PrivateRedis
    root: Path


@pytest.fixture(scope="session")
def backends() -> Iterator[Backends]:
    if shutil.which("nginx") is None:
        pytest.fail("nginx is not installed: run scripts/nginx-ensure")
    # Under /var/tmp and world-traversable: the PostgreSQL server runs as user postgres.
    root = Path(tempfile.mkdtemp(prefix="ragtide-cluster-", dir="/var/tmp"))
    root.chmod(0o755)
    pg, redis = PrivatePostgres(root), PrivateRedis(root / "redis")
    try:
        pg.start()
        pg.create_database()
        redis.start()
        yield Backends(pg, redis, root)
    finally:
        redis.close()
        try:
            if not _pg_up(pg):
                pg.start()
            pg.drop_database()
        finally:
            pg.close()
            shutil.rmtree(root, ignore_errors=True)


def _pg_up(pg: PrivatePostgres) -> bool:
    return accepts(pg.port)


@pytest.fixture(scope="session")
def _cluster(backends: Backends) -> Iterator[Cluster]:
    env = {
        "RAGTIDE_ENVIRONMENT": "test",
        "RAGTIDE_STORE__URL": backends.postgres.url,
        "RAGTIDE_REDIS__URL": backends.redis.url,
        # Explicit components so that the run's key prefix applies (the URL is filled in).
        "RAGTIDE_MEMORY__USE": "redis",
        "RAGTIDE_MEMORY__CONFIG__KEY_PREFIX": backends.redis.prefix,
        "RAGTIDE_ANSWER_CACHE__USE": "redis",
        "RAGTIDE_ANSWER_CACHE__CONFIG__KEY_PREFIX": backends.redis.prefix,
        # The Redis answer cache is on: Runtime starts it with the other components and
        # /ready pings it, so a Redis outage shows on /ready (test_backend_outages.py).
    }
    nginx = Nginx(backends.root / "nginx", free_port(), NginxOptions())
    cluster = Cluster(backends.root, env, nginx)
    try:
        cluster.start(REPLICAS)
        cluster.route()
        _ingest_demo(cluster.live()[0].url)
        yield cluster
    finally:
        cluster.close()


def _ingest_demo(url: str) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        assert client.put(f"/v1/namespaces/{NAMESPACE}").status_code in (200, 201)
        for path in sorted(DEMO.glob("*.md")):
            files = {"file": (path.name, path.read_bytes(), "text/markdown")}
            r = client.post(f"/v1/namespaces/{NAMESPACE}/documents", files=files)
            assert r.status_code in (200, 201), r.text


@pytest.fixture
def cluster(_cluster: Cluster, backends: Backends) -> Iterator[Cluster]:
    """The session's cluster, back to three ready replicas behind nginx."""
    if not backends.redis.running:
        backends.redis.start()
    if not _pg_up(backends.postgres):
        backends.postgres.start()
    _cluster.reconcile(REPLICAS)  # returns once every replica's /ready is 200
    yield _cluster
