"""The built-in tools: ``search``, ``get_document``, ``calculator`` and ``today``.

Registered in ``pyproject.toml`` under ``ragtide.tools`` like any third-party tool. The
tenant-scoped ones reach data only through the ``ToolContext``'s core callables.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ragtide.errors import RagtideError
from ragtide.tools.base import ToolContext, ToolError
from ragtide.tools.calculator import CalculatorError, evaluate, format_number

__all__ = ["CalculatorTool", "GetDocumentTool", "SearchTool", "TodayTool"]

_NAMESPACE = {
    "type": "string",
    "maxLength": 128,
    "description": "A namespace (collection of documents) of this tenant; "
    "omit it for the one this conversation is about.",
}


class SearchTool:
    """Search the documents of a namespace the caller may read."""

    name: ClassVar[str] = "search"

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

        max_results: int = Field(default=5, ge=1, le=20)
        max_chars_per_result: int = Field(default=600, ge=50, le=5000)

    def __init__(self, config: Config | None = None) -> None:
        self._config = config or self.Config()
        self.description = (
            "Search documents by meaning and keywords. Returns the best matching passages "
            "with their document ids, best first."
        )
        self.parameters: Mapping[str, Any] = {
            "type": "object",
            "properties": {
                "query": {"type": "string", "maxLength": 500, "description": "What to look for."},
                "namespace": _NAMESPACE,
                "top_k": {"type": "integer", "minimum": 1, "maximum": self._config.max_results},
            },
            "required": ["query"],
            "additionalProperties": False,
        }

    async def call(self, args: Mapping[str, Any], ctx: ToolContext) -> Mapping[str, Any]:
        if ctx.search is None:
            raise ToolError("search is not available in this conversation")
        namespace = args.get("namespace") or None
        top_k = int(args.get("top_k") or self._config.max_results)
        try:
            hits = await ctx.search(namespace, str(args["query"]), top_k)
        except RagtideError as exc:  # not found, forbidden: the model may try another
            raise ToolError(exc.message) from exc
        limit = self._config.max_chars_per_result
        return {
            "namespace": namespace or ctx.namespace,
            "results": [
                {
                    "document_id": hit.chunk.document_id,
                    "chunk_id": hit.chunk.id,
                    "title": hit.chunk.title,
                    "text": hit.chunk.text[:limit],
                    "score": round(hit.score, 4),
                }
                for hit in list(hits)[:top_k]
            ],
        }


class GetDocumentTool:
    """Fetch one document by id from a namespace the caller may read."""

    name: ClassVar[str] = "get_document"

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

    def __init__(self, config: Config | None = None) -> None:
        self._config = config or self.Config()
        self.description = "Fetch a document by its id: its title, source and text."
        self.parameters: Mapping[str, Any] = {
            "type": "object",
            "properties": {
                "document_id": {"type": "string", "maxLength": 512},
                "namespace": _NAMESPACE,
            },
            "required": ["document_id"],
            "additionalProperties": False,
        }

    async def call(self, args: Mapping[str, Any], ctx: ToolContext) -> Mapping[str, Any]:
        if ctx.get_document is None:
            raise ToolError("documents cannot be fetched in this conversation")
        document_id = str(args["document_id"])
        try:
            document = await ctx.get_document(args.get("namespace") or None, document_id)
        except RagtideError as exc:
            raise ToolError(exc.message) from exc
        if document is None:
            raise ToolError(f"there is no document {document_id!r}")
        return document


class CalculatorTool:
    """Exact arithmetic, evaluated safely (see ``ragtide.tools.calculator``)."""

    name: ClassVar[str] = "calculator"

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

    def __init__(self, config: Config | None = None) -> None:
        self._config = config or self.Config()
        self.description = (
            "Evaluate an arithmetic expression with numbers, + - * / // % ** and "
            "parentheses, e.g. (17 + 3) * 2 ** 10."
        )
        self.parameters: Mapping[str, Any] = {
            "type": "object",
            "properties": {"expression": {"type": "string", "maxLength": 200}},
            "required": ["expression"],
            "additionalProperties": False,
        }

    async def call(self, args: Mapping[str, Any], ctx: ToolContext) -> Mapping[str, Any]:
        expression = str(args["expression"])
        try:
            value = evaluate(expression)
        except CalculatorError as exc:
            raise ToolError(str(exc)) from None
        return {"expression": expression, "result": format_number(value)}


class TodayTool:
    """Today's date (and the time) in a configured time zone."""

    name: ClassVar[str] = "today"

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

        timezone: str = "UTC"

        @field_validator("timezone")
        @classmethod
        def _known_zone(cls, value: str) -> str:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r}") from None
            return value

    def __init__(self, config: Config | None = None) -> None:
        self._config = config or self.Config()
        self._zone = ZoneInfo(self._config.timezone)
        self.description = "Today's date, weekday and the current time."
        self.parameters: Mapping[str, Any] = {
            "type": "object",
            "properties": {},
            "additionalProperties": False,
        }

    async def call(self, args: Mapping[str, Any], ctx: ToolContext) -> Mapping[str, Any]:
        now = ctx.now().astimezone(self._zone)
        return {
            "date": now.date().isoformat(),
            "weekday": now.strftime("%A"),
            "time": now.strftime("%H:%M"),
            "timezone": self._config.timezone,
        }
