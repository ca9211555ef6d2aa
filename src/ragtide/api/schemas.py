"""Wire models: what clients send, validated at the edge, and how core values are rendered."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ragtide.ingest.pipeline import IngestOutcome
from ragtide.types import Answer, ChatTurn, Citation, DocumentInfo, Hit

__all__ = [
    "ChatRequest",
    "SearchRequest",
    "SessionId",
    "render_answer",
    "render_citation",
    "render_document",
    "render_hit",
    "render_outcome",
    "render_turn",
]


# A client-chosen session id: the chat route and chat tasks accept the same ones.
SessionId = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChatRequest(_Strict):
    message: str = Field(min_length=1, description="The user's turn.")
    session_id: SessionId | None = Field(
        None, description="Continue this session; omit to start a new one."
    )
    stream: bool = Field(False, description="Answer as server-sent events.")


class SearchRequest(_Strict):
    query: str = Field(min_length=1, max_length=8000)
    top_k: int = Field(5, gt=0)


def render_citation(c: Citation) -> dict[str, Any]:
    return {
        "index": c.index,
        "document_id": c.document_id,
        "chunk_id": c.chunk_id,
        "title": c.title,
        "text": c.text,
        "score": round(c.score, 6),
    }


def render_answer(a: Answer) -> dict[str, Any]:
    return {
        "session_id": a.session_id,
        "answer": a.text,
        "citations": [render_citation(c) for c in a.citations],
        "intent": {"kind": a.intent.kind, "query": a.intent.query, "condensed": a.intent.condensed},
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
