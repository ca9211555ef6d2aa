"""Value types that flow through the core: frozen, typed, and free of I/O."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NewType, TypeAlias

from ragtide.errors import InvalidNamespace, InvalidRequest

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vector: TypeAlias = Sequence[float] | npt.NDArray[np.float32]

__all__ = [
    "DEFAULT_NAMESPACE",
    "DEFAULT_TENANT",
    "SCOPES",
    "Action",
    "Answer",
    "ApiKeyRecord",
    "ChatTurn",
    "Chunk",
    "Citation",
    "Condition",
    "DocumentInfo",
    "Filter",
    "Grounding",
    "Hit",
    "Intent",
    "NamespaceKey",
    "ParsedDocument",
    "Principal",
    "Prompt",
    "RateDecision",
    "Reply",
    "RetrievalRequest",
    "Scope",
    "Section",
    "SentenceSupport",
    "SessionInfo",
    "TenantRecord",
    "TenantUsage",
    "namespace_key",
    "split_namespace_key",
    "validate_namespace",
    "validate_namespace_key",
    "validate_tenant",
]

DEFAULT_NAMESPACE = "default"
DEFAULT_TENANT = "default"
_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_TENANT = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")  # a DNS label


def validate_namespace(namespace: str) -> str:
    """Return ``namespace`` unchanged, or raise ``InvalidNamespace``."""
    if not _NAMESPACE.fullmatch(namespace):
        raise InvalidNamespace(
            f"invalid namespace {namespace!r}: use 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return namespace


def validate_tenant(tenant: str) -> str:
    """Return ``tenant`` unchanged, or raise ``InvalidRequest``: tenant ids are DNS labels."""
    if not _TENANT.fullmatch(tenant):
        raise InvalidRequest(
            f"invalid tenant id {tenant!r}: use 1-63 lower-case letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return tenant


# A namespace as the stores know it: ``<tenant>/<name>``. Only ``namespace_key`` makes
# one, from a tenant that came from a credential; the store protocols take this type, so
# (under mypy) no code path can hand a store a namespace that a URL named on its own.
NamespaceKey = NewType("NamespaceKey", str)


def namespace_key(tenant: str, namespace: str) -> NamespaceKey:
    """The store key of ``namespace`` within ``tenant`` (both validated)."""
    return NamespaceKey(f"{validate_tenant(tenant)}/{validate_namespace(namespace)}")


def validate_namespace_key(key: str) -> str:
    """Return ``key`` if it is ``tenant/name`` (or a bare name) with valid parts."""
    tenant, sep, name = key.rpartition("/")
    if sep and not _TENANT.fullmatch(tenant):
        raise InvalidNamespace(f"invalid namespace {key!r}")
    validate_namespace(name)
    return key


def split_namespace_key(key: str) -> tuple[str, str]:
    """(tenant, namespace) of a store key; a bare name belongs to the default tenant."""
    tenant, sep, name = key.rpartition("/")
    return (tenant if sep else DEFAULT_TENANT), name


# --- identity --------------------------------------------------------------------------

Scope = Literal["read", "write", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "write", "admin")

# What a request does, as policies see it.
Action = Literal["search", "chat", "read", "write", "delete", "admin"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking, as a credential proved it: the only source of a request's tenant.

    ``namespaces`` is None when the credential may use every namespace of its tenant.
    ``key_id`` is set for API keys (never the key itself); ``subject`` names the caller
    for logs and policies (``key:<id>``, a JWT's ``sub``, ``anonymous``). Scopes do not
    imply each other: a key made for ingestion may hold ``write`` without ``read``.
    """

    tenant: str
    subject: str
    scopes: frozenset[str]
    kind: Literal["key", "jwt", "admin", "anonymous"] = "key"
    key_id: str | None = None
    namespaces: frozenset[str] | None = None
    groups: frozenset[str] = frozenset()
    expires_at: float | None = None

    def has_scope(self, scope: Scope) -> bool:
        return scope in self.scopes

    @property
    def platform_admin(self) -> bool:
        """The bootstrap admin key: manages every tenant (its own data is ``default``'s)."""
        return self.kind == "admin"

    def may_use(self, namespace: str) -> bool:
        return self.namespaces is None or namespace in self.namespaces


