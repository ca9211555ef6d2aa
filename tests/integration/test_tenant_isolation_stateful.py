"""Random interleavings of every tenant-facing operation never let one tenant see another's.

A hypothesis state machine drives three tenants, each with namespaces ``docs`` and ``kb``
(store keys from ``namespace_key``), through ingestion, search, chat (the extractive
model, with the answer cache), session turns, document deletion and namespace deletion,
on (a) SQLite + in-process memory and cache and (b) PostgreSQL + Redis memory + Redis
answer cache. Every tenant's documents share the same ids and words; only an owner mark
and a signature in the text tell them apart. After every step the invariant reads each
tenant's data through its own keys and fails on anything of another tenant, of another
namespace, or of a document that no longer exists. Tenant ids are prefixes of one
another (``rX``, ``rXa``, ``rX-b``), as prefix scans must not confuse them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from ragtide.caching import lookup
from ragtide.chat import answer, search
from ragtide.errors import NamespaceNotFound
from ragtide.ingest.pipeline import Ingestor
from ragtide.runtime import Runtime, build_runtime
from ragtide.settings import Settings
from ragtide.types import ChatTurn, Filter, TenantUsage, namespace_key

pytestmark = pytest.mark.integration

PG = os.environ.get("RAGTIDE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5433/ragtide")
REDIS = os.environ.get("RAGTIDE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

NAMES = ("docs", "kb")
SESSIONS = ("s1", "s2")
QUESTIONS = (
    "What do the notes say about pods and bread?",
    "Which shared words are in every note?",
    "and what about bread?",
    "hello",
)
ALL_WORDS = "pods bread shared words every note"
RUNS = settings(
    max_examples=25,
    stateful_step_count=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

_T = TypeVar("_T")
Tenant = st.integers(0, 2)
Name = st.sampled_from(NAMES)


def mark(tenant: str) -> str:
    """What every text of ``tenant`` carries; no tenant's mark contains another's."""
    return f"owner-{tenant}-end"


def signature(tenant: str, name: str, doc: int, version: int) -> str:
    return f"{mark(tenant)} in {name} as note{doc} version {version}"


def note(tenant: str, name: str, doc: int, version: int) -> bytes:
    return (
        f"# Note {doc} of {tenant}\n\n"
        "Pods and bread are shared words in every note. "
        f"This note belongs to {signature(tenant, name, doc, version)}.\n"
    ).encode()


class Backend:
    """Builds one runtime per example on a backend that outlives the examples."""

    def __init__(self, kind: str, root: Path) -> None:
        self.kind = kind
        self.root = root
        tag = uuid.uuid4().hex[:10]
        self.schema, self.prefix = f"iso_{tag}", f"iso-{tag}"

    def settings(self) -> Settings:
        data_dir = Path(tempfile.mkdtemp(dir=self.root))
        overrides: dict[str, Any] = {}
        if self.kind == "postgres":
            shared = {"url": REDIS, "key_prefix": self.prefix}
            overrides = {
                "store": {
                    "use": "postgres",
                    "config": {"url": PG, "db_schema": self.schema, "max_pool_size": 2},
                },
                "memory": {"use": "redis", "config": shared},
                "answer_cache": {"use": "redis", "config": shared},
            }
        return Settings(
            data_dir=data_dir,
            logging={"format": "console", "access_log": False},
            embedder={"use": "hashing"},
            **overrides,
        )

    def cleanup(self) -> None:
        if self.kind != "postgres":
            return
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        client = redis.Redis.from_url(REDIS)
        try:
            keys = list(client.scan_iter(f"{self.prefix}:*"))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


def machine(backend: Backend, runner: asyncio.Runner) -> Callable[[], RuleBasedStateMachine]:
    def run(coro: Coroutine[Any, Any, _T]) -> _T:
        return runner.run(coro)

    class TenantIsolation(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            base = f"r{uuid.uuid4().hex[:8]}"  # fresh tenants: examples share the backend
            self.tenants = (base, f"{base}a", f"{base}-b")
            self.rt: Runtime = build_runtime(backend.settings())
            run(self.rt.start())
            self.ingestor = Ingestor(self.rt)
            self.docs: dict[tuple[str, str], dict[str, str]] = {}  # doc id -> signature
            self.existing: set[tuple[str, str]] = set()
            self.turns: dict[tuple[str, str, str], list[str]] = {}
            self.queries: set[str] = set()  # condensed queries answers may be cached under

        def teardown(self) -> None:
            run(self.rt.aclose())

        def key(self, t: int, name: str) -> str:
            return namespace_key(self.tenants[t], name)

        def others(self, t: int) -> list[str]:
            return [mark(x) for i, x in enumerate(self.tenants) if i != t]

        def check_text(self, t: int, name: str, doc_id: str, text: str) -> None:
            """``text`` came from document ``doc_id`` of ``(t, name)``: it must be that
            document's current text, and nothing of another tenant."""
            tenant = self.tenants[t]
            assert not any(m in text for m in self.others(t)), (tenant, name, text)
            current = self.docs.get((tenant, name), {})
            assert doc_id in current, f"{doc_id} is not in {tenant}/{name}: {text!r}"
            assert current[doc_id] in text, (current[doc_id], text)

        # --- rules -------------------------------------------------------------------

        @rule(t=Tenant, name=Name, doc=st.integers(0, 2), version=st.integers(0, 1))
        def ingest(self, t: int, name: str, doc: int, version: int) -> None:
            tenant = self.tenants[t]
            data = note(tenant, name, doc, version)
            [outcome] = run(self.ingestor.ingest_bytes(self.key(t, name), f"note{doc}.md", data))
            assert outcome.status in ("created", "updated", "unchanged"), outcome
            self.docs.setdefault((tenant, name), {})[outcome.document_id] = signature(
                tenant, name, doc, version
            )
            self.existing.add((tenant, name))

        @rule(t=Tenant, name=Name, doc=st.integers(0, 2))
        def delete_document(self, t: int, name: str, doc: int) -> None:
            key, tenant = self.key(t, name), self.tenants[t]
            deleted = run(self.rt.store.delete_document(key, f"note{doc}.md"))
            assert deleted == (f"note{doc}.md" in self.docs.get((tenant, name), {}))
            if deleted:
                run(self.rt.documents_changed(key))
                del self.docs[(tenant, name)][f"note{doc}.md"]

        @rule(t=Tenant, name=Name)
        def delete_namespace(self, t: int, name: str) -> None:
            # As DELETE /v1/namespaces/{name} and tenant deletion do.
            key, tenant = self.key(t, name), self.tenants[t]
            assert run(self.rt.store.delete_namespace(key)) == ((tenant, name) in self.existing)
            run(self.rt.memory.delete_namespace(key))
            run(self.rt.documents_changed(key))
            self.existing.discard((tenant, name))
            self.docs.pop((tenant, name), None)
            for session in SESSIONS:
                self.turns.pop((tenant, name, session), None)

        @rule(t=Tenant, name=Name, q=st.sampled_from(QUESTIONS))
        def search(self, t: int, name: str, q: str) -> None:
            key, tenant = self.key(t, name), self.tenants[t]
            if (tenant, name) not in self.existing:
                with pytest.raises(NamespaceNotFound):
                    run(search(self.rt, key, q, 10))
                return
            hits = run(search(self.rt, key, q, 10))
            for hit in hits:
                self.check_text(t, name, hit.document_id, hit.chunk.text)

        @rule(t=Tenant, name=Name, session=st.sampled_from(SESSIONS), q=st.sampled_from(QUESTIONS))
        def chat(self, t: int, name: str, session: str, q: str) -> None:
            key, tenant = self.key(t, name), self.tenants[t]
            if (tenant, name) not in self.existing:
                with pytest.raises(NamespaceNotFound):
                    run(answer(self.rt, key, q, session_id=session))
                return
            result = run(answer(self.rt, key, q, session_id=session))
            self.queries.add(result.intent.query)
            assert not any(m in result.text for m in self.others(t)), result.text
            for citation in result.citations:
                self.check_text(t, name, citation.document_id, citation.text)
            self.turns.setdefault((tenant, name, session), []).extend([q, result.text])

        @rule(t=Tenant, name=Name, session=st.sampled_from(SESSIONS))
        def remember(self, t: int, name: str, session: str) -> None:
            tenant = self.tenants[t]
            text = f"a turn of {mark(tenant)} in {name}"
            run(self.rt.memory.append(self.key(t, name), session, ChatTurn.user(text)))
            self.turns.setdefault((tenant, name, session), []).append(text)

        # --- the invariant ---------------------------------------------------------------

        @invariant()
        def nothing_crosses_tenants(self) -> None:
            run(self._check())

        async def _check(self) -> None:
            store, rt = self.rt.store, self.rt
            vector = await rt.embedder.embed_query(ALL_WORDS)
            for t, tenant in enumerate(self.tenants):
                mine = sorted(namespace_key(tenant, n) for x, n in self.existing if x == tenant)
                assert await store.list_namespaces(f"{tenant}/") == mine
                counts = [len(self.docs.get((tenant, n), {})) for n in NAMES]
                usage = await store.tenant_usage(tenant)  # type: ignore[attr-defined]
                assert isinstance(usage, TenantUsage)
                assert (usage.namespaces, usage.documents) == (len(mine), sum(counts))
                for name in NAMES:
                    key = namespace_key(tenant, name)
                    docs = self.docs.get((tenant, name), {})
                    exists = (tenant, name) in self.existing
                    assert await store.namespace_exists(key) == exists
                    listed = await store.list_documents(key)
                    assert sorted(d.id for d in listed) == sorted(docs)
                    assert (await store.counts(key))[0] == len(docs)
                    keyword = await store.keyword_search(key, ALL_WORDS, 50, Filter())
                    near = await store.vector_search(key, vector, 50, Filter())
                    for hits in (keyword, near):
                        assert {h.document_id for h in hits} == set(docs)
                        for hit in hits:
                            self.check_text(t, name, hit.document_id, hit.chunk.text)
                    for session in SESSIONS:
                        turns = await rt.memory.load(key, session, limit=1000)
                        want = self.turns.get((tenant, name, session), [])
                        assert [turn.content for turn in turns] == want
                    assert rt.cache is not None
                    for query in self.queries:
                        _, cached = await lookup(rt.cache, key, query, rt.fingerprint)
                        if cached is None:
                            continue
                        assert exists, f"a cached answer in deleted {key}"
                        assert not any(m in cached["text"] for m in self.others(t))
                        for citation in cached["citations"]:
                            self.check_text(t, name, citation["document_id"], citation["text"])

    return TenantIsolation


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    backend = Backend(request.param, tmp_path)
    try:
        yield backend
    finally:
        backend.cleanup()
        shutil.rmtree(tmp_path, ignore_errors=True)


def test_no_tenant_sees_another(backend: Backend) -> None:
    with asyncio.Runner() as runner:
        run_state_machine_as_test(machine(backend, runner), settings=RUNS)
