from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from ragtide.access import AccessPolicy, Decision, RequestContext, authorize
from ragtide.builtin.policies import GroupPolicy
from ragtide.builtin.sqlite_store import SQLiteStore
from ragtide.errors import PermissionDenied
from ragtide.registry import Registry
from ragtide.settings import ComponentSpec
from ragtide.testing import AccessPolicyContract
from ragtide.testing.fakes import make_chunks, make_document
from ragtide.testing.policies import PrincipalKind
from ragtide.types import Action, Filter


class TestGroupPolicy(AccessPolicyContract):
    @pytest.fixture
    def policy(self) -> GroupPolicy:
        return GroupPolicy(GroupPolicy.Config())


class TestGroupPolicyForEveryKindWithAPublicGroup(AccessPolicyContract):
    @pytest.fixture
    def policy(self) -> GroupPolicy:
        return GroupPolicy(
            GroupPolicy.Config(
                apply_to=["jwt", "key", "anonymous", "admin"], public_group="everyone"
            )
        )


def _ctx(
    kind: PrincipalKind = "jwt", groups: tuple[str, ...] = (), action: Action = "search"
) -> RequestContext:
    return AccessPolicyContract().make_context(kind=kind, groups=frozenset(groups), action=action)


@pytest.mark.anyio
async def test_allows_with_the_principals_groups() -> None:
    policy = GroupPolicy(GroupPolicy.Config())
    decision = await policy.check(_ctx(groups=("staff", "legal")))
    assert decision == Decision.allow(Filter.any_of("acl_groups", ["legal", "staff"]))


@pytest.mark.anyio
async def test_the_field_is_configurable() -> None:
    policy = GroupPolicy(GroupPolicy.Config(field="teams"))
    decision = await policy.check(_ctx(groups=("blue",)))
    assert decision.filter == Filter.any_of("teams", ["blue"])


@pytest.mark.anyio
async def test_other_principal_kinds_abstain() -> None:
    policy = GroupPolicy(GroupPolicy.Config())  # applies to jwt only
    others: tuple[PrincipalKind, ...] = ("key", "admin", "anonymous")
    for kind in others:
        assert (await policy.check(_ctx(kind=kind, groups=("staff",)))).verdict == "abstain"
    keys_too = GroupPolicy(GroupPolicy.Config(apply_to=["jwt", "key"]))
    assert (await keys_too.check(_ctx(kind="key", groups=("staff",)))).verdict == "allow"


@pytest.mark.anyio
async def test_no_groups_is_denied_with_a_reason() -> None:
    decision = await GroupPolicy(GroupPolicy.Config()).check(_ctx())
    assert decision.verdict == "deny"
    assert "no group" in decision.reason
    with pytest.raises(PermissionDenied, match="no group"):
        await authorize([("groups", GroupPolicy(GroupPolicy.Config()))], _ctx())


@pytest.mark.anyio
async def test_public_group_is_added_and_admits_callers_without_groups() -> None:
    policy = GroupPolicy(GroupPolicy.Config(public_group="everyone"))
    alone = await policy.check(_ctx())
    assert alone == Decision.allow(Filter.any_of("acl_groups", ["everyone"]))
    member = await policy.check(_ctx(groups=("staff",)))
    assert member.filter == Filter.any_of("acl_groups", ["everyone", "staff"])


@pytest.mark.anyio
async def test_the_decision_is_the_same_for_every_action() -> None:
    policy = GroupPolicy(GroupPolicy.Config())
    actions: tuple[Action, ...] = ("search", "write", "delete")
    decisions = {await policy.check(_ctx(groups=("g",), action=a)) for a in actions}
    assert len(decisions) == 1


def test_config_rejects_unknown_kinds_and_empty_names() -> None:
    for bad in ({"apply_to": ["robot"]}, {"field": ""}, {"public_group": ""}):
        with pytest.raises(ValidationError):
            GroupPolicy.Config.model_validate(bad)


def test_registered_under_groups() -> None:
    registry = Registry.from_entry_points()
    policy = registry.build(
        AccessPolicy, ComponentSpec(use="groups", config={"public_group": "everyone"})
    )
    assert isinstance(policy, GroupPolicy)


@pytest.mark.anyio
async def test_untagged_documents_stay_hidden_in_a_real_store(tmp_path: Path) -> None:
    store = SQLiteStore(SQLiteStore.Config(path=tmp_path / "db.sqlite"))
    await store.start()
    try:
        docs: dict[str, dict[str, object]] = {
            "staff-only": {"acl_groups": ["staff"]},
            "legal-only": {"acl_groups": ["legal"]},
            "everyone": {"acl_groups": ["everyone"]},
            "untagged": {},
        }
        for i, (doc_id, metadata) in enumerate(docs.items()):
            vector = np.eye(4, dtype=np.float32)[i : i + 1]
            chunks = make_chunks(doc_id, ["quarterly report"], metadata=metadata)
            await store.put_document("ns", make_document(doc_id), chunks, vector, "e")
        policy = GroupPolicy(GroupPolicy.Config(public_group="everyone"))
        allowed = await authorize([("groups", policy)], _ctx(groups=("staff",)))
        hits = await store.keyword_search("ns", "report", 10, allowed)
        assert {h.document_id for h in hits} == {"staff-only", "everyone"}
    finally:
        await store.aclose()