@dataclass(frozen=True, slots=True)
class TenantRecord:
    """A tenant as stored: its ``TenantConfig`` as JSON, bumped ``version`` on every change."""

    id: str
    config: Mapping[str, Any]
    version: int
    webhook_secret: str  # signs task callbacks (HMAC-SHA256); generated, never chosen
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """An API key as stored: never the key, only its SHA-256 (keys are 190-bit random)."""

    id: str
    tenant: str
    prefix: str  # the first characters of the key, to recognise it in listings
    hash: str
    scopes: tuple[str, ...]
    namespaces: tuple[str, ...] | None
    description: str
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None


@dataclass(frozen=True, slots=True)
class TenantUsage:
    namespaces: int
    documents: int
    chunks: int
    bytes: int  # UTF-8 bytes of the documents' chunk text


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
    """A retrievable piece of one document.

    ``terms``: the chunk's terms counted as ``Analyzer.chunk_terms`` counts them (in the
    form ``analyzer.encode_terms`` gives them), when ingestion has already done it (the
    parse workers do, in parallel, beside the chunking, for a store that says it
    ``takes_chunk_terms``); such a store takes them instead of analysing the chunk again on
    its one writer thread. Not part of a chunk's value (equality, repr)."""

    id: str
    document_id: str
    ordinal: int
    text: str
    title: str = ""
    headings: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    terms: str | None = field(default=None, compare=False, repr=False)


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


# "tool": a tool call the model made during the turn and its result, saved between the
# user's turn and the answer; ``content`` is JSON (name, arguments, result, outcome).
# Chat models and intent detectors never see these turns (``chat`` leaves them out).
Role = Literal["user", "assistant", "tool"]


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

    @classmethod
    def tool(cls, content: str) -> ChatTurn:
        return cls("tool", content)


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
    # Per-request generation options a model may honour (``max_tokens``, ``temperature``);
    # a model that has no such knob ignores them.
    options: Mapping[str, Any] = field(default_factory=dict)


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


GroundingPolicy = Literal["annotate", "strip", "decline"]


@dataclass(frozen=True, slots=True)
class SentenceSupport:
    """One sentence of an answer as verified against the retrieved hits.

    ``citations`` are the answer's citation numbers (``Citation.index``) the sentence
    carries after verification; ``attached`` those of them verification added (the
    sentence was supported but did not cite a hit that supports it). ``support`` is the
    best support of a hit for the sentence, in [0, 1] (``ragtide.support``), cited hits
    first; ``supported`` is ``support >= Grounding.threshold``, or None for a sentence
    that states nothing to check (fewer than two content words, e.g. "Sure!").
    """

    text: str
    supported: bool | None
    support: float
    citations: tuple[int, ...] = ()
    attached: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Grounding:
    """What of an answer the retrieved hits support, and what the policy did about it.

    ``supported``: at least one checkable sentence and all of them supported.
    ``action``: ``"none"``, ``"stripped"`` (unsupported sentences removed) or
    ``"declined"`` (the answer was replaced by a plain "not in the documents").
    ``sentences`` describe the answer as the model wrote it (before any stripping).
    """

    supported: bool
    policy: GroundingPolicy
    action: Literal["none", "stripped", "declined"]
    threshold: float
    sentences: tuple[SentenceSupport, ...] = ()
    dropped_citations: int = 0  # [n] markers naming no retrieved hit, removed
    attached_citations: int = 0  # citations added to supported sentences


@dataclass(frozen=True, slots=True)
class Answer:
    session_id: str
    text: str
    citations: tuple[Citation, ...]
    intent: Intent
    usage: Mapping[str, int] = field(default_factory=dict)  # the chat model's token counts
    grounding: Grounding | None = None  # None: nothing was verified (no retrieval)
    tool_calls: tuple[Mapping[str, Any], ...] = ()  # the turn's tool calls, in order


@dataclass(frozen=True, slots=True)
class RateDecision:
    """A rate limiter's verdict: admitted or not, whole tokens left, seconds to wait."""

    allowed: bool
    remaining: int
    retry_after: float  # 0.0 when allowed


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A conversation of a namespace as a ``MemoryStore`` lists it.

    ``title`` is the one a rename gave it, else ``SessionInfo.title_of`` its first user
    message; ``turns`` counts the turns kept (a store may drop the oldest); times are
    seconds since the epoch: the first and the latest append.
    """

    id: str
    title: str
    turns: int
    created_at: float
    updated_at: float

    TITLE_MAX: ClassVar[int] = 80

    @staticmethod
    def title_of(message: str) -> str:
        """A default title: the message on one line, cut to ``TITLE_MAX`` characters."""
        line = " ".join(message.split())
        if len(line) <= SessionInfo.TITLE_MAX:
            return line
        return line[: SessionInfo.TITLE_MAX - 1].rstrip() + "…"
