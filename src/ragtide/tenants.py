"""Tenants in the core: their records, their runtimes, their namespaces and their quotas.

``TenantDirectory`` is the one place a request's tenant turns into what answers it:

- ``record(tenant)``: the stored record, cached per replica for ``tenants.cache_seconds``
  (so a change or deletion reaches every replica within that time);
- ``runtime(tenant)``: the process ``Runtime`` with the tenant's overrides (retriever,
  chat model, intent, top_k, system prompt, policies), built lazily on first use, cached
  per record version and rebuilt when the record changes. A tenant without overrides
  shares the process runtime. A plugin that fails to build fails that tenant only
  (``PluginFailed``) and is counted;
- ``open(principal, namespace, action)``: the store key of a namespace *within the
  caller's tenant* plus the access filter its policies allow. A namespace the credential
  may not use is "not found", exactly like one that does not exist;
- quotas: request rates by route class, chat turns and LLM tokens per day, documents,
  stored bytes, namespaces and keys, counted by the runtime's ``RateLimiter`` (Redis in
  production, so they hold across replicas).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from ragtide.access import AccessPolicy, RequestContext, authorize
from ragtide.components import ChatModel, IntentDetector, Retriever, TenantStore
from ragtide.errors import (
    BackendUnavailable,
    ConfigError,
    InvalidRequest,
    NamespaceNotFound,
    PluginFailed,
    QuotaExceeded,
    RagtideError,
    RateLimited,
)
from ragtide.ingest.pipeline import Budget
from ragtide.observability import PLUGIN_FAILURES, RATE_LIMITED, TENANT_REJECTIONS, tenant_label
from ragtide.registry import Registry
from ragtide.runtime import Runtime
from ragtide.settings import ComponentSpec, QuotaSettings
from ragtide.tenant_config import TenantConfig, resolve_secrets
from ragtide.tools import ToolCallingModel
from ragtide.tools.base import Tool
from ragtide.types import (
    DEFAULT_TENANT,
    Action,
    Filter,
    NamespaceKey,
    Principal,
    TenantRecord,
    namespace_key,
    validate_namespace,
)

__all__ = ["Opened", "RouteClass", "TenantDirectory", "parse_tenant_config"]

logger = logging.getLogger(__name__)

RouteClass = Literal["search", "chat", "write"]
_DAY = 86_400


@dataclass(frozen=True, slots=True)
class Opened:
    """A namespace as the core uses it: the store key and the caller's access filter."""

    key: NamespaceKey
    name: str
    filter: Filter


def parse_tenant_config(data: Mapping[str, Any], *, where: str = "tenant") -> TenantConfig:
    """Validate a tenant record; errors name ``where`` and every bad field."""
    try:
        return TenantConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidRequest(f"{where}: {problems}") from None


_RETRY_FAILED_S = 30.0  # a tenant whose plugin failed is tried again after this long


@dataclass(slots=True)
class _Built:
    version: int
    runtime: Runtime | None = None
    owned: tuple[Any, ...] = ()
    error: RagtideError | None = None
    at: float = 0.0


