"""ragtide.client and the CLI's remote commands against a real ``ragtide serve`` process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ragtide.bench.server import free_port, wait_ready
from ragtide.client import (
    AsyncClient,
    ChatAnswer,
    ChatToken,
    Client,
    Forbidden,
    NotFound,
    RagtideAPIError,
    RagtideConnectionError,
    Retry,
    Unauthenticated,
)

pytestmark = pytest.mark.integration

ADMIN_KEY = "adm-" + "r" * 28
PODS = b"""# Pods

A Pod is the smallest deployable unit of computing that you can create and manage in
Kubernetes. A Pod runs one or more containers that share storage and network resources.

## Resource limits

Each container in a Pod can declare resource requests and limits for CPU and memory. The
kubelet enforces the memory limit and throttles CPU above the limit.
"""
BREAD = b"# Bread\n\nBread is baked from flour, water, salt and yeast.\n"


@dataclass
class Server:
    url: str
    key: str  # read + write key of tenant acme
    other: str  # read + write key of tenant other


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("remote")
    port = free_port()
    env = {
        **os.environ,
        "RAGTIDE_DATA_DIR": str(data),
        "RAGTIDE_EMBEDDER__USE": "hashing",
        "RAGTIDE_AUTH__ENABLED": "true",
        "RAGTIDE_AUTH__ADMIN_KEY": ADMIN_KEY,
        "RAGTIDE_LOGGING__LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "ragtide.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(proc, port, time.perf_counter())
        url = f"http://127.0.0.1:{port}"
        with Client(url, api_key=ADMIN_KEY) as admin:
            admin.put_tenant("acme", {"name": "Acme"})
            admin.put_tenant("other")
            key = admin.create_key("acme", ["read", "write"], description="tests").key
            other = admin.create_key("other", ["read", "write"]).key
            assert [k.description for k in admin.list_keys("acme")] == ["tests"]
            assert {t.id for t in admin.list_tenants()} >= {"acme", "other"}
        yield Server(url, key, other)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_upload_search_chat_and_stream(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "pods.md"
    path.write_bytes(PODS)
    progress: list[tuple[int, int]] = []
    with Client(server.url, api_key=server.key) as rt:
        assert rt.create_namespace("kb") is True
        assert rt.create_namespace("kb") is False
        up = rt.upload("kb", path, progress=lambda s, t: progress.append((s, t)))
        assert up.changed and up.documents[0].status == "created"
        assert up.documents[0].document_id == "pods.md" and up.documents[0].chunks >= 1
        assert progress[-1][0] == progress[-1][1] > len(PODS)
        again = rt.upload("kb", PODS, filename="pods.md")
        assert not again.changed and again.documents[0].status == "unchanged"
        rt.upload("kb", BREAD, filename="bread.md", groups=["bakers"])

        assert [d.id for d in rt.list_documents("kb", page_size=1)] == ["bread.md", "pods.md"]
        doc = rt.get_document("kb", "bread.md")
        assert doc.title == "Bread" and doc.metadata["acl_groups"] == ["bakers"]
        namespaces = {n.name: n for n in rt.list_namespaces()}
        assert namespaces["kb"].documents == 2

        hits = rt.search("memory limit of a pod", namespace="kb", top_k=2)
        assert hits[0].document_id == "pods.md" and hits[0].score > 0

        answer = rt.chat("What is a Pod?", namespace="kb")
        assert "Pod" in answer.text and answer.citations[0].document_id == "pods.md"

        items = list(
            rt.chat_stream("And its limits?", namespace="kb", session_id=answer.session_id)
        )
        tokens = [i for i in items if isinstance(i, ChatToken)]
        final = items[-1]
        assert tokens and isinstance(final, ChatAnswer)
        assert all(isinstance(i, ChatToken) for i in items[:-1])
        assert "".join(t.text for t in tokens).strip() == final.text.strip()
        assert final.session_id == answer.session_id

        session = rt.get_session("kb", answer.session_id)
        assert [t.role for t in session.turns] == ["user", "assistant"] * 2
        rt.delete_session("kb", answer.session_id)
        rt.delete_document("kb", "bread.md")
        assert [d.id for d in rt.list_documents("kb")] == ["pods.md"]


def test_errors_carry_the_code(server: Server) -> None:
    with Client(server.url, api_key="rt_" + "x" * 32) as bad, pytest.raises(Unauthenticated):
        bad.search("q")
    with Client(server.url, api_key=server.key) as rt:
        rt.upload("mine", PODS, filename="pods.md")
        with pytest.raises(NotFound) as caught:
            rt.get_document("mine", "missing.md")
        assert caught.value.code == "document_not_found" and caught.value.request_id
        with pytest.raises(RagtideAPIError) as refused:
            rt.upload("mine", b"\x00\x01\x02", filename="x.bin")
        assert refused.value.status == 415
        with pytest.raises(Forbidden):
            rt.list_tenants()
    # The other tenant's "mine" does not exist for it.
    with Client(server.url, api_key=server.other) as other, pytest.raises(NotFound) as caught:
        other.search("pods", namespace="mine")
    assert caught.value.code == "namespace_not_found"
    # Nothing listens there: a connection error, after bounded retries.
    sleeps: list[float] = []
    dead = Client(f"http://127.0.0.1:{free_port()}", retry=Retry(attempts=2), sleep=sleeps.append)
    with dead, pytest.raises(RagtideConnectionError):
        dead.search("q")
    assert len(sleeps) == 1


@pytest.mark.anyio
async def test_async_client(server: Server) -> None:
    async with AsyncClient(server.url, api_key=server.key) as rt:
        await rt.upload("async", PODS, filename="pods.md")
        hits = await rt.search("pod containers", namespace="async")
        assert hits[0].document_id == "pods.md"
        items = [i async for i in rt.chat_stream("What is a Pod?", namespace="async")]
        assert isinstance(items[-1], ChatAnswer) and items[-1].citations
        assert [d.id async for d in rt.list_documents("async")] == ["pods.md"]
        await rt.delete_namespace("async")
        with pytest.raises(NotFound):
            await rt.get_namespace("async")


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RAGTIDE_")}
    return subprocess.run(
        [sys.executable, "-m", "ragtide.cli", *args],
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_remote_commands(server: Server, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    (corpus / "k8s").mkdir(parents=True)
    (corpus / "k8s" / "pods.md").write_bytes(PODS)
    (corpus / "bread.md").write_bytes(BREAD)
    (corpus / "broken.bin").write_bytes(b"\x00\x01")
    remote = ("--url", server.url, "--api-key", server.key)

    r = _cli("ingest", str(corpus), "-n", "cli", "-q", "--json", *remote)
    assert r.returncode == 1, r.stderr  # broken.bin was refused, the rest landed
    summary = json.loads(r.stdout)
    assert summary["namespace"] == "cli" and summary["created"] == 2 and summary["rejected"] == 1
    assert "broken.bin" in r.stderr

    r = _cli("search", "memory limit of a pod", "-n", "cli", *remote)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].split()[2] == "k8s/pods.md"  # the same ids as local ingest

    # The key may come from the environment.
    r = _cli(
        "chat", "-n", "cli", "-m", "What is a Pod?", "--url", server.url, RAGTIDE_API_KEY=server.key
    )
    assert r.returncode == 0, r.stderr
    assert "Pod" in r.stdout and "k8s/pods.md" in r.stdout

    r = _cli("search", "pods", "-n", "cli", "--url", server.url)
    assert r.returncode == 1 and "unauthenticated" in r.stderr
    r = _cli("search", "pods", "-n", "nope", *remote)
    assert r.returncode == 1 and "namespace_not_found" in r.stderr
    r = _cli("search", "pods", "--tenant", "acme", *remote)
    assert r.returncode == 2 and "--tenant" in r.stderr
