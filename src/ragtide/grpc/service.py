"""``ragtide.v1.Ragtide``: the servicer. It only translates, as the HTTP routes do.

Every call authenticates from the metadata ``authorization`` (the HTTP header's value,
through the same ``Authenticator``), needs the same scope and takes the same rate as its
HTTP route (``TenantDirectory.admit``), opens the namespace within the caller's tenant
(``TenantDirectory.open``) and calls the same core function (``ragtide.chat.answer``,
``stream_answer``, ``search``, the ``Ingestor``). A ``RagtideError`` becomes a status
from ``ragtide.grpc.status.STATUS``; anything else is INTERNAL without detail (and
logged), as HTTP's 500.
"""

from __future__ import annotations

import functools
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

import anyio
import grpc
from google.protobuf import struct_pb2
from pydantic import BaseModel, ValidationError

from ragtide import chat
from ragtide.api.deps import Call
from ragtide.api.routes.chat import count_turn
from ragtide.api.schemas import ChatRequest, SearchRequest
from ragtide.errors import (
    BackendUnavailable,
    Forbidden,
    InvalidRequest,
    PayloadTooLarge,
    RagtideError,
)
from ragtide.grpc.status import code_for, trailers_for
from ragtide.grpc.stubs import pb
from ragtide.ingest.pipeline import IngestOutcome, validate_document_id
from ragtide.observability import (
    TENANT_REJECTIONS,
    TENANT_REQUESTS,
    request_id_var,
    tenant_label,
    tenant_var,
)
from ragtide.runtime import Runtime
from ragtide.tenants import RouteClass, TenantDirectory
from ragtide.types import (
    DEFAULT_NAMESPACE,
    Answer,
    Citation,
    DocumentInfo,
    Hit,
    Principal,
    Scope,
)

__all__ = ["RagtideService"]

logger = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_GROUP_LIMIT = 64  # as the HTTP upload's groups=
_DEFAULT_TOP_K = SearchRequest.model_fields["top_k"].default
_DEFAULT_PAGE, _MAX_PAGE = 100, 1000


class Context(Protocol):
    """What the servicer uses of ``grpc.aio.ServicerContext``."""

    def invocation_metadata(self) -> Any: ...

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> Any: ...

    async def write(self, message: Any) -> None: ...


R = TypeVar("R")
Handler = Callable[[Any, Any, Context], Awaitable[R]]


def _refusing(handler: Handler[R]) -> Handler[R]:
    """Turn the errors of a handler into gRPC statuses (for every kind of call)."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: Context) -> R:
        token = request_id_var.set(_request_id(context))
        tenant_token = tenant_var.set(None)
        try:
            return await handler(self, request, context)
        except RagtideError as exc:
            code = code_for(exc)
            if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE):
                logger.warning("call failed", extra={"error": exc.code, "reason": exc.message})
            await context.abort(code, exc.message, trailing_metadata=trailers_for(exc))
            raise  # abort raises; this is never reached
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            raise
        except Exception:  # the outer boundary: log it, answer INTERNAL without a trace
            logger.exception("unhandled error", extra={"method": handler.__name__})
            internal = RagtideError("internal error")
            await context.abort(
                grpc.StatusCode.INTERNAL, "internal error", trailing_metadata=trailers_for(internal)
            )
            raise
        finally:
            tenant_var.reset(tenant_token)
            request_id_var.reset(token)

    return wrapper


def _metadata(context: Context, key: str) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == key and isinstance(value, str):
            return value
    return None


def _request_id(context: Context) -> str:
    incoming = _metadata(context, "x-request-id") or ""
    return incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex[:16]


M = TypeVar("M", bound=BaseModel)


def _validated(model: type[M], data: Mapping[str, Any]) -> M:
    """The HTTP API's own request model checks the fields (same limits, same words)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise InvalidRequest(problems or "invalid request") from None


def _namespace(value: str) -> str:
    return value or DEFAULT_NAMESPACE


def _optional(message: Any, field: str) -> str | None:
    value: str | None = getattr(message, field) if message.HasField(field) else None
    return value


# --- rendering --------------------------------------------------------------------------