class TenantDirectory:
    def __init__(
        self,
        base: Runtime,
        store: TenantStore,
        registry: Registry,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base = base
        self.store = store
        self._registry = registry
        self._settings = base.settings.tenants
        self._clock = clock
        self._records: dict[str, tuple[TenantRecord | None, float]] = {}
        self._built: dict[str, _Built] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # --- records ---------------------------------------------------------------------

    async def record(self, tenant: str) -> TenantRecord | None:
        now = self._clock()
        cached = self._records.get(tenant)
        if cached is not None and now - cached[1] < self._settings.cache_seconds:
            return cached[0]
        record = await self.store.get_tenant(tenant)
        if len(self._records) > 10_000:
            self._records.clear()
        self._records[tenant] = (record, now)
        return record

    async def exists(self, tenant: str) -> bool:
        """The default tenant always exists; others when they have a record."""
        if tenant == DEFAULT_TENANT:
            return True
        record = await self.record(tenant)
        return record is not None and not record.config.get("disabled", False)

    def forget(self, tenant: str) -> None:
        """Drop this replica's cached record (after a change made through this replica)."""
        self._records.pop(tenant, None)

    async def put(self, config: TenantConfig) -> tuple[TenantRecord, bool]:
        self.check_plugins(config)
        data = config.model_dump(mode="json", exclude_defaults=True)
        data["id"] = config.id
        record, created = await self.store.put_tenant(config.id, data, secrets.token_urlsafe(32))
        self.forget(config.id)
        return record, created

    def check_plugins(self, config: TenantConfig) -> None:
        """Every plugin a tenant names must be installed and allowed."""
        allowed = self._settings.allowed_plugins
        for name in config.plugin_names():
            if allowed is not None and name not in allowed:
                raise InvalidRequest(
                    f"plugin {name!r} is not allowed for tenants (tenants.allowed_plugins)"
                )
        unknown = sorted(set(config.tools) - set(self._registry.names(Tool)))
        if unknown:
            known = ", ".join(self._registry.names(Tool)) or "none"
            raise InvalidRequest(f"tools: no tool named {unknown[0]!r} (installed: {known})")

    # --- runtimes --------------------------------------------------------------------

    async def runtime(self, tenant: str) -> Runtime:
        """The runtime that answers ``tenant``'s requests (raises ``PluginFailed``)."""
        record = await self.record(tenant)
        if record is None or not _has_overrides(record.config):
            stale = self._built.pop(tenant, None)
            if stale is not None:  # the overrides are gone: release their components
                await _close(stale.owned)
            return self.base
        built = self._built.get(tenant)
        if built is None or self._stale(built, record.version):
            lock = self._locks.setdefault(tenant, asyncio.Lock())
            async with lock:
                built = self._built.get(tenant)
                if built is None or self._stale(built, record.version):
                    built = await self._build(record)
                    old = self._built.get(tenant)
                    self._built[tenant] = built
                    if old is not None:
                        await _close(old.owned)
        if built.error is not None:
            raise built.error
        assert built.runtime is not None
        return built.runtime

    def _stale(self, built: _Built, version: int) -> bool:
        """Rebuild on a new record version, or when a failure is old enough to retry (a
        plugin's backend may have been down only for a moment)."""
        if built.version != version:
            return True
        return built.error is not None and self._clock() - built.at >= _RETRY_FAILED_S

    async def _build(self, record: TenantRecord) -> _Built:
        base, registry = self.base, self._registry
        owned: list[Any] = []
        plugin = "?"
        try:
            config = parse_tenant_config(record.config, where=f"tenant {record.id!r}")
            self.check_plugins(config)
            settings = base.settings
            if config.retrieval.top_k is not None:
                retrieval = settings.retrieval.model_copy(update={"top_k": config.retrieval.top_k})
                settings = settings.model_copy(update={"retrieval": retrieval})
            if config.chat_overrides():
                chat = settings.chat.model_copy(update=config.chat_overrides())
                settings = settings.model_copy(update={"chat": chat})
            tools: list[Tool] = []
            for name in config.tools:
                plugin = name
                tools.append(registry.build(Tool, ComponentSpec(use=name)))
            retriever, intent, chat_model = base.retriever, base.intent, base.chat_model
            names = dict(base.names)
            spec = self._retriever_spec(config)
            if spec is not None:
                plugin = spec.use
                retriever = registry.build(Retriever, _resolved(spec), store=base.store)
                owned.append(retriever)
                names["retriever"] = spec.use
            if config.intent is not None:
                plugin = config.intent.use
                intent = registry.build(IntentDetector, _resolved(config.intent))
                owned.append(intent)
                names["intent"] = config.intent.use
            spec = self._chat_spec(config)
            if spec is not None:
                plugin = spec.use
                chat_model = registry.build(ChatModel, _resolved(spec))
                owned.append(chat_model)
                names["chat_model"] = spec.use
            if tools and not isinstance(chat_model, ToolCallingModel):
                logger.warning(  # not an error: the tenant may switch its chat model later
                    "tenant tools unused: its chat model cannot call tools",
                    extra={"tenant": record.id, "chat_model": names["chat_model"]},
                )
            policies: list[tuple[str, AccessPolicy]] = []
            for policy_spec in config.policies:
                plugin = policy_spec.use
                policies.append(
                    (policy_spec.use, registry.build(AccessPolicy, _resolved(policy_spec)))
                )
            owned.extend(p for _, p in policies)
            for component in owned:
                start = getattr(component, "start", None)
                if start is not None:
                    await start()
        except (ConfigError, InvalidRequest) as exc:
            await _close(owned)
            PLUGIN_FAILURES.labels(tenant_label(record.id), plugin).inc()
            logger.error(
                "tenant runtime failed",
                extra={"tenant": record.id, "plugin": plugin, "reason": exc.message},
            )
            error = PluginFailed(f"tenant {record.id!r}: {exc.message}")
            return _Built(record.version, error=error, at=self._clock())
        except Exception as exc:  # a third-party plugin's own failure while starting
            await _close(owned)
            PLUGIN_FAILURES.labels(tenant_label(record.id), plugin).inc()
            logger.error(
                "tenant runtime failed",
                extra={"tenant": record.id, "plugin": plugin, "reason": type(exc).__name__},
            )
            error = PluginFailed(f"tenant {record.id!r}: plugin {plugin!r} failed to start")
            return _Built(record.version, error=error, at=self._clock())
        shaping = json.dumps(
            {"base": base.fingerprint, "tenant": record.config}, sort_keys=True, default=str
        )
        runtime = dataclasses.replace(
            base,
            settings=settings,
            retriever=retriever,
            intent=intent,
            chat_model=chat_model,
            policies=tuple(policies),
            tools=tuple(tools),
            names=names,
            fingerprint=hashlib.sha256(shaping.encode()).hexdigest()[:16],
        )
        logger.info("tenant runtime built", extra={"tenant": record.id, **names})
        return _Built(record.version, runtime=runtime, owned=tuple(owned))

    def _retriever_spec(self, config: TenantConfig) -> ComponentSpec | None:
        if config.retriever is not None:
            return config.retriever
        overrides = config.retrieval.model_dump(exclude_none=True, exclude={"top_k"})
        if not overrides:
            return None
        base = self.base.settings.retriever
        return ComponentSpec(use=base.use, config={**base.config, **overrides})

    def _chat_spec(self, config: TenantConfig) -> ComponentSpec | None:
        spec = config.chat_model
        if config.system_prompt is None:
            return spec
        spec = spec or self.base.settings.chat_model
        if "system_prompt" not in self._registry.config_fields(ChatModel, spec.use):
            raise InvalidRequest(
                f"system_prompt: the chat model {spec.use!r} takes no system prompt"
            )
        return ComponentSpec(
            use=spec.use, config={**spec.config, "system_prompt": config.system_prompt}
        )

    async def aclose(self) -> None:
        built, self._built = self._built, {}
        for b in built.values():
            await _close(b.owned)

    # --- namespaces ------------------------------------------------------------------

    async def open(
        self, rt: Runtime, principal: Principal, namespace: str, action: Action
    ) -> Opened:
        """The namespace ``namespace`` of the caller's tenant, after every access check.

        The tenant comes from the principal (its credential), never from the request.
        """
        if not principal.may_use(validate_namespace(namespace)):
            raise NamespaceNotFound(namespace)  # no hint that it exists
        key = namespace_key(principal.tenant, namespace)
        filter = Filter()
        if rt.policies:
            ctx = RequestContext(principal=principal, action=action, namespace=namespace)
            try:
                filter = await authorize(rt.policies, ctx)
            except PluginFailed:
                PLUGIN_FAILURES.labels(tenant_label(principal.tenant), "policy").inc()
                raise
        return Opened(key, namespace, filter)

    # --- quotas ----------------------------------------------------------------------

    async def quotas(self, tenant: str) -> QuotaSettings:
        record = await self.record(tenant)
        defaults = self._settings.quotas
        if record is None:
            return defaults
        overrides = {k: v for k, v in record.config.get("quotas", {}).items() if v is not None}
        return defaults.model_copy(update=overrides) if overrides else defaults

    async def admit(self, principal: Principal, route: RouteClass, cost: int = 1) -> None:
        """Take ``cost`` requests from the tenant's bucket of ``route``, or raise 429."""
        limiter = self.base.limiter
        if limiter is None:
            return
        quotas = await self.quotas(principal.tenant)
        rate = getattr(quotas, f"{route}_per_second")
        if rate <= 0:
            return
        burst = max(1, math.ceil(rate * quotas.burst_seconds), cost)
        try:
            decision = await limiter.check(
                f"rate:{principal.tenant}:{route}", cost, rate_per_s=rate, burst=burst
            )
        except BackendUnavailable:
            if not self.base.settings.rate_limit.fail_open:
                raise
            RATE_LIMITED.labels("fail_open").inc()
            logger.warning("rate limiter unavailable, admitting")
            return
        if not decision.allowed:
            RATE_LIMITED.labels("refused").inc()
            TENANT_REJECTIONS.labels(tenant_label(principal.tenant), "rate_limited").inc()
            raise RateLimited(
                f"too many {route} requests for this tenant; retry in {decision.retry_after:.1f}s",
                retry_after=decision.retry_after,
            )

    async def count_daily(
        self, tenant: str, what: Literal["chat_turns", "llm_tokens"], amount: int
    ) -> None:
        """Count today's use (after the fact: a turn is counted once it was answered)."""
        limiter = self.base.limiter
        if limiter is None or amount <= 0:
            return
        try:
            await limiter.add(f"day:{tenant}:{what}:{_today()}", amount, _DAY + 3600)
        except BackendUnavailable:
            logger.warning("quota counter unavailable", extra={"tenant": tenant, "quota": what})

    async def today(self, tenant: str) -> dict[str, int]:
        """Today's chat turns and LLM tokens (0 where nothing counts them)."""
        limiter = self.base.limiter
        out = {"chat_turns": 0, "llm_tokens": 0}
        if limiter is None:
            return out
        for what in out:
            out[what] = await limiter.add(f"day:{tenant}:{what}:{_today()}", 0, _DAY + 3600)
        return out

    async def check_daily(self, tenant: str) -> None:
        """Refuse a chat turn when today's turns or tokens are used up."""
        limiter = self.base.limiter
        if limiter is None:
            return
        quotas = await self.quotas(tenant)
        for what, limit in (
            ("chat_turns", quotas.chat_turns_per_day),
            ("llm_tokens", quotas.llm_tokens_per_day),
        ):
            if limit <= 0:
                continue
            try:
                used = await limiter.add(f"day:{tenant}:{what}:{_today()}", 0, _DAY + 3600)
            except BackendUnavailable:
                continue  # fail open, as the rate limiter does
            if used >= limit:
                TENANT_REJECTIONS.labels(tenant_label(tenant), "quota_exceeded").inc()
                raise QuotaExceeded(
                    f"this tenant's {what.replace('_', ' ')} per day ({limit}) are used up",
                    retry_after=_seconds_to_midnight(),
                )

    async def budget(self, tenant: str) -> Budget | None:
        """What the tenant may still add under its documents and bytes quotas."""
        quotas = await self.quotas(tenant)
        if not quotas.documents and not quotas.stored_bytes:
            return None
        usage = await self.store.tenant_usage(tenant)
        return Budget(
            documents=max(0, quotas.documents - usage.documents) if quotas.documents else None,
            bytes=max(0, quotas.stored_bytes - usage.bytes) if quotas.stored_bytes else None,
        )

    async def check_storage(
        self, tenant: str, *, new_namespace: bool = False, documents: int = 0, bytes_: int = 0
    ) -> None:
        """Refuse a write that would take the tenant past a storage quota."""
        quotas = await self.quotas(tenant)
        usage = await self.store.tenant_usage(tenant)
        checks = (
            ("namespaces", quotas.namespaces, usage.namespaces + int(new_namespace)),
            ("documents", quotas.documents, usage.documents + documents),
            ("stored bytes", quotas.stored_bytes, usage.bytes + bytes_),
        )
        for name, limit, wanted in checks:
            if limit and wanted > limit:
                TENANT_REJECTIONS.labels(tenant_label(tenant), "quota_exceeded").inc()
                raise QuotaExceeded(
                    f"this tenant may keep at most {limit} {name}", retry_after=3600
                )


def _has_overrides(config: Mapping[str, Any]) -> bool:
    return (
        any(
            config.get(k)
            for k in ("retrieval", "retriever", "chat_model", "intent", "policies", "tools")
        )
        or config.get("system_prompt") is not None
        or config.get("grounding") is not None
    )


def _resolved(spec: ComponentSpec) -> ComponentSpec:
    return ComponentSpec(use=spec.use, config=resolve_secrets(spec.config))


async def _close(components: tuple[Any, ...] | list[Any]) -> None:
    for component in reversed(list(components)):
        close = getattr(component, "aclose", None)
        if close is not None:
            try:
                await close()
            except Exception:  # closing a failed plugin must not fail the request
                logger.warning("plugin did not close cleanly", exc_info=True)


def _today() -> str:
    return time.strftime("%Y%m%d", time.gmtime())


def _seconds_to_midnight() -> float:
    now = time.time()
    return _DAY - now % _DAY
