"""Built-in access policies (entry-point group ``ragtide.policies``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ragtide.access import Decision, RequestContext
from ragtide.types import Filter

__all__ = ["GroupPolicy"]

PrincipalKind = Literal["jwt", "key", "anonymous", "admin"]


class GroupPolicy:
    """``AccessPolicy`` (entry point ``groups``): callers see documents tagged with their groups.

    A document is tagged at upload with a list of group names in its metadata (by default
    ``acl_groups``; every chunk inherits it). For a principal whose kind is in
    ``apply_to`` the policy allows with ``Filter.any_of(field, groups)``: the principal's
    groups, plus ``public_group`` when one is set. Principals of other kinds abstain, so
    the other policies and the credential's scopes decide for them.

    Fail closed: a document without the field (untagged) matches no group, so it is
    hidden from every caller this policy applies to; tag shared documents with the
    ``public_group``. A principal with no groups and no public group configured is denied.
    """

    class Config(BaseModel):
        field: str = Field(
            "acl_groups", min_length=1, description="Metadata field listing a document's groups."
        )
        apply_to: list[PrincipalKind] = Field(
            ["jwt"],
            description="Principal kinds the policy applies to; other kinds abstain.",
        )
        public_group: str | None = Field(
            None,
            min_length=1,
            description="Documents tagged with this group are visible to everyone it applies to.",
        )

    def __init__(self, config: Config) -> None:
        self._field = config.field
        self._apply_to = frozenset(config.apply_to)
        self._public = frozenset([config.public_group] if config.public_group else [])

    async def check(self, ctx: RequestContext) -> Decision:
        principal = ctx.principal
        if principal.kind not in self._apply_to:
            return Decision.abstain()
        visible = principal.groups | self._public
        if not visible:
            return Decision.deny(
                "the caller belongs to no group, so no document is visible to it "
                f"(documents are shared by the {self._field!r} metadata field)"
            )
        return Decision.allow(Filter.any_of(self._field, sorted(visible)))
