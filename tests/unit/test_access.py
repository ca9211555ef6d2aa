"""authorize(): how the core combines access policies (deny wins, allows narrow, fail closed)."""

from __future__ import annotations

from typing import Any

import pytest

from ragtide.access import AccessPolicy, Decision, RequestContext, authorize
from ragtide.errors import NamespaceNotFound, PermissionDenied, PluginFailed
from ragtide.types import Filter, Principal

CTX = RequestContext(Principal("acme", "key:k1", frozenset({"read"})), "search", "docs")


class Fixed:
    def __init__(self, decision: Any) -> None:
        self.decision = decision
        self.seen: list[RequestContext] = []

    async def check(self, ctx: RequestContext) -> Decision:
        self.seen.append(ctx)
        return self.decision  # type: ignore[no-any-return]


class Raising:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def check(self, ctx: RequestContext) -> Decision:
        raise self.exc


def allow(field: str, *values: str) -> Fixed:
    return Fixed(Decision.allow(Filter.any_of(field, values)))


async def run(*policies: AccessPolicy) -> Filter:
    return await authorize([(f"p{i}", p) for i, p in enumerate(policies)], CTX)


def test_context_and_decisions() -> None:
    assert CTX.tenant == "acme"
    assert Decision.allow() == Decision("allow", Filter(), "")
    assert Decision.deny("no") == Decision("deny", Filter(), "no")
    assert Decision.abstain().verdict == "abstain"
    assert isinstance(Fixed(None), AccessPolicy)


@pytest.mark.anyio
async def test_no_policies_is_the_empty_filter() -> None:
    assert await authorize([], CTX) == Filter()


@pytest.mark.anyio
async def test_every_policy_sees_the_context() -> None:
    a, b = Fixed(Decision.abstain()), Fixed(Decision.allow())
    await run(a, b)
    assert a.seen == [CTX] and b.seen == [CTX]


@pytest.mark.anyio
async def test_allow_filters_are_anded_in_order() -> None:
    got = await run(allow("group", "a", "b"), Fixed(Decision.abstain()), allow("level", "1"))
    assert got == Filter.any_of("group", ["a", "b"]) & Filter.any_of("level", ["1"])
    assert got.matches("d", {"group": "a", "level": "1"})
    assert not got.matches("d", {"group": "a", "level": "2"})
    assert not got.matches("d", {"group": "c", "level": "1"})


@pytest.mark.anyio
async def test_abstentions_are_ignored() -> None:
    assert await run(Fixed(Decision.abstain()), Fixed(Decision.abstain())) == Filter()
    assert await run(Fixed(Decision.abstain()), allow("g", "x")) == Filter.any_of("g", ["x"])


@pytest.mark.anyio
async def test_an_unfiltered_allow_does_not_widen_another() -> None:
    assert await run(allow("g", "x"), Fixed(Decision.allow())) == Filter.any_of("g", ["x"])


@pytest.mark.anyio
async def test_deny_wins_whatever_the_order_and_keeps_its_reason() -> None:
    for policies in (
        (allow("g", "x"), Fixed(Decision.deny("outside office hours"))),
        (Fixed(Decision.deny("outside office hours")), allow("g", "x")),
    ):
        with pytest.raises(PermissionDenied) as info:
            await run(*policies)
        assert info.value.message == "outside office hours"


@pytest.mark.anyio
async def test_a_deny_without_reason_names_the_policy() -> None:
    with pytest.raises(PermissionDenied) as info:
        await authorize([("office-hours", Fixed(Decision("deny")))], CTX)
    assert "office-hours" in info.value.message


@pytest.mark.anyio
async def test_a_deny_stops_before_later_policies() -> None:
    later = Fixed(Decision.allow())
    with pytest.raises(PermissionDenied):
        await run(Fixed(Decision.deny("no")), later)
    assert later.seen == []


@pytest.mark.anyio
async def test_a_raising_policy_fails_closed_naming_it() -> None:
    with pytest.raises(PluginFailed) as info:
        await authorize(
            [("ok", Fixed(Decision.allow())), ("opa", Raising(KeyError("groups")))], CTX
        )
    assert "'opa'" in info.value.message and "KeyError" in info.value.message
    assert isinstance(info.value.__cause__, KeyError)
    assert "groups" not in info.value.message  # the exception's text is not shown


@pytest.mark.anyio
@pytest.mark.parametrize("returned", [None, True, "allow", {"verdict": "allow"}, Filter()])
async def test_a_non_decision_is_a_plugin_failure(returned: Any) -> None:
    with pytest.raises(PluginFailed) as info:
        await authorize([("weird", Fixed(returned))], CTX)
    assert "'weird'" in info.value.message
    assert type(returned).__name__ in info.value.message


@pytest.mark.anyio
@pytest.mark.parametrize("exc", [PermissionDenied("nope"), NamespaceNotFound("docs")])
async def test_a_ragtide_error_from_a_policy_propagates_as_is(exc: Exception) -> None:
    with pytest.raises(type(exc)) as info:
        await run(Fixed(Decision.allow()), Raising(exc))
    assert info.value is exc


@pytest.mark.anyio
async def test_an_unknown_verdict_fails_closed() -> None:
    with pytest.raises((PluginFailed, PermissionDenied)):
        await run(Fixed(Decision("Deny", reason="typo")))  # type: ignore[arg-type]
