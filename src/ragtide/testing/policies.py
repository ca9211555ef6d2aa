"""The contract every ``AccessPolicy`` plugin must pass.

A policy's test class inherits ``AccessPolicyContract`` and provides a ``policy``
fixture; the suite then asks it about every action for every kind of principal::

    class TestGroupPolicy(AccessPolicyContract):
        group_sets = (*AccessPolicyContract.group_sets, frozenset({"legal"}))

        @pytest.fixture
        def policy(self) -> GroupPolicy:
            return GroupPolicy(GroupPolicy.Config())

Hooks a subclass may override: ``make_context`` (how a request looks to the policy),
``group_sets`` (the groups to try: add the ones the policy looks at), and ``narrows`` /
``must_narrow(ctx)`` (whether an allow must carry a non-empty filter).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import ClassVar, Literal, get_args, get_type_hints

import pytest

from ragtide.access import AccessPolicy, Decision, RequestContext, authorize
from ragtide.errors import PermissionDenied
from ragtide.types import Action, Filter, Principal

__all__ = ["AccessPolicyContract"]

ACTIONS: tuple[Action, ...] = get_args(Action)
PrincipalKind = Literal["key", "jwt", "admin", "anonymous"]
# Read from ``Principal`` itself, so a kind added there is tried here too.
KINDS: tuple[PrincipalKind, ...] = get_args(get_type_hints(Principal)["kind"])
_SCOPE_FOR: dict[str, str] = {"write": "write", "delete": "write", "admin": "admin"}


def is_at_least_as_narrow(narrow: Filter, wide: Filter) -> bool:
    """True when every document ``narrow`` admits is admitted by ``wide`` too.

    A conservative, structural test: each condition of ``wide`` must be implied by a
    condition of ``narrow`` on the same field whose values are a subset of its values.
    """
    return all(
        any(c.field == w.field and c.values <= w.values for c in narrow.conditions)
        for w in wide.conditions
    )


class _AllowAll:
    async def check(self, ctx: RequestContext) -> Decision:
        return Decision.allow()


class _OnlyPublished:
    async def check(self, ctx: RequestContext) -> Decision:
        return Decision.allow(Filter.any_of("status", ["published"]))


class AccessPolicyContract:
    """Needs a ``policy`` fixture returning the ``AccessPolicy`` under test."""

    # The name the suite gives the policy when it runs it through ``authorize``.
    policy_name: ClassVar[str] = "under-test"
    # True when every allow must narrow (a non-empty filter); see ``must_narrow``.
    narrows: ClassVar[bool] = True
    # Group memberships to try, crossed with every principal kind and action.
    group_sets: ClassVar[tuple[frozenset[str], ...]] = (
        frozenset(),
        frozenset({"staff"}),
        frozenset({"staff", "legal"}),
        frozenset({"", "a:b", "ünïcode ✓", "x" * 300}),
    )

    def must_narrow(self, ctx: RequestContext) -> bool:
        """Whether an allow for ``ctx`` must carry a non-empty filter."""
        return self.narrows

    def make_context(
        self,
        *,
        kind: PrincipalKind = "jwt",
        groups: frozenset[str] = frozenset(),
        action: Action = "search",
        tenant: str = "acme",
        namespace: str = "docs",
    ) -> RequestContext:
        """A request as the edge would build it; override to add what the policy reads."""
        scopes = frozenset({"read", _SCOPE_FOR.get(action, "read")})
        principal = Principal(
            tenant=tenant,
            subject="anonymous" if kind == "anonymous" else f"{kind}:someone",
            scopes=frozenset() if kind == "anonymous" else scopes,
            kind=kind,
            key_id="k1" if kind == "key" else None,
            groups=groups,
        )
        return RequestContext(principal=principal, action=action, namespace=namespace)

    def contexts(self) -> list[RequestContext]:
        """Every principal kind x every action x every group set."""
        return [
            self.make_context(kind=kind, groups=groups, action=action)
            for kind in KINDS
            for action in ACTIONS
            for groups in self.group_sets
        ]

    async def _decide(self, policy: AccessPolicy, ctx: RequestContext) -> Decision:
        try:
            return await policy.check(ctx)
        except Exception as exc:  # the contract's own finding: name the input
            pytest.fail(f"check() raised {type(exc).__name__}: {exc} for {ctx!r}")

    @pytest.mark.anyio
    async def test_is_an_access_policy(self, policy: AccessPolicy) -> None:
        assert isinstance(policy, AccessPolicy)

    @pytest.mark.anyio
    async def test_decides_every_action_for_every_principal_kind(
        self, policy: AccessPolicy
    ) -> None:
        for ctx in self.contexts():
            decision = await self._decide(policy, ctx)
            assert isinstance(decision, Decision), ctx
            assert decision.verdict in ("allow", "deny", "abstain"), (decision, ctx)
            assert isinstance(decision.filter, Filter), (decision, ctx)
            if decision.verdict == "deny":
                assert decision.reason.strip(), f"a deny without a reason for {ctx!r}"

    @pytest.mark.anyio
    async def test_never_raises_for_ordinary_input(self, policy: AccessPolicy) -> None:
        odd = [
            self.make_context(kind=kind, groups=groups, action=action, namespace=ns)
            for kind in KINDS
            for action in ("search", "write")
            for groups in (frozenset(), frozenset(f"g{i}" for i in range(500)))
            for ns in ("default", "a.b_c-1", "x" * 63)
        ]
        for ctx in odd:
            assert isinstance(await self._decide(policy, ctx), Decision)

    @pytest.mark.anyio
    async def test_an_allow_narrows_when_it_should(self, policy: AccessPolicy) -> None:
        for ctx in self.contexts():
            decision = await self._decide(policy, ctx)
            if decision.verdict == "allow" and self.must_narrow(ctx):
                assert decision.filter, f"an allow with an empty filter for {ctx!r}"
                for condition in decision.filter.conditions:
                    assert condition.field, f"a condition without a field for {ctx!r}"

    @pytest.mark.anyio
    async def test_is_deterministic(self, policy: AccessPolicy) -> None:
        contexts = self.contexts()
        first = [await self._decide(policy, ctx) for ctx in contexts]
        again = [await self._decide(policy, ctx) for ctx in contexts]
        together = await asyncio.gather(*(policy.check(ctx) for ctx in contexts))
        for ctx, a, b, c in zip(contexts, first, again, together, strict=True):
            assert a == b == c, ctx

    @pytest.mark.anyio
    async def test_authorize_never_widens_the_policy(self, policy: AccessPolicy) -> None:
        name = self.policy_name
        stacks: list[Sequence[tuple[str, AccessPolicy]]] = [
            [(name, policy)],
            [("allow-all", _AllowAll()), (name, policy)],
            [(name, policy), ("only-published", _OnlyPublished())],
        ]
        for ctx in self.contexts():
            own = await self._decide(policy, ctx)
            for stack in stacks:
                if own.verdict == "deny":
                    with pytest.raises(PermissionDenied):
                        await authorize(stack, ctx)
                    continue
                combined = await authorize(stack, ctx)
                assert is_at_least_as_narrow(combined, own.filter), (ctx, combined, own)
