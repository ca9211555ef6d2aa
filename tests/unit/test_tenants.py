"""TenantDirectory: records, per-tenant runtimes, namespaces, quotas.

The tenant store is a real SQLiteStore in tmp_path; plugins come from a ``Registry``
built from a mapping; the record cache runs on an injected clock; the rate limiter is
either a recording fake or the in-memory one on a fake clock. Nothing sleeps.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from prometheus_client import REGISTRY
from pydantic import BaseModel, ConfigDict

from ragtide.access import AccessPolicy, Decision, RequestContext
from ragtide.builtin.embedders import HashingEmbedder
from ragtide.builtin.extractive import ExtractiveChatModel
from ragtide.builtin.intent import RuleIntentDetector
from ragtide.builtin.memory import InMemoryMemoryStore
from ragtide.builtin.ratelimit import InMemoryRateLimiter
from ragtide.builtin.redis_cache import InMemoryAnswerCache
from ragtide.builtin.retrievers import HybridRetriever
from ragtide.builtin.sqlite_store import SQLiteStore
from ragtide.components import (
    AnswerCache,
    ChatModel,
    DocumentStore,
    Embedder,
    IntentDetector,
    MemoryStore,
    RateLimiter,
    Retriever,
)
from ragtide.errors import (
    BackendUnavailable,
    InvalidNamespace,
    InvalidRequest,
    NamespaceNotFound,
    PermissionDenied,
    PluginFailed,
    QuotaExceeded,
    RateLimited,
)
from ragtide.observability import tenant_label
from ragtide.registry import Registry
from ragtide.runtime import Runtime, build_runtime
from ragtide.settings import Settings
from ragtide.tenant_config import TenantConfig
from ragtide.tenants import TenantDirectory, parse_tenant_config
from ragtide.testing.fakes import FakeChatModel, make_chunks, make_document
from ragtide.types import Filter, Principal, RateDecision

TODAY = "20240102"


# --- plugins -----------------------------------------------------------------------------


class Tracked(HybridRetriever):
    """A retriever that records being built, started and closed."""

    built: ClassVar[list[Tracked]] = []

    class Config(HybridRetriever.Config):
        label: str = ""

    def __init__(self, config: Config, *, store: DocumentStore) -> None:
        super().__init__(config, store=store)
        self.label = config.label
        self.started = self.closed = False
        Tracked.built.append(self)

    async def start(self) -> None:
        self.started = True

    async def aclose(self) -> None:
        self.closed = True


class Gated(Tracked):
    """Starts only once the test opens the gate (to overlap two first calls)."""

    gate: asyncio.Event | None = None
    waiting = 0

    async def start(self) -> None:
        assert Gated.gate is not None
        Gated.waiting += 1
        await Gated.gate.wait()
        self.started = True


class Broken:
    attempts = 0

    class Config(BaseModel):
        pass

    def __init__(self, config: Config, **deps: Any) -> None:
        Broken.attempts += 1
        raise RuntimeError("the plugin's own bug")


class Prompted(FakeChatModel):
    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        replies: list[str] = ["ok"]
        system_prompt: str | None = None
        api_key: str | None = None

    def __init__(self, config: Config) -> None:
        super().__init__(replies=config.replies)
        self.config = config


class Group:
    class Config(BaseModel):
        field: str = "group"
        value: str = "x"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.closed = False

    async def check(self, ctx: RequestContext) -> Decision:
        return Decision.allow(Filter.any_of(self.config.field, [self.config.value]))

    async def aclose(self) -> None:
        self.closed = True


class Deny:
    class Config(BaseModel):
        reason: str = "no"

    def __init__(self, config: Config) -> None:
        self.reason = config.reason

    async def check(self, ctx: RequestContext) -> Decision:
        return Decision.deny(self.reason)


class Exploding:
    class Config(BaseModel):
        pass

    def __init__(self, config: Config) -> None:
        pass

    async def check(self, ctx: RequestContext) -> Decision:
        raise ZeroDivisionError


class FailsToStart:
    class Config(BaseModel):
        pass

    def __init__(self, config: Config) -> None:
        pass

    async def start(self) -> None:
        raise OSError("cannot reach the policy server")

    async def check(self, ctx: RequestContext) -> Decision:
        return Decision.abstain()


def registry() -> Registry:
    return Registry(
        {
            DocumentStore: {"sqlite": SQLiteStore},
            Embedder: {"hashing": HashingEmbedder},
            Retriever: {
                "hybrid": HybridRetriever,
                "tracked": Tracked,
                "gated": Gated,
                "broken": Broken,
            },
            IntentDetector: {"rules": RuleIntentDetector},
            ChatModel: {
                "extractive": ExtractiveChatModel,
                "fake": FakeChatModel,
                "prompted": Prompted,
            },
            MemoryStore: {"memory": InMemoryMemoryStore},
            AnswerCache: {"memory": InMemoryAnswerCache},
            RateLimiter: {"memory": InMemoryRateLimiter},
            AccessPolicy: {
                "group": Group,
                "deny": Deny,
                "exploding": Exploding,
                "fails-to-start": FailsToStart,
            },
        }
    )


# --- the environment ---------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingStore:
    """The SQLiteStore, counting ``get_tenant`` calls."""

    def __init__(self, inner: SQLiteStore) -> None:
        self.inner = inner
        self.reads = 0

    async def get_tenant(self, tenant: str) -> Any:
        self.reads += 1
        return await self.inner.get_tenant(tenant)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class FakeLimiter:
    def __init__(self) -> None:
        self.checks: list[tuple[str, int, float | None, int | None]] = []
        self.counters: dict[str, int] = {}
        self.adds: list[tuple[str, int, int]] = []
        self.decision = RateDecision(True, 10, 0.0)
        self.down = False

    async def ping(self) -> None:
        return None

    async def check(
        self,
        key: str,
        cost: int = 1,
        *,
        rate_per_s: float | None = None,
        burst: int | None = None,
    ) -> RateDecision:
        if self.down:
            raise BackendUnavailable("redis is down")
        self.checks.append((key, cost, rate_per_s, burst))
        return self.decision

    async def add(self, key: str, amount: int, ttl_s: int) -> int:
        if self.down:
            raise BackendUnavailable("redis is down")
        self.adds.append((key, amount, ttl_s))
        self.counters[key] = self.counters.get(key, 0) + amount
        return self.counters[key]


@dataclasses.dataclass
class Env:
    base: Runtime
    store: CountingStore
    clock: Clock
    directory: TenantDirectory
    limiter: FakeLimiter

    async def put(self, tenant: str, **config: Any) -> int:
        """Store a record and make this replica see it at once; returns its version."""
        record, _ = await self.store.inner.put_tenant(tenant, {"id": tenant, **config}, "s")
        self.directory.forget(tenant)
        return record.version


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    data: dict[str, Any] = {
        "data_dir": tmp_path,
        "embedder": {"use": "hashing"},
        "retriever": {"use": "hybrid", "config": {"candidates": 7}},
        "rate_limit": {"enabled": True},
        # Rates are unlimited by default; these tests give every tenant the same caps.
        "tenants": {
            "quotas": {"search_per_second": 50, "chat_per_second": 10, "write_per_second": 5}
        },
    }
    data.update(overrides)
    return Settings(**data)


async def make_env(tmp_path: Path, **overrides: Any) -> Env:
    base = build_runtime(make_settings(tmp_path, **overrides), registry())
    limiter = FakeLimiter()
    base = dataclasses.replace(base, limiter=limiter)
    await base.store.start()  # type: ignore[attr-defined]
    assert isinstance(base.store, SQLiteStore)
    store = CountingStore(base.store)
    clock = Clock()
    directory = TenantDirectory(base, store, registry(), clock=clock)
    return Env(base, store, clock, directory, limiter)


@pytest.fixture
async def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Env]:
    monkeypatch.setattr("ragtide.tenants._today", lambda: TODAY)
    Tracked.built = []
    Broken.attempts = 0
    e = await make_env(tmp_path)
    yield e
    await e.directory.aclose()
    await e.base.store.aclose()  # type: ignore[attr-defined]


def principal(tenant: str = "acme", namespaces: set[str] | None = None) -> Principal:
    return Principal(
        tenant,
        "key:k1",
        frozenset({"read", "write"}),
        namespaces=None if namespaces is None else frozenset(namespaces),
    )


def failures(tenant: str, plugin: str) -> float:
    value = REGISTRY.get_sample_value(
        "ragtide_plugin_failures_total", {"tenant": tenant_label(tenant), "plugin": plugin}
    )
    return value or 0.0


# --- records -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_records_are_cached_for_cache_seconds(env: Env) -> None:
    await env.store.inner.put_tenant("acme", {"id": "acme", "name": "v1"}, "s")
    first = await env.directory.record("acme")
    assert first is not None and first.version == 1 and env.store.reads == 1
    await env.store.inner.put_tenant("acme", {"id": "acme", "name": "v2"}, "s")
    env.clock.now += 1.99  # tenants.cache_seconds is 2.0
    assert await env.directory.record("acme") == first
    assert env.store.reads == 1
    env.clock.now += 0.01
    second = await env.directory.record("acme")
    assert second is not None and second.version == 2 and second.config["name"] == "v2"
    assert env.store.reads == 2


@pytest.mark.anyio
async def test_an_unknown_tenant_is_cached_too_and_forget_rereads(env: Env) -> None:
    assert await env.directory.record("ghost") is None
    await env.store.inner.put_tenant("ghost", {"id": "ghost"}, "s")
    assert await env.directory.record("ghost") is None
    assert env.store.reads == 1
    env.directory.forget("ghost")
    record = await env.directory.record("ghost")
    assert record is not None and record.id == "ghost"
    assert env.store.reads == 2


@pytest.mark.anyio
async def test_a_deletion_reaches_the_replica_after_the_ttl(env: Env) -> None:
    await env.put("acme")
    assert await env.directory.exists("acme")
    await env.store.inner.delete_tenant("acme")
    assert await env.directory.exists("acme")  # still cached
    env.clock.now += 2.0
    assert not await env.directory.exists("acme")


@pytest.mark.anyio
async def test_exists(env: Env) -> None:
    assert await env.directory.exists("default")  # no record needed
    assert env.store.reads == 0
    assert not await env.directory.exists("nobody")
    await env.put("acme")
    await env.put("frozen", disabled=True)
    await env.put("thawed", disabled=False)
    assert await env.directory.exists("acme")
    assert not await env.directory.exists("frozen")
    assert await env.directory.exists("thawed")


@pytest.mark.anyio
async def test_put_stores_the_config_without_defaults_and_forgets_the_cache(env: Env) -> None:
    assert await env.directory.record("acme") is None
    record, created = await env.directory.put(
        TenantConfig(id="acme", name="Acme", retrieval={"top_k": 4})
    )
    assert created and record.version == 1
    assert dict(record.config) == {"id": "acme", "name": "Acme", "retrieval": {"top_k": 4}}
    assert await env.directory.record("acme") == record  # not the cached None
    _, created = await env.directory.put(TenantConfig(id="acme"))
    assert not created


@pytest.mark.anyio
async def test_put_refuses_a_plugin_that_is_not_allowed(tmp_path: Path) -> None:
    env = await make_env(tmp_path, tenants={"allowed_plugins": ["tracked"]})
    try:
        await env.directory.put(TenantConfig(id="a", retriever={"use": "tracked"}))
        with pytest.raises(InvalidRequest) as info:
            await env.directory.put(TenantConfig(id="b", retriever={"use": "hybrid"}))
        assert "'hybrid' is not allowed" in info.value.message
        assert await env.store.inner.get_tenant("b") is None
    finally:
        await env.base.store.aclose()  # type: ignore[attr-defined]


def test_parse_tenant_config_names_where_and_every_bad_field() -> None:
    assert parse_tenant_config({"id": "acme"}).id == "acme"
    with pytest.raises(InvalidRequest) as info:
        parse_tenant_config({"id": "Acme", "colour": 1}, where="tenants/acme.yaml")
    message = info.value.message
    assert message.startswith("tenants/acme.yaml: ")
    assert "id: " in message and "colour: " in message


# --- runtimes ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_no_record_or_no_overrides_is_the_base_runtime(env: Env) -> None:
    assert await env.directory.runtime("nobody") is env.base
    await env.put("acme", name="Acme", quotas={"documents": 5}, retrieval={}, policies=[])
    assert await env.directory.runtime("acme") is env.base


@pytest.mark.anyio
async def test_top_k_alone_keeps_the_base_components(env: Env) -> None:
    await env.put("acme", retrieval={"top_k": 3})
    rt = await env.directory.runtime("acme")
    assert rt is not env.base
    assert rt.settings.retrieval.top_k == 3
    assert env.base.settings.retrieval.top_k != 3
    assert rt.retriever is env.base.retriever and rt.chat_model is env.base.chat_model
    assert rt.store is env.base.store and rt.limiter is env.base.limiter
    assert rt.names == env.base.names
    assert rt.fingerprint and rt.fingerprint != env.base.fingerprint
    assert rt.policies == ()


@pytest.mark.anyio
async def test_fusion_builds_a_new_retriever_on_the_base_config(env: Env) -> None:
    await env.put("acme", retrieval={"fusion": "rrf", "vector_weight": 0.9})
    rt = await env.directory.runtime("acme")
    assert isinstance(rt.retriever, HybridRetriever)
    assert rt.retriever is not env.base.retriever
    cfg = rt.retriever._config
    assert (cfg.fusion, cfg.vector_weight, cfg.candidates) == ("rrf", 0.9, 7)
    assert env.base.retriever._config.fusion == "convex"  # type: ignore[attr-defined]
    assert rt.settings.retrieval.top_k == env.base.settings.retrieval.top_k


@pytest.mark.anyio
async def test_a_retriever_spec_is_built_started_and_named(env: Env) -> None:
    await env.put("acme", retriever={"use": "tracked", "config": {"label": "acme"}})
    rt = await env.directory.runtime("acme")
    assert isinstance(rt.retriever, Tracked)
    assert rt.retriever.label == "acme" and rt.retriever.started
    assert rt.names["retriever"] == "tracked"
    assert env.base.names["retriever"] == "hybrid"
    assert rt.retriever._store is env.base.store


@pytest.mark.anyio
async def test_two_tenants_get_their_own_runtimes(env: Env) -> None:
    await env.put("a", retriever={"use": "tracked", "config": {"label": "a"}})
    await env.put("b", retriever={"use": "tracked", "config": {"label": "b"}})
    ra, rb = await env.directory.runtime("a"), await env.directory.runtime("b")
    assert ra.retriever.label == "a" and rb.retriever.label == "b"  # type: ignore[attr-defined]
    assert ra.fingerprint != rb.fingerprint


@pytest.mark.anyio
async def test_system_prompt_goes_to_a_chat_model_that_takes_one(env: Env) -> None:
    await env.put(
        "acme",
        chat_model={"use": "prompted", "config": {"replies": ["hi"]}},
        system_prompt="Answer as Acme.",
    )
    rt = await env.directory.runtime("acme")
    assert isinstance(rt.chat_model, Prompted)
    assert rt.chat_model.config.system_prompt == "Answer as Acme."
    assert rt.chat_model.config.replies == ["hi"]
    assert rt.names["chat_model"] == "prompted"


@pytest.mark.anyio
async def test_system_prompt_on_the_base_chat_model_that_takes_none(env: Env) -> None:
    await env.put("acme", system_prompt="Be brief.")  # the base is "extractive"
    with pytest.raises(PluginFailed) as info:
        await env.directory.runtime("acme")
    assert "acme" in info.value.message
    assert "'extractive' takes no system prompt" in info.value.message
    await env.put("beta", chat_model={"use": "fake"}, system_prompt="Be brief.")
    with pytest.raises(PluginFailed, match="'fake' takes no system prompt"):
        await env.directory.runtime("beta")


@pytest.mark.anyio
async def test_an_empty_system_prompt_is_still_an_override(env: Env) -> None:
    await env.put("acme", chat_model={"use": "prompted"}, system_prompt="")
    rt = await env.directory.runtime("acme")
    assert isinstance(rt.chat_model, Prompted) and rt.chat_model.config.system_prompt == ""


@pytest.mark.anyio
async def test_runtime_is_cached_per_version_and_rebuilt_on_change(env: Env) -> None:
    await env.put("acme", retriever={"use": "tracked", "config": {"label": "v1"}})
    first = await env.directory.runtime("acme")
    assert await env.directory.runtime("acme") is first
    assert len(Tracked.built) == 1
    old = first.retriever
    assert isinstance(old, Tracked) and not old.closed

    await env.store.inner.put_tenant(
        "acme", {"id": "acme", "retriever": {"use": "tracked", "config": {"label": "v2"}}}, "s"
    )
    assert await env.directory.runtime("acme") is first  # the record is still cached
    env.clock.now += 2.0
    second = await env.directory.runtime("acme")
    assert second is not first
    assert second.retriever.label == "v2"  # type: ignore[attr-defined]
    assert old.closed  # the old owned component was closed
    assert not second.retriever.closed
    assert len(Tracked.built) == 2
    assert await env.directory.runtime("acme") is second


@pytest.mark.anyio
async def test_the_base_components_are_never_closed_on_rebuild(env: Env) -> None:
    await env.put("acme", retrieval={"top_k": 2})
    await env.directory.runtime("acme")
    await env.put("acme", retrieval={"top_k": 3}, retriever={"use": "tracked"})
    rt = await env.directory.runtime("acme")
    assert rt.settings.retrieval.top_k == 3
    await env.put("acme", retrieval={"top_k": 4})
    rt = await env.directory.runtime("acme")
    assert Tracked.built[0].closed
    assert rt.retriever is env.base.retriever
    # Base components are not owned: closing the directory leaves the base usable.
    await env.directory.aclose()
    assert await env.base.store.namespace_exists("acme/none") is False


@pytest.mark.anyio
async def test_concurrent_first_calls_build_once(env: Env) -> None:
    Gated.gate, Gated.waiting = asyncio.Event(), 0
    await env.put("acme", retriever={"use": "gated"})
    tasks = [asyncio.create_task(env.directory.runtime("acme")) for _ in range(5)]
    for _ in range(1000):  # let the first call reach the plugin's start()
        if Gated.waiting:
            break
        await asyncio.sleep(0)
    assert Gated.waiting == 1
    for _ in range(20):  # and every other call reach the lock
        await asyncio.sleep(0)
    Gated.gate.set()
    runtimes = await asyncio.gather(*tasks)
    assert len(Tracked.built) == 1 and Gated.waiting == 1
    assert all(rt is runtimes[0] for rt in runtimes)


@pytest.mark.anyio
async def test_a_failing_plugin_fails_that_tenant_only_and_is_cached(env: Env) -> None:
    await env.put("bad", retriever={"use": "broken"})
    await env.put("good", retriever={"use": "tracked"})
    before = failures("bad", "broken")
    with pytest.raises(PluginFailed) as info:
        await env.directory.runtime("bad")
    assert info.value.message == "tenant 'bad': plugin 'broken' failed to start"
    assert "the plugin's own bug" not in info.value.message
    assert failures("bad", "broken") == before + 1
    with pytest.raises(PluginFailed):
        await env.directory.runtime("bad")
    assert Broken.attempts == 1  # cached for this version: not rebuilt on every request
    assert failures("bad", "broken") == before + 1
    assert isinstance((await env.directory.runtime("good")).retriever, Tracked)
    assert await env.directory.runtime("nobody") is env.base
    # The same version is tried again once the failure is 30 s old (a backend's blip).
    env.clock.now += 29.9
    with pytest.raises(PluginFailed):
        await env.directory.runtime("bad")
    assert Broken.attempts == 1
    env.clock.now += 0.1
    with pytest.raises(PluginFailed):
        await env.directory.runtime("bad")
    assert Broken.attempts == 2
    # A new version is tried again at once.
    await env.put("bad", retriever={"use": "tracked"})
    assert isinstance((await env.directory.runtime("bad")).retriever, Tracked)


@pytest.mark.anyio
async def test_an_unknown_plugin_or_bad_config_is_a_plugin_failure(env: Env) -> None:
    await env.put("a", retriever={"use": "nope"})
    with pytest.raises(PluginFailed, match="tenant 'a': no Retriever plugin named 'nope'"):
        await env.directory.runtime("a")
    await env.put("b", retriever={"use": "tracked", "config": {"candidates": "many"}})
    with pytest.raises(PluginFailed, match="candidates"):
        await env.directory.runtime("b")
    await env.put("c", retrieval={"fusion": "magic"})
    with pytest.raises(PluginFailed, match="fusion"):
        await env.directory.runtime("c")


@pytest.mark.anyio
async def test_a_plugin_failing_to_start_closes_what_was_built(env: Env) -> None:
    await env.put(
        "acme",
        retriever={"use": "tracked"},
        policies=[{"use": "group"}, {"use": "fails-to-start"}],
    )
    before = failures("acme", "fails-to-start")
    with pytest.raises(PluginFailed, match="failed to start"):
        await env.directory.runtime("acme")
    [retriever] = Tracked.built
    assert retriever.closed
    assert failures("acme", "fails-to-start") == before + 1


@pytest.mark.anyio
async def test_a_plugin_not_allowed_any_more_fails_at_build(tmp_path: Path) -> None:
    env = await make_env(tmp_path, tenants={"allowed_plugins": ["group"]})
    try:
        await env.store.inner.put_tenant(
            "acme", {"id": "acme", "retriever": {"use": "tracked"}}, "s"
        )
        with pytest.raises(PluginFailed, match="'tracked' is not allowed"):
            await env.directory.runtime("acme")
    finally:
        await env.base.store.aclose()  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_an_invalid_stored_record_is_a_plugin_failure(env: Env) -> None:
    await env.put("acme", retrieval={"top_k": 0})
    with pytest.raises(PluginFailed, match=r"tenant 'acme'.*top_k"):
        await env.directory.runtime("acme")


@pytest.mark.anyio
async def test_secret_references_are_resolved_when_built(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RT_TEST_ACME_KEY", "sk-acme")
    await env.put(
        "acme", chat_model={"use": "prompted", "config": {"api_key": "${env:RT_TEST_ACME_KEY}"}}
    )
    rt = await env.directory.runtime("acme")
    assert isinstance(rt.chat_model, Prompted) and rt.chat_model.config.api_key == "sk-acme"
    stored = await env.store.inner.get_tenant("acme")
    assert stored is not None
    assert stored.config["chat_model"]["config"]["api_key"] == "${env:RT_TEST_ACME_KEY}"

    monkeypatch.delenv("RT_TEST_BETA_KEY", raising=False)
    await env.put(
        "beta", chat_model={"use": "prompted", "config": {"api_key": "${env:RT_TEST_BETA_KEY}"}}
    )
    with pytest.raises(PluginFailed) as info:
        await env.directory.runtime("beta")
    assert "${env:RT_TEST_BETA_KEY}" in info.value.message


@pytest.mark.anyio
async def test_aclose_closes_every_tenant_component(env: Env) -> None:
    await env.put("a", retriever={"use": "tracked"}, policies=[{"use": "group"}])
    await env.put("b", retriever={"use": "tracked"})
    ra = await env.directory.runtime("a")
    await env.directory.runtime("b")
    await env.directory.aclose()
    assert [t.closed for t in Tracked.built] == [True, True]
    [(_, policy)] = ra.policies
    assert isinstance(policy, Group) and policy.closed


# --- namespaces --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_open_builds_the_key_from_the_principals_tenant(env: Env) -> None:
    opened = await env.directory.open(env.base, principal("acme"), "docs", "search")
    assert opened.key == "acme/docs" and opened.name == "docs"
    assert opened.filter == Filter()
    with pytest.raises(InvalidNamespace):
        await env.directory.open(env.base, principal("acme"), "../beta/docs", "search")


@pytest.mark.anyio
async def test_a_namespace_the_key_may_not_use_is_not_found_without_a_hint(env: Env) -> None:
    await env.put("acme", policies=[{"use": "deny", "config": {"reason": "policy ran"}}])
    rt = await env.directory.runtime("acme")
    limited = principal("acme", {"docs"})
    with pytest.raises(NamespaceNotFound) as info:
        await env.directory.open(rt, limited, "secret", "read")
    assert info.value.message == NamespaceNotFound("secret").message
    assert type(info.value) is NamespaceNotFound
    # The permitted one reaches the policies (which deny here).
    with pytest.raises(PermissionDenied, match="policy ran"):
        await env.directory.open(rt, limited, "docs", "read")


@pytest.mark.anyio
async def test_open_combines_the_tenants_policies(env: Env) -> None:
    await env.put(
        "acme",
        policies=[
            {"use": "group", "config": {"value": "eng"}},
            {"use": "group", "config": {"field": "level", "value": "1"}},
        ],
    )
    rt = await env.directory.runtime("acme")
    assert [name for name, _ in rt.policies] == ["group", "group"]
    opened = await env.directory.open(rt, principal("acme"), "docs", "search")
    assert opened.filter == Filter.any_of("group", ["eng"]) & Filter.any_of("level", ["1"])


@pytest.mark.anyio
async def test_a_raising_policy_fails_closed_and_is_counted(env: Env) -> None:
    await env.put("acme", policies=[{"use": "group"}, {"use": "exploding"}])
    rt = await env.directory.runtime("acme")
    before = failures("acme", "policy")
    with pytest.raises(PluginFailed, match="'exploding'"):
        await env.directory.open(rt, principal("acme"), "docs", "search")
    assert failures("acme", "policy") == before + 1


# --- quotas ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_quotas_merge_the_records_overrides(env: Env) -> None:
    defaults = env.base.settings.tenants.quotas
    assert await env.directory.quotas("nobody") == defaults
    await env.put("plain")
    assert await env.directory.quotas("plain") == defaults
    await env.put("acme", quotas={"documents": 5, "search_per_second": 0, "keys": None})
    quotas = await env.directory.quotas("acme")
    assert quotas.documents == 5 and quotas.search_per_second == 0
    assert quotas.keys == defaults.keys and quotas.chat_per_second == defaults.chat_per_second
    assert defaults.documents == 0  # the defaults were not changed


@pytest.mark.anyio
async def test_admit_takes_from_the_tenants_route_bucket(env: Env) -> None:
    await env.put("acme", quotas={"search_per_second": 3, "chat_per_second": 0.2})
    await env.directory.admit(principal("acme"), "search")
    await env.directory.admit(principal("acme"), "chat", cost=2)
    await env.directory.admit(principal("beta"), "write", cost=40)
    defaults = env.base.settings.tenants.quotas
    assert env.limiter.checks == [
        ("rate:acme:search", 1, 3.0, math.ceil(3 * defaults.burst_seconds)),
        ("rate:acme:chat", 2, 0.2, 2),  # the burst is at least 1 and at least the cost
        ("rate:beta:write", 40, defaults.write_per_second, 40),
    ]


@pytest.mark.anyio
async def test_a_zero_rate_is_unlimited(env: Env) -> None:
    await env.put("acme", quotas={"search_per_second": 0})
    env.limiter.decision = RateDecision(False, 0, 9.0)
    await env.directory.admit(principal("acme"), "search", cost=1000)
    assert env.limiter.checks == []


@pytest.mark.anyio
async def test_a_refusal_is_rate_limited_with_retry_after(env: Env) -> None:
    env.limiter.decision = RateDecision(False, 0, 1.25)
    with pytest.raises(RateLimited) as info:
        await env.directory.admit(principal("acme"), "write")
    assert info.value.retry_after == 1.25
    assert "write" in info.value.message and "1.2s" in info.value.message


@pytest.mark.anyio
async def test_a_limiter_that_is_down_fails_open_or_closed(tmp_path: Path) -> None:
    env = await make_env(tmp_path)
    env.limiter.down = True
    try:
        await env.directory.admit(principal("acme"), "search")  # fail_open by default
        closed = await make_env(tmp_path / "c", rate_limit={"enabled": True, "fail_open": False})
        closed.limiter.down = True
        with pytest.raises(BackendUnavailable):
            await closed.directory.admit(principal("acme"), "search")
        await closed.base.store.aclose()  # type: ignore[attr-defined]
    finally:
        await env.base.store.aclose()  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_admit_without_a_limiter_admits(tmp_path: Path) -> None:
    env = await make_env(tmp_path)
    directory = TenantDirectory(
        dataclasses.replace(env.base, limiter=None),
        env.store,
        registry(),
    )
    try:
        for _ in range(100):
            await directory.admit(principal("acme"), "write", cost=10)
        await directory.check_daily("acme")
        await directory.count_daily("acme", "chat_turns", 5)
        assert await directory.today("acme") == {"chat_turns": 0, "llm_tokens": 0}
    finally:
        await env.base.store.aclose()  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_buckets_are_per_tenant_and_route_with_a_real_limiter(env: Env) -> None:
    clock = Clock()
    limiter = InMemoryRateLimiter(InMemoryRateLimiter.Config(), clock=clock)
    directory = TenantDirectory(
        dataclasses.replace(env.base, limiter=limiter),
        env.store,
        registry(),
        clock=env.clock,
    )
    await env.put("acme", quotas={"search_per_second": 1, "keys": None})
    # burst = ceil(1 * 2.0) = 2
    await directory.admit(principal("acme"), "search")
    await directory.admit(principal("acme"), "search")
    with pytest.raises(RateLimited):
        await directory.admit(principal("acme"), "search")
    await directory.admit(principal("acme"), "chat")  # another route
    await directory.admit(principal("beta"), "search")  # another tenant
    clock.now += 1.0
    await directory.admit(principal("acme"), "search")


@pytest.mark.anyio
async def test_daily_counts_and_limits(env: Env) -> None:
    await env.put("acme", quotas={"chat_turns_per_day": 2, "llm_tokens_per_day": 100})
    await env.directory.check_daily("acme")
    await env.directory.count_daily("acme", "chat_turns", 1)
    await env.directory.count_daily("acme", "llm_tokens", 60)
    await env.directory.count_daily("acme", "llm_tokens", 0)  # nothing to count: no call
    assert [a[:2] for a in env.limiter.adds if a[1]] == [
        (f"day:acme:chat_turns:{TODAY}", 1),
        (f"day:acme:llm_tokens:{TODAY}", 60),
    ]
    assert all(ttl == 86_400 + 3600 for _, _, ttl in env.limiter.adds)
    assert await env.directory.today("acme") == {"chat_turns": 1, "llm_tokens": 60}
    await env.directory.check_daily("acme")
    await env.directory.count_daily("acme", "chat_turns", 1)
    with pytest.raises(QuotaExceeded) as info:
        await env.directory.check_daily("acme")
    assert "chat turns per day (2)" in info.value.message
    assert 0 < info.value.retry_after <= 86_400
    # Another tenant's counters are its own.
    await env.put("beta", quotas={"chat_turns_per_day": 2})
    await env.directory.check_daily("beta")


@pytest.mark.anyio
async def test_tokens_per_day_limit(env: Env) -> None:
    await env.put("acme", quotas={"llm_tokens_per_day": 100})
    await env.directory.count_daily("acme", "llm_tokens", 100)
    with pytest.raises(QuotaExceeded, match="llm tokens per day"):
        await env.directory.check_daily("acme")


@pytest.mark.anyio
async def test_zero_daily_limits_are_unlimited_and_not_read(env: Env) -> None:
    await env.directory.count_daily("acme", "chat_turns", 10_000)
    adds = len(env.limiter.adds)
    await env.directory.check_daily("acme")  # defaults are 0: unlimited
    assert len(env.limiter.adds) == adds


@pytest.mark.anyio
async def test_daily_counters_fail_open(env: Env) -> None:
    await env.put("acme", quotas={"chat_turns_per_day": 1})
    await env.directory.count_daily("acme", "chat_turns", 5)
    env.limiter.down = True
    await env.directory.check_daily("acme")
    await env.directory.count_daily("acme", "chat_turns", 1)  # logged, not raised
    env.limiter.down = False
    assert env.limiter.counters[f"day:acme:chat_turns:{TODAY}"] == 5


async def _put_docs(store: Any, namespace: str, texts: list[str]) -> None:
    vectors = np.ones((len(texts), 8), np.float32) / math.sqrt(8)
    doc = make_document(f"d{len(texts)}-{texts[0][:3]}")
    await store.put_document(namespace, doc, make_chunks(doc.id, texts), vectors, "e")


@pytest.mark.anyio
async def test_budget(env: Env) -> None:
    assert await env.directory.budget("acme") is None  # no documents or bytes quota
    await _put_docs(env.store.inner, "acme/docs", ["abcde"])
    await _put_docs(env.store.inner, "acme/kb", ["xyz", "pq"])
    await _put_docs(env.store.inner, "beta/docs", ["b" * 50])
    await env.put("acme", quotas={"documents": 5})
    budget = await env.directory.budget("acme")
    assert budget is not None and (budget.documents, budget.bytes) == (3, None)
    await env.put("acme", quotas={"stored_bytes": 8})
    budget = await env.directory.budget("acme")
    assert budget is not None and (budget.documents, budget.bytes) == (None, 0)
    await env.put("acme", quotas={"documents": 1, "stored_bytes": 100})
    budget = await env.directory.budget("acme")
    assert budget is not None and (budget.documents, budget.bytes) == (0, 90)


@pytest.mark.anyio
async def test_check_storage(env: Env) -> None:
    await _put_docs(env.store.inner, "acme/docs", ["abcde"])
    await env.put("acme", quotas={"namespaces": 2, "documents": 3, "stored_bytes": 10})
    d = env.directory
    await d.check_storage("acme", new_namespace=True, documents=2, bytes_=5)
    await _put_docs(env.store.inner, "acme/kb", ["x"])
    with pytest.raises(QuotaExceeded, match="at most 2 namespaces") as info:
        await d.check_storage("acme", new_namespace=True)
    assert info.value.retry_after == 3600
    await d.check_storage("acme", documents=1)
    with pytest.raises(QuotaExceeded, match="at most 3 documents"):
        await d.check_storage("acme", documents=2)
    await d.check_storage("acme", bytes_=4)
    with pytest.raises(QuotaExceeded, match="at most 10 stored bytes"):
        await d.check_storage("acme", bytes_=5)
    # 0 is unlimited; another tenant's usage is not acme's.
    await env.put("acme", quotas={"namespaces": 0, "documents": 0, "stored_bytes": 0})
    await d.check_storage("acme", new_namespace=True, documents=10**6, bytes_=10**9)
    await env.put("beta", quotas={"namespaces": 1})
    await d.check_storage("beta", new_namespace=True)


@pytest.mark.anyio
async def test_dropping_the_overrides_closes_the_old_components(env: Env) -> None:
    await env.put("acme", retriever={"use": "tracked"})
    await env.directory.runtime("acme")
    await env.put("acme", name="plain again")
    assert await env.directory.runtime("acme") is env.base
    [old] = Tracked.built
    assert old.closed
