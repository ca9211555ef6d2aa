"""What a tool is: a name, a description, JSON-schema parameters and an async ``call``.

Tools are plugins in the ``ragtide.tools`` entry-point group and follow the component
contract (a nested pydantic ``Config``, ``__init__(config)``). A model sees them in
OpenAI's ``tools`` format (``openai_tool``); what a tool may reach comes only through the
``ToolContext`` the core builds for one turn: a tool never builds store keys, it names
a namespace as the caller does and the core decides whether the caller may read it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from ragtide.types import Hit

__all__ = [
    "DocumentFn",
    "SearchFn",
    "Tool",
    "ToolContext",
    "ToolError",
    "check_arguments",
    "openai_tool",
]

SearchFn = Callable[[str | None, str, int], Awaitable[Sequence[Hit]]]
"""``(namespace name or None for the turn's own, query, top_k)`` → hits, best first.

Provided by the core: it resolves the name within the caller's tenant, checks that the
caller may read it (raising ``Forbidden`` / ``NamespaceNotFound``) and applies the
caller's access filter."""

DocumentFn = Callable[[str | None, str], Awaitable[Mapping[str, Any] | None]]
"""``(namespace name or None, document id)`` → what the caller may see of it, or None."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What the tools of one turn may use; everything tenant-scoped is a core callable."""

    namespace: str = ""  # the turn's namespace as the caller names it (not a store key)
    search: SearchFn | None = None
    get_document: DocumentFn | None = None
    now: Callable[[], datetime] = _utc_now
    extra: Mapping[str, Any] = field(default_factory=dict)


class ToolError(Exception):
    """A failure a tool explains to the model in its own words (sent back as the result)."""


@runtime_checkable
class Tool(Protocol):
    """A function the model may call. ``call`` returns text or a JSON object."""

    @property
    def name(self) -> str:
        """``^[a-zA-Z0-9_-]{1,64}$``, as OpenAI requires."""
        ...

    @property
    def description(self) -> str: ...

    @property
    def parameters(self) -> Mapping[str, Any]:
        """A JSON schema of ``type: object`` for the arguments."""
        ...

    async def call(self, args: Mapping[str, Any], ctx: ToolContext) -> str | Mapping[str, Any]: ...


def openai_tool(tool: Tool) -> dict[str, Any]:
    """The tool in OpenAI's ``tools`` format."""
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": dict(tool.parameters),
        },
    }


_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and v.is_integer())
    ),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


def check_arguments(schema: Mapping[str, Any], raw: str) -> dict[str, Any]:
    """Parse a call's JSON arguments and check them against the top level of ``schema``
    (types, ``required``, ``enum``, ``minimum``/``maximum``, ``maxLength``,
    ``additionalProperties: false``); raise ``ToolError`` saying what is wrong."""
    try:
        args = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise ToolError("the arguments are not valid JSON") from None
    if not isinstance(args, dict):
        raise ToolError("the arguments must be a JSON object")
    properties: Mapping[str, Any] = schema.get("properties") or {}
    missing = [name for name in schema.get("required", ()) if name not in args]
    if missing:
        raise ToolError(f"missing required argument(s): {', '.join(missing)}")
    if schema.get("additionalProperties") is False:
        unknown = sorted(set(args) - set(properties))
        if unknown:
            raise ToolError(f"unknown argument(s): {', '.join(unknown)}")
    for name, value in args.items():
        rules = properties.get(name)
        if not isinstance(rules, Mapping):
            continue
        kind = rules.get("type")
        kinds = [kind] if isinstance(kind, str) else list(kind or ())
        if kinds and not any(_TYPES.get(k, lambda _: True)(value) for k in kinds):
            raise ToolError(f"argument {name!r} must be of type {' or '.join(kinds)}")
        if "integer" in kinds and isinstance(value, float) and value.is_integer():
            args[name] = value = int(value)
        if "enum" in rules and value not in rules["enum"]:
            raise ToolError(f"argument {name!r} must be one of {rules['enum']}")
        if isinstance(value, int | float) and not isinstance(value, bool):
            if "minimum" in rules and value < rules["minimum"]:
                raise ToolError(f"argument {name!r} must be at least {rules['minimum']}")
            if "maximum" in rules and value > rules["maximum"]:
                raise ToolError(f"argument {name!r} must be at most {rules['maximum']}")
        if isinstance(value, str) and "maxLength" in rules and len(value) > rules["maxLength"]:
            raise ToolError(f"argument {name!r} is longer than {rules['maxLength']} characters")
    return args
