"""The worked plugin example, examples/ragtide-acme (installed by scripts/install)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from ragtide_acme import AcmeRetriever, ClearancePolicy

from ragtide.access import AccessPolicy, RequestContext, authorize
from ragtide.builtin.sqlite_store import SQLiteStore
from ragtide.components import Retriever
from ragtide.errors import PermissionDenied
from ragtide.registry import Registry
from ragtide.settings import ComponentSpec
from ragtide.testing import AccessPolicyContract
from ragtide.testing.fakes import make_chunks, make_document
from ragtide.types import Action, Filter, Hit, RetrievalRequest

ACME, OTHER = "acme/docs", "other/docs"


class TestClearancePolicy(AccessPolicyContract):
    group_sets = (
        *AccessPolicyContract.group_sets,
        frozenset({"clearance:internal"}),
        frozenset({"clearance:secret", "clearance:public", "staff"}),
        frozenset({"clearance:top-secret", "clearance:", "clearance"}),
    )

    @pytest.fixture
    def policy(self) -> ClearancePolicy:
        return ClearancePolicy(ClearancePolicy.Config())


class TestClearancePolicyWithMoreLevels(TestClearancePolicy):
    @pytest.fixture
    def policy(self) -> ClearancePolicy:
        levels = ["public", "internal", "secret", "top-secret"]
        return ClearancePolicy(ClearancePolicy.Config(levels=levels, field="level"))


def _ctx(*groups: str, action: Action = "search") -> RequestContext:
    return AccessPolicyContract().make_context(groups=frozenset(groups), action=action)


@pytest.mark.anyio
async def test_clearance_is_the_highest_named_level() -> None:
    policy = ClearancePolicy(ClearancePolicy.Config())
    assert policy.clearance(frozenset()) == "public"
    assert policy.clearance(frozenset({"clearance:internal", "staff"})) == "internal"
    assert policy.clearance(frozenset({"clearance:internal", "clearance:secret"})) == "secret"
    assert policy.clearance(frozenset({"clearance:cosmic", "secret"})) == "public"
    decision = await policy.check(_ctx("clearance:internal"))
    assert decision.filter == Filter.any_of("clearance", ["public", "internal"])
    assert (await policy.check(_ctx())).filter == Filter.any_of("clearance", ["public"])


@pytest.mark.anyio
async def test_changes_need_internal_clearance() -> None:
    policy = ClearancePolicy(ClearancePolicy.Config())
    changes: tuple[Action, ...] = ("write", "delete", "admin")
    for action in changes:
        denied = await policy.check(_ctx("clearance:public", action=action))
        assert denied.verdict == "deny" and "internal" in denied.reason
        assert (await policy.check(_ctx("clearance:internal", action=action))).verdict == "allow"
    with pytest.raises(PermissionDenied, match="needs clearance"):
        await authorize([("acme-clearance", policy)], _ctx(action="delete"))
    reads: tuple[Action, ...] = ("search", "chat", "read")
    for action in reads:
        assert (await policy.check(_ctx(action=action))).verdict == "allow"


def test_clearance_config_is_checked() -> None:
    for levels in (["internal", "public"], ["public", "secret"], ["public", "public", "internal"]):
        with pytest.raises(ValidationError):
            ClearancePolicy.Config(levels=levels)


def test_plugins_are_registered_by_entry_point(tmp_path: Path) -> None:
    registry = Registry.from_entry_points()
    store = SQLiteStore(SQLiteStore.Config(path=tmp_path / "db.sqlite"))
    spec = ComponentSpec(use="acme-boost", config={"boost_terms": ["warranty"]})
    assert isinstance(registry.build(Retriever, spec, store=store), AcmeRetriever)
    policy = registry.build(AccessPolicy, ComponentSpec(use="acme-clearance"))
    assert isinstance(policy, ClearancePolicy)


# --- AcmeRetriever against the real SQLite store ---------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(SQLiteStore.Config(path=tmp_path / "db.sqlite"))
    await store.start()
    docs = [
        (ACME, "plain", "Release notes", "the pump report covers pump pressure pump", "public"),
        (ACME, "boosted", "Warranty terms", "the pump report", "public"),
        (ACME, "in-text", "Memo", "pump report: the RECALL of batch 7", "internal"),
        (ACME, "secret", "Board minutes", "pump report on the merger", "secret"),
        (OTHER, "leak", "Warranty recall", "pump report pump pump warranty recall", "public"),
    ]
    for i, (ns, doc_id, title, text, level) in enumerate(docs):
        chunks = make_chunks(doc_id, [text], title=title, metadata={"clearance": level})
        vector = np.eye(len(docs), dtype=np.float32)[i : i + 1]
        await store.put_document(ns, make_document(doc_id, title), chunks, vector, "e")
    yield store
    await store.aclose()


def _retriever(store: SQLiteStore, **config: object) -> AcmeRetriever:
    return AcmeRetriever(
        AcmeRetriever.Config.model_validate({"boost_terms": ["warranty", "recall"], **config}),
        store=store,
    )


def _ids(hits: list[Hit]) -> list[str]:
    return [h.document_id for h in hits]


@pytest.mark.anyio
async def test_boosted_chunks_rank_first(store: SQLiteStore) -> None:
    plain = await store.keyword_search(ACME, "pump report", 10, Filter())
    assert _ids(plain)[0] == "plain"  # the most "pump"s wins on BM25 alone
    hits = await _retriever(store, boost=50.0).retrieve(RetrievalRequest(ACME, "pump report"))
    assert set(_ids(hits[:2])) == {"boosted", "in-text"}  # by title, by text (any case)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    by_id = {h.document_id: h.score for h in plain}
    assert {h.document_id: h.score for h in hits}["boosted"] == pytest.approx(
        by_id["boosted"] * 50.0
    )
    assert {h.document_id: h.score for h in hits}["plain"] == pytest.approx(by_id["plain"])


@pytest.mark.anyio
async def test_never_returns_another_namespaces_chunks(store: SQLiteStore) -> None:
    retriever = _retriever(store)
    hits = await retriever.retrieve(RetrievalRequest(ACME, "pump warranty recall", top_k=50))
    assert hits and "leak" not in _ids(hits)
    other = await retriever.retrieve(RetrievalRequest(OTHER, "pump report merger", top_k=50))
    assert _ids(other) == ["leak"]
    assert await retriever.retrieve(RetrievalRequest("nobody/docs", "pump report")) == []


@pytest.mark.anyio
async def test_respects_the_filter(store: SQLiteStore) -> None:
    public = Filter.any_of("clearance", ["public"])
    hits = await _retriever(store).retrieve(RetrievalRequest(ACME, "pump report", filter=public))
    assert sorted(_ids(hits)) == ["boosted", "plain"]
    by_id = Filter.any_of("document_id", ["secret"])
    hits = await _retriever(store).retrieve(RetrievalRequest(ACME, "pump report", filter=by_id))
    assert _ids(hits) == ["secret"]


@pytest.mark.anyio
async def test_returns_top_k(store: SQLiteStore) -> None:
    hits = await _retriever(store).retrieve(RetrievalRequest(ACME, "pump report", top_k=2))
    assert len(hits) == 2
    few = await _retriever(store, candidates=1).retrieve(RetrievalRequest(ACME, "pump report"))
    assert len(few) == 1


@pytest.mark.anyio
async def test_passes_namespace_and_filter_to_the_store_unchanged(store: SQLiteStore) -> None:
    calls: list[tuple[str, str, int, Filter]] = []

    class Recording:
        async def keyword_search(
            self, namespace: str, text: str, limit: int, filter: Filter
        ) -> list[Hit]:
            calls.append((namespace, text, limit, filter))
            return await store.keyword_search(namespace, text, limit, filter)

    narrowed = Filter.any_of("clearance", ["public"]) & Filter.any_of("document_id", ["plain"])
    config = AcmeRetriever.Config(boost_terms=["x"], candidates=7)
    retriever = AcmeRetriever(config, store=Recording())  # type: ignore[arg-type]
    await retriever.retrieve(RetrievalRequest(ACME, "pump", filter=narrowed))
    assert calls == [(ACME, "pump", 7, narrowed)]


@pytest.mark.anyio
async def test_clearance_filter_through_the_retriever(store: SQLiteStore) -> None:
    policy = ClearancePolicy(ClearancePolicy.Config())
    retriever = _retriever(store)
    for groups, visible in [
        ((), {"plain", "boosted"}),
        (("clearance:internal",), {"plain", "boosted", "in-text"}),
        (("clearance:secret",), {"plain", "boosted", "in-text", "secret"}),
    ]:
        allowed = await authorize([("acme-clearance", policy)], _ctx(*groups))
        hits = await retriever.retrieve(RetrievalRequest(ACME, "pump report", filter=allowed))
        assert set(_ids(hits)) == visible, groups
