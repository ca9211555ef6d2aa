"""Wire models: what clients send, validated at the edge, and how core values are rendered."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints
from pydantic_core import PydanticCustomError

from ragtide.ingest.pipeline import IngestOutcome
from ragtide.types import (
    Answer,
    ChatTurn,
    Chunk,
    Citation,
    DocumentInfo,
    Grounding,
    Hit,
    SessionInfo,
)

__all__ = [
    "DOCUMENT_ID_PATTERN",
    "NAMESPACE_PATTERN",
    "SESSION_CURSOR_PATTERN",
    "SESSION_ID_PATTERN",
    "TENANT_PATTERN",
    "ChatAnswer",
    "ChatRequest",
    "DocumentIdPath",
    "NamespacePath",
    "SearchRequest",
    "SessionId",
    "SessionIdPath",
    "SessionRename",
    "TenantPath",
    "render_answer",
    "render_chunk",
    "render_citation",
    "render_document",
    "render_grounding",
    "render_hit",
    "render_outcome",
    "render_session",
    "render_turn",
    "session_cursor",
    "session_cursor_value",
]


# The core's rules for names and ids (ragtide.types, ragtide.ingest.prepare), as patterns
# the OpenAPI document states and the path parameters are validated against.
NAMESPACE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
TENANT_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"  # a DNS label
# 1-512 printable characters, no leading or trailing whitespace: what ``str.strip``
# removes, spelled out (``\s`` differs between regex engines: Python's has U+0085,
# ECMAScript's U+FEFF, so a client validating by the OpenAPI document would disagree).
_ID_EDGE = r"[^\x00-\x20\x7f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
DOCUMENT_ID_PATTERN = rf"^{_ID_EDGE}(?:[^\x00-\x1f\x7f]{{0,510}}{_ID_EDGE})?$"
SESSION_ID_PATTERN = r"^[A-Za-z0-9._-]+$"
# A page of sessions ends where the next starts: "<updated_at>~<session id>" (GET …/sessions).
SESSION_CURSOR_PATTERN = r"^[0-9]{1,17}(?:\.[0-9]{1,17})?~[A-Za-z0-9._-]{1,128}$"
# Not whitespace only (what ``str.strip`` removes, spelled out for every regex engine).
NOT_BLANK_PATTERN = (
    r"[^\t\n\x0b\x0c\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
)

# A client-chosen session id: the chat route and chat tasks accept the same ones.
SessionId = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=SESSION_ID_PATTERN)
]

NamespacePath = Annotated[
    str,
    Path(
        pattern=NAMESPACE_PATTERN,
        description="1-63 letters, digits, '.', '_' or '-', starting with a letter or digit.",
    ),
]
TenantPath = Annotated[
    str, Path(pattern=TENANT_PATTERN, description="A tenant id: a DNS label (1-63 characters).")
]
DocumentIdPath = Annotated[
    str,
    Path(
        pattern=DOCUMENT_ID_PATTERN,
        description="1-512 printable characters, no leading or trailing whitespace.",
    ),
]
SessionIdPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=128,
        pattern=SESSION_ID_PATTERN,
        description="1-128 letters, digits, '.', '_' or '-'.",
    ),
]


def _number_not_text(value: Any) -> Any:
    if isinstance(value, str | bool):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


# An integer as JSON spells one: 5 or 5.0, never "5" or true.
JSONInt = Annotated[int, BeforeValidator(_number_not_text), Field(strict=False)]


class _Strict(BaseModel):
    # strict: "5" is not an integer, "yes" not a boolean: a wrong type is a 422.
    model_config = ConfigDict(extra="forbid", strict=True)


class ChatRequest(_Strict):
    # Blank and over-long messages are refused by the core (``chat.answer``) with its own
    # messages; the document states both rules (the length from settings, in app.openapi).
    message: str = Field(
        min_length=1,
        description="The user's turn (not blank).",
        json_schema_extra={"pattern": NOT_BLANK_PATTERN},
    )
    session_id: SessionId | None = Field(
        None, description="Continue this session; omit to start a new one."
    )
    stream: bool = Field(False, description="Answer as server-sent events.")


class SessionRename(_Strict):
    title: str = Field(
        min_length=1,
        max_length=SessionInfo.TITLE_MAX,
        pattern=NOT_BLANK_PATTERN,
        description="The session's new title (not blank; whitespace runs become one space).",
    )


class SearchRequest(_Strict):
    query: str = Field(min_length=1, max_length=8000)
    top_k: JSONInt = Field(5, gt=0, description="How many chunks (at most retrieval.max_top_k).")


# --- what a chat turn answers (documentation of render_answer; the OpenAPI 200 schema) ---


class ChatCitation(BaseModel):
    index: int = Field(description="The [n] of the answer: 1..k in order of appearance.")
    document_id: str
    chunk_id: str
    title: str
    text: str
    score: float = Field(ge=0, le=1, description="Retrieval score relative to the top hit.")


class ChatSentence(BaseModel):
    text: str = Field(description="The sentence as the model wrote it, without markers.")
    supported: bool | None = Field(
        description="support >= threshold; null: nothing to check (under two content words)."
    )
    support: float = Field(
        ge=0, le=1, description="Best support of a retrieved chunk (cited ones first)."
    )
    citations: list[int] = Field(description="The citation indexes the sentence carries.")
    attached: list[int] = Field(description="Those of them that verification added.")


class ChatGrounding(BaseModel):
    supported: bool = Field(description="Some sentence was checked and all checked ones hold.")
    policy: str = Field(description="The tenant's policy: annotate, strip or decline.")
    action: str = Field(
        description="none; stripped (unsupported sentences removed); declined (the answer "
        "says the documents do not hold it, with no citations)."
    )
    threshold: float = Field(ge=0, le=1)
    dropped_citations: int = Field(ge=0, description="[n] naming no retrieved chunk, removed.")
    attached_citations: int = Field(ge=0)
    sentences: list[ChatSentence] = Field(
        description="The answer as the model wrote it (before strip or decline)."
    )


class ChatToolCall(BaseModel):
    step: int
    call_id: str
    name: str
    arguments: str = Field(description="The JSON text the model sent.")
    result: str = Field(description="What the model got back (JSON or text).")
    outcome: str = Field(
        description="ok, error, timeout, unknown_tool, invalid_arguments or skipped."
    )
    duration_s: float


class ChatIntent(BaseModel):
    kind: str
    query: str
    condensed: bool


class ChatAnswer(BaseModel):
    """A chat turn's answer (also the ``done`` event of a stream)."""

    session_id: str
    answer: str = Field(description="The final text: in a stream, it replaces the tokens.")
    citations: list[ChatCitation]
    intent: ChatIntent
    grounding: ChatGrounding | None = Field(
        description="What the retrieved chunks support; null when nothing was verified "
        "(a greeting, a thanks)."
    )
    tool_calls: list[ChatToolCall] = Field(description="The turn's tool calls, in order.")