def _citation(c: Citation) -> Any:
    return pb.Citation(
        index=c.index,
        document_id=c.document_id,
        chunk_id=c.chunk_id,
        title=c.title,
        text=c.text,
        score=round(c.score, 6),
    )


def _answer(a: Answer) -> Any:
    return pb.ChatResponse(
        session_id=a.session_id,
        answer=a.text,
        citations=[_citation(c) for c in a.citations],
        intent=pb.Intent(kind=a.intent.kind, query=a.intent.query, condensed=a.intent.condensed),
    )


def _hit(h: Hit) -> Any:
    return pb.Hit(
        document_id=h.chunk.document_id,
        chunk_id=h.chunk.id,
        title=h.chunk.title,
        text=h.chunk.text,
        score=round(h.score, 6),
    )


def _document(d: DocumentInfo) -> Any:
    metadata = struct_pb2.Struct()
    metadata.update(dict(d.metadata))
    return pb.Document(
        id=d.id,
        title=d.title,
        source=d.source,
        chunks=d.chunks,
        content_hash=d.content_hash,
        created_at=d.created_at,
        updated_at=d.updated_at,
        metadata=metadata,
    )


def _outcome(o: IngestOutcome) -> Any:
    out = pb.DocumentOutcome(
        source=o.source, document_id=o.document_id or "", status=o.status, chunks=o.chunks
    )
    if o.error is not None:
        out.error.CopyFrom(pb.ErrorDetail(code=o.error.code, message=o.error.message))
    return out


def _groups(raw: list[str]) -> list[str]:
    groups = sorted({g.strip() for g in raw if g.strip()})
    if len(groups) > _GROUP_LIMIT or any(len(g) > 128 for g in groups):
        raise InvalidRequest(f"groups: at most {_GROUP_LIMIT} names of up to 128 characters")
    return groups


# --- the servicer -------------------------------------------------------------------------


