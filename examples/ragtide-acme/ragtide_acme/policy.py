"""``ClearancePolicy``: callers see documents up to their clearance level."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from ragtide.access import Decision, RequestContext
from ragtide.types import Filter

__all__ = ["ClearancePolicy"]

_PREFIX = "clearance:"
_CHANGES = frozenset({"write", "delete", "admin"})
_MIN_TO_CHANGE = "internal"


class ClearancePolicy:
    """``AccessPolicy`` (entry point ``acme-clearance``).

    A principal's clearance is the highest of ``levels`` among its groups named
    ``clearance:<level>``; with none it is ``public``. The policy allows with
    ``Filter.any_of(field, levels up to the clearance)``, so a document is visible only
    when its ``field`` metadata names one of those levels: an unlabelled document is
    hidden from everyone (fail closed). ``write``, ``delete`` and ``admin`` by a
    principal cleared below ``internal`` are denied.
    """

    class Config(BaseModel):
        levels: list[str] = Field(
            ["public", "internal", "secret"],
            description="Clearance levels, lowest first; must include public and internal.",
        )
        field: str = Field("clearance", min_length=1, description="The documents' level field.")

        @field_validator("levels")
        @classmethod
        def _ordered_and_complete(cls, levels: list[str]) -> list[str]:
            if len(set(levels)) != len(levels):
                raise ValueError("levels must be distinct")
            if "public" not in levels or _MIN_TO_CHANGE not in levels:
                raise ValueError(f"levels must include 'public' and {_MIN_TO_CHANGE!r}")
            if levels.index("public") > levels.index(_MIN_TO_CHANGE):
                raise ValueError(f"'public' must come before {_MIN_TO_CHANGE!r}")
            return levels

    def __init__(self, config: Config) -> None:
        self._levels = tuple(config.levels)
        self._rank = {level: i for i, level in enumerate(self._levels)}
        self._field = config.field

    def clearance(self, groups: frozenset[str]) -> str:
        """The highest level named by a ``clearance:<level>`` group; ``public`` if none."""
        ranks = [
            self._rank[g[len(_PREFIX) :]]
            for g in groups
            if g.startswith(_PREFIX) and g[len(_PREFIX) :] in self._rank
        ]
        return self._levels[max(ranks)] if ranks else "public"

    async def check(self, ctx: RequestContext) -> Decision:
        rank = self._rank[self.clearance(ctx.principal.groups)]
        if ctx.action in _CHANGES and rank < self._rank[_MIN_TO_CHANGE]:
            return Decision.deny(
                f"{ctx.action!r} needs clearance {_MIN_TO_CHANGE!r} or higher; "
                f"the caller has {self._levels[rank]!r}"
            )
        return Decision.allow(Filter.any_of(self._field, self._levels[: rank + 1]))