def render_citation(c: Citation) -> dict[str, Any]:
    return {
        "index": c.index,
        "document_id": c.document_id,
        "chunk_id": c.chunk_id,
        "title": c.title,
        "text": c.text,
        "score": round(c.score, 6),
    }


def render_grounding(g: Grounding | None) -> dict[str, Any] | None:
    if g is None:
        return None
    return {
        "supported": g.supported,
        "policy": g.policy,
        "action": g.action,
        "threshold": g.threshold,
        "dropped_citations": g.dropped_citations,
        "attached_citations": g.attached_citations,
        "sentences": [
            {
                "text": s.text,
                "supported": s.supported,
                "support": round(s.support, 6),
                "citations": list(s.citations),
                "attached": list(s.attached),
            }
            for s in g.sentences
        ],
    }


def render_answer(a: Answer) -> dict[str, Any]:
    return {
        "session_id": a.session_id,
        "answer": a.text,
        "citations": [render_citation(c) for c in a.citations],
        "intent": {"kind": a.intent.kind, "query": a.intent.query, "condensed": a.intent.condensed},
        "grounding": render_grounding(a.grounding),
        "tool_calls": [dict(call) for call in a.tool_calls],
    }


def render_hit(h: Hit) -> dict[str, Any]:
    return {
        "document_id": h.chunk.document_id,
        "chunk_id": h.chunk.id,
        "title": h.chunk.title,
        "text": h.chunk.text,
        "score": round(h.score, 6),
    }


def render_turn(t: ChatTurn) -> dict[str, Any]:
    return {"role": t.role, "content": t.content, "at": t.at}


def render_document(d: DocumentInfo) -> dict[str, Any]:
    return {
        "id": d.id,
        "title": d.title,
        "source": d.source,
        "chunks": d.chunks,
        "content_hash": d.content_hash,
        "created_at": d.created_at,
        "updated_at": d.updated_at,
        "metadata": dict(d.metadata),
    }


def render_outcome(o: IngestOutcome) -> dict[str, Any]:
    out: dict[str, Any] = {
        "source": o.source,
        "document_id": o.document_id,
        "status": o.status,
        "chunks": o.chunks,
    }
    if o.error_code:
        out["error"] = {"code": o.error_code, "message": o.reason}
    return out


def render_chunk(c: Chunk) -> dict[str, Any]:
    return {
        "ordinal": c.ordinal,
        "chunk_id": c.id,
        "title": c.title,
        "headings": list(c.headings),
        "text": c.text,
    }


def render_session(s: SessionInfo) -> dict[str, Any]:
    return {
        "session_id": s.id,
        "title": s.title,
        "turns": s.turns,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
    }


def session_cursor(s: SessionInfo) -> str:
    """The ``next`` of a page of sessions ending with ``s`` (``repr`` keeps the float exact)."""
    return f"{s.updated_at!r}~{s.id}"


def session_cursor_value(cursor: str) -> tuple[float, str]:
    """``(updated_at, session_id)`` of a cursor matching ``SESSION_CURSOR_PATTERN``."""
    updated_at, _, session_id = cursor.partition("~")
    return float(updated_at), session_id
