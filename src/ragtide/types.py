"""Value types that flow through the core: frozen, typed, and free of I/O."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from ragtide.errors import InvalidNamespace

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vector: TypeAlias = Sequence[float] | npt.NDArray[np.float32]

__all__ = [
    "DEFAULT_NAMESPACE",
    "Answer",
    "ChatTurn",
    "Chunk",
    "Citation",
    "Condition",
    "DocumentInfo",
    "Filter",
    "Hit",
    "Intent",
    "ParsedDocument",
    "Prompt",
    "RateDecision",
    "Reply",
    "RetrievalRequest",
    "Section",
    "validate_namespace",
]

DEFAULT_NAMESPACE = "default"
_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def validate_namespace(namespace: str) -> str:
    """Return ``namespace`` unchanged, or raise ``InvalidNamespace``."""
    if not _NAMESPACE.fullmatch(namespace):
        raise InvalidNamespace(
            f"invalid namespace {namespace!r}: use 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return namespace


# --- documents -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Section:
    """A run of text under one heading path (``("Install", "Linux")``), as parsed from a file."""

    text: str
    headings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    """What a parser makes of one source: a title and its sections in reading order."""

    title: str
    sections: tuple[Section, ...]
    id: str | None = None  # set when the source names its own id (JSONL ``_id``)
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n\n".join(s.text for s in self.sections)


@dataclass(frozen=True, slots=True)
class Chunk:
    """A retrievable piece of one document."""

    id: str
    document_id: str
    ordinal: int
    text: str
    title: str = ""
    headings: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    id: str
    title: str
    source: str
    content_hash: str
    chunks: int
    created_at: float
    updated_at: float
    metadata: Mapping[str, Any] = field(default_factory=dict)


# --- retrieval -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Condition:
    """``metadata[field]`` must be one of ``values`` (``document_id`` is a field too)."""

    field: str
    values: frozenset[str]

    def matches(self, document_id: str, metadata: Mapping[str, Any]) -> bool:
        value = document_id if self.field == "document_id" else metadata.get(self.field)
        if isinstance(value, list | tuple | set | frozenset):
            return any(str(v) in self.values for v in value)
        return value is not None and str(value) in self.values


@dataclass(frozen=True, slots=True)
class Filter:
    """A conjunction of conditions; the empty filter admits everything in the namespace.

    Access policies only ever narrow a filter (``a & b``); the namespace itself is never
    part of a filter, because the core passes it separately and every store scopes by it.
    """

    conditions: tuple[Condition, ...] = ()

    @classmethod
    def any_of(cls, field: str, values: Iterable[str]) -> Filter:
        return cls((Condition(field, frozenset(str(v) for v in values)),))

    def __and__(self, other: Filter) -> Filter:
        return Filter(self.conditions + other.conditions)

    def __bool__(self) -> bool:
        return bool(self.conditions)

    def matches(self, document_id: str, metadata: Mapping[str, Any]) -> bool:
        return all(c.matches(document_id, metadata) for c in self.conditions)


@dataclass(frozen=True, slots=True)
class RetrievalRequest:
    namespace: str  # set by the core, never by a plugin: the isolation boundary
    text: str
    vector: Vector | None = None
    filter: Filter = Filter()
    top_k: int = 8


@dataclass(frozen=True, slots=True)
class Hit:
    """A chunk with the score that ranked it (higher is better)."""

    chunk: Chunk
    score: float

    @property
    def document_id(self) -> str:
        return self.chunk.document_id


# --- dialogue --------------------------------------------------------------------------


Role = Literal["user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatTurn:
    role: Role
    content: str
    at: float = field(default_factory=time.time)

    @classmethod
    def user(cls, content: str) -> ChatTurn:
        return cls("user", content)

    @classmethod
    def assistant(cls, content: str) -> ChatTurn:
        return cls("assistant", content)


IntentKind = Literal["question", "greeting", "thanks", "farewell"]


@dataclass(frozen=True, slots=True)
class Intent:
    """What a turn asks for: whether to retrieve, and the standalone query to retrieve with."""

    kind: IntentKind
    query: str
    needs_retrieval: bool = True
    condensed: bool = False  # True when ``query`` was rewritten from the history


@dataclass(frozen=True, slots=True)
class Prompt:
    """Everything a chat model may use to answer one turn."""

    message: str
    intent: Intent
    history: Sequence[ChatTurn]
    hits: Sequence[Hit]


@dataclass(frozen=True, slots=True)
class Reply:
    """A chat model's answer; ``cited`` are 1-based indexes into ``Prompt.hits``."""

    text: str
    cited: tuple[int, ...] = ()
    usage: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Citation:
    index: int
    document_id: str
    chunk_id: str
    title: str
    text: str
    score: float


@dataclass(frozen=True, slots=True)
class Answer:
    session_id: str
    text: str
    citations: tuple[Citation, ...]
    intent: Intent


@dataclass(frozen=True, slots=True)
class RateDecision:
    """A rate limiter's verdict: admitted or not, whole tokens left, seconds to wait."""

    allowed: bool
    remaining: int
    retry_after: float  # 0.0 when allowed
