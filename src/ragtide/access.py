"""Permission rules: the ``AccessPolicy`` role and how the core combines decisions.

A policy is a plugin (entry-point group ``ragtide.policies``) that a tenant record
turns on. It sees the request's context and answers ``allow`` (with a ``Filter`` that
narrows what the caller may see), ``deny`` (with a reason) or ``abstain``. The core
combines them in ``authorize``:

- any ``deny`` raises ``PermissionDenied`` with that policy's reason;
- every ``allow`` filter is AND-ed together: policies can only narrow, never widen;
- when every policy abstains, access is as the credential's scopes already decided.

Tenant isolation is not a policy: it is the store key (``NamespaceKey``) the core builds
from the credential before any policy runs, so no policy can widen it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from ragtide.errors import PermissionDenied, PluginFailed, RagtideError
from ragtide.types import Action, Filter, Principal

__all__ = ["AccessPolicy", "Decision", "RequestContext", "authorize"]


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What a policy may know about a request."""

    principal: Principal
    action: Action
    namespace: str  # as the tenant names it (not the store key)

    @property
    def tenant(self) -> str:
        return self.principal.tenant


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Literal["allow", "deny", "abstain"]
    filter: Filter = field(default_factory=Filter)
    reason: str = ""

    @classmethod
    def allow(cls, filter: Filter | None = None) -> Decision:
        return cls("allow", filter or Filter())

    @classmethod
    def deny(cls, reason: str) -> Decision:
        return cls("deny", reason=reason)

    @classmethod
    def abstain(cls) -> Decision:
        return cls("abstain")


@runtime_checkable
class AccessPolicy(Protocol):
    """Decide whether a request may proceed, and what it may see if so."""

    async def check(self, ctx: RequestContext) -> Decision: ...


async def authorize(policies: Sequence[tuple[str, AccessPolicy]], ctx: RequestContext) -> Filter:
    """Run every policy; return the combined filter or raise ``PermissionDenied``.

    A policy that fails is a denial of this request (fail closed) reported as
    ``plugin_failed``: a broken rule must never open data up.
    """
    combined = Filter()
    for name, policy in policies:
        try:
            decision = await policy.check(ctx)
        except RagtideError:
            raise
        except Exception as exc:  # a third-party rule failing: deny, and say which one
            raise PluginFailed(f"access policy {name!r} failed: {type(exc).__name__}") from exc
        if not isinstance(decision, Decision):
            raise PluginFailed(f"access policy {name!r} returned {type(decision).__name__}")
        if decision.verdict == "deny":
            raise PermissionDenied(decision.reason or f"denied by access policy {name!r}")
        if decision.verdict == "allow":
            combined = combined & decision.filter
        elif decision.verdict != "abstain":  # a typo must not open data up
            raise PluginFailed(f"access policy {name!r} answered {decision.verdict!r}")
    return combined