class RagtideService:
    """The methods of ``ragtide.v1.Ragtide`` over the app's state (runtime, tenants, auth,
    ingestor: what the HTTP lifespan put there)."""

    def __init__(self, state: Any) -> None:
        self._state = state

    # identity at the edge, decisions in the core

    def _runtime(self) -> Runtime:
        rt: Runtime | None = getattr(self._state, "runtime", None)
        if rt is None or not rt.started:
            raise BackendUnavailable("the service is starting", retry_after=1)
        return rt

    async def _principal(self, context: Context) -> Principal:
        self._runtime()
        try:
            found: Principal = await self._state.auth.authenticate(
                _metadata(context, "authorization")
            )
        except RagtideError as exc:
            TENANT_REJECTIONS.labels("unknown", exc.code).inc()
            raise
        tenant_var.set(found.tenant)
        return found

    async def _call(self, context: Context, scope: Scope, route: RouteClass | None) -> Call:
        who = await self._principal(context)
        tenants: TenantDirectory = self._state.tenants
        if not who.has_scope(scope):
            TENANT_REJECTIONS.labels(tenant_label(who.tenant), "forbidden").inc()
            raise Forbidden(f"this credential lacks the {scope!r} scope")
        if route is not None:
            await tenants.admit(who, route)
            TENANT_REQUESTS.labels(tenant_label(who.tenant), route).inc()
        return Call(who, await tenants.runtime(who.tenant), tenants)

    # chat

    @_refusing
    async def Chat(self, request: Any, context: Context) -> Any:
        c = await self._call(context, "read", "chat")
        body = _validated(
            ChatRequest,
            {"message": request.message, "session_id": _optional(request, "session_id")},
        )
        opened = await c.open(_namespace(request.namespace), "chat")
        await c.tenants.check_daily(c.principal.tenant)
        answer = await chat.answer(
            c.rt, opened.key, body.message, body.session_id, filter=opened.filter
        )
        await count_turn(c, answer)
        return _answer(answer)

    @_refusing
    async def StreamChat(self, request: Any, context: Context) -> None:
        """Written with ``context.write`` (not as a generator) so that a cancelled call is
        always cancelled inside this coroutine and the turn's stream is closed at once."""
        c = await self._call(context, "read", "chat")
        body = _validated(
            ChatRequest,
            {"message": request.message, "session_id": _optional(request, "session_id")},
        )
        opened = await c.open(_namespace(request.namespace), "chat")
        await c.tenants.check_daily(c.principal.tenant)
        events = await chat.stream_answer(
            c.rt,
            opened.key,
            body.message,
            body.session_id,
            filter=opened.filter,
            on_answer=lambda answer: count_turn(c, answer),
        )
        try:
            async for event in events:
                if isinstance(event, chat.Token):
                    await context.write(pb.ChatEvent(token=pb.Token(text=event.text)))
                    continue
                if not isinstance(event, chat.Done):
                    continue  # tool calls: in the answer's session, not in this stream
                answer = event.answer
                citations = pb.Citations(
                    session_id=answer.session_id,
                    citations=[_citation(x) for x in answer.citations],
                )
                await context.write(pb.ChatEvent(citations=citations))
                await context.write(pb.ChatEvent(done=_answer(answer)))
        finally:
            with anyio.CancelScope(shield=True):
                await events.aclose()

    # retrieval

    @_refusing
    async def Search(self, request: Any, context: Context) -> Any:
        c = await self._call(context, "read", "search")
        body = _validated(
            SearchRequest, {"query": request.query, "top_k": request.top_k or _DEFAULT_TOP_K}
        )
        if body.top_k > c.rt.settings.retrieval.max_top_k:
            raise InvalidRequest(f"top_k must be at most {c.rt.settings.retrieval.max_top_k}")
        opened = await c.open(_namespace(request.namespace), "search")
        hits = await chat.search(c.rt, opened.key, body.query, body.top_k, opened.filter)
        return pb.SearchResponse(results=[_hit(h) for h in hits])

    # documents

    @_refusing
    async def ListDocuments(self, request: Any, context: Context) -> Any:
        c = await self._call(context, "read", None)
        limit = request.limit or _DEFAULT_PAGE
        if not 1 <= limit <= _MAX_PAGE:
            raise InvalidRequest(f"limit: between 1 and {_MAX_PAGE}")
        after = _optional(request, "after")
        if after is not None and len(after) > 512:
            raise InvalidRequest("after: at most 512 characters")
        namespace = _namespace(request.namespace)
        opened = await c.open(namespace, "read")
        await c.rt.require_namespace(opened.key)
        docs = await c.rt.store.list_documents(opened.key, limit=limit + 1, after=after)
        if opened.filter:
            docs = [d for d in docs if opened.filter.matches(d.id, d.metadata)]
        page = docs[:limit]
        out = pb.ListDocumentsResponse(namespace=namespace, documents=[_document(d) for d in page])
        if len(docs) > limit:
            out.next = page[-1].id
        return out

    @_refusing
    async def UploadDocument(self, request: AsyncIterator[Any], context: Context) -> Any:
        """The header first, then the bytes; the size limit (``http.max_upload_bytes``, the
        HTTP upload's) is enforced while receiving, before anything is parsed."""
        c = await self._call(context, "write", "write")
        limit = c.rt.settings.http.max_upload_bytes
        header = None
        pieces: list[bytes] = []
        received = 0
        async for part in request:
            kind = part.WhichOneof("part")
            if header is None:
                if kind != "header":
                    raise InvalidRequest("the first message of an upload must be its header")
                header = part.header
                if header.size > limit:
                    raise PayloadTooLarge(f"the upload is larger than {limit} bytes")
                opened = await c.open(_namespace(header.namespace), "write")
                if header.HasField("document_id"):
                    validate_document_id(header.document_id)
                groups = _groups(list(header.groups))
                continue
            if kind != "chunk":
                raise InvalidRequest("an upload has one header, then only chunks")
            received += len(part.chunk)
            if received > limit:
                raise PayloadTooLarge(f"the upload is larger than {limit} bytes")
            pieces.append(part.chunk)
        if header is None:
            raise InvalidRequest("an upload needs a header")
        data = b"".join(pieces)
        del pieces
        namespace = _namespace(header.namespace)
        metadata = {"acl_groups": groups} if groups else None
        self._runtime()
        outcomes, changed = await c.upload(
            self._state.ingestor,
            opened,
            header.filename or "upload.txt",
            data,
            _optional(header, "document_id"),
            metadata,
        )
        return pb.UploadDocumentResponse(
            namespace=namespace, documents=[_outcome(o) for o in outcomes], changed=changed
        )
