"""The MCP server behind ``ragtide.mcp`` (imported in the background: the SDK is slow to import).

Ragtide over the Model Context Protocol: a tenant's knowledge for agents and IDE assistants.

``mount_mcp(app, settings)`` serves the official ``mcp`` SDK's streamable-HTTP transport
at ``/mcp`` of the FastAPI app, in **stateless** mode with JSON responses: no MCP session
lives in a replica, so any replica answers any request (the same rule as the HTTP API).

Every request takes the same ``Authorization: Bearer`` credential as the HTTP API and is
authenticated by the app's ``Authenticator`` before the SDK sees it (a missing or bad
credential is a plain HTTP 401 with the usual error body). Each tool then runs the HTTP
route's checks: scope, the tenant's request rate (``TenantDirectory.admit``), the
namespace *of the caller's tenant* (``.open``, so another tenant's namespace is
``namespace_not_found``) and, for chat, the daily quotas (``.check_daily``). A refusal is
an MCP tool error (``isError``) whose text starts with the stable code
(``namespace_not_found: …``) and whose structured content is ``{"error": {"code",
"message", "status"}}``; resources fail with a JSON-RPC error carrying the code in
``data``.

Tools: ``search``, ``chat``, ``get_document``, ``list_namespaces``. Resources:
``ragtide://namespaces`` (the caller's namespaces with counts) and the template
``ragtide://namespaces/{namespace}`` (one namespace: counts and its first documents).

Needs the ``mcp`` extra (``pip install 'ragtide[mcp]'``).
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
from fastapi import FastAPI
from mcp.server.mcpserver import MCPServer
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS, CallToolResult, TextContent
from pydantic import BaseModel, Field
from starlette.types import Receive, Scope, Send

from ragtide import __version__
from ragtide import chat as flow
from ragtide.api.deps import Call
from ragtide.api.errors import error_response, status_for
from ragtide.api.routes.chat import count_turn
from ragtide.api.schemas import SessionId
from ragtide.errors import (
    BackendUnavailable,
    Forbidden,
    InvalidRequest,
    RagtideError,
    Unauthenticated,
)
from ragtide.observability import TENANT_REJECTIONS, TENANT_REQUESTS, tenant_label, tenant_var
from ragtide.settings import Settings
from ragtide.tenants import RouteClass
from ragtide.types import DEFAULT_NAMESPACE, Action, Principal, split_namespace_key
from ragtide.types import Scope as CredentialScope

__all__ = ["MCP_PATH", "MCPEndpoint", "build_server", "security"]

logger = logging.getLogger(__name__)

MCP_PATH = "/mcp"
_PREVIEW_DOCUMENTS = 100

# The caller of the MCP request being served. Set by the endpoint before the SDK runs the
# request; in stateless mode the SDK serves each request in tasks started from the
# request's own task, so the tools see this request's principal (and nothing else's).
_caller: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "ragtide_mcp_caller", default=None
)


# --- results -----------------------------------------------------------------------------


class SearchHit(BaseModel):
    document_id: str
    chunk_id: str
    title: str
    text: str
    score: float


class SearchResult(BaseModel):
    namespace: str
    results: list[SearchHit]


class ChatCitation(BaseModel):
    index: int
    document_id: str
    chunk_id: str
    title: str
    text: str
    score: float


class ChatResult(BaseModel):
    session_id: str
    answer: str
    citations: list[ChatCitation]
    intent: str


class Document(BaseModel):
    namespace: str
    id: str
    title: str
    source: str
    chunks: int
    content_hash: str
    created_at: float
    updated_at: float
    metadata: dict[str, Any]


class NamespaceInfo(BaseModel):
    namespace: str
    documents: int
    chunks: int


class Namespaces(BaseModel):
    namespaces: list[NamespaceInfo]


# --- the server ----------------------------------------------------------------------------


def _tool_error(exc: RagtideError) -> CallToolResult:
    status = status_for(exc)
    detail: dict[str, Any] = {"code": exc.code, "message": exc.message, "status": status}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        detail["retry_after"] = retry_after
    return CallToolResult(
        content=[TextContent(type="text", text=f"{exc.code}: {exc.message}")],
        structured_content={"error": detail},
        is_error=True,
    )


def _ok(result: BaseModel) -> CallToolResult:
    data = result.model_dump(mode="json")
    return CallToolResult(
        content=[TextContent(type="text", text=orjson.dumps(data).decode())],
        structured_content=data,
    )


def _resource_error(exc: RagtideError) -> MCPError:
    status = status_for(exc)
    return MCPError(
        code=INVALID_PARAMS if status < 500 else INTERNAL_ERROR,
        message=f"{exc.code}: {exc.message}",
        data={"code": exc.code, "status": status},
    )


def build_server(app: FastAPI) -> MCPServer[Any]:
    """The MCP server whose tools answer from ``app``'s runtime and tenant directory."""

    def principal() -> Principal:
        who = _caller.get()
        if who is None:  # only the endpoint below runs tools, and it always sets one
            raise Unauthenticated("this API needs a credential: Authorization: Bearer <key>")
        return who

    async def call(scope: CredentialScope, route: RouteClass | None = None) -> Call:
        """``ragtide.api.deps.call`` without a Request: scope, rate, the tenant's runtime."""
        who = principal()
        rt = getattr(app.state, "runtime", None)
        if rt is None or not rt.started:
            raise BackendUnavailable("the service is starting", retry_after=1)
        tenants = app.state.tenants
        if not who.has_scope(scope):
            TENANT_REJECTIONS.labels(tenant_label(who.tenant), "forbidden").inc()
            raise Forbidden(f"this credential lacks the {scope!r} scope")
        if route is not None:
            await tenants.admit(who, route)
            TENANT_REQUESTS.labels(tenant_label(who.tenant), route).inc()
        return Call(who, await tenants.runtime(who.tenant), tenants)

    async def guarded(work: Callable[[], Awaitable[BaseModel]]) -> CallToolResult:
        try:
            return _ok(await work())
        except RagtideError as exc:
            return _tool_error(exc)

    server: MCPServer[Any] = _quiet_server()

    @server.tool(
        description=(
            "Search the caller's documents: the chunks best matching `query` in `namespace`, "
            "best first, with their document ids and scores."
        )
    )
    async def search(
        query: Annotated[str, Field(min_length=1, max_length=8000)],
        namespace: str = DEFAULT_NAMESPACE,
        top_k: Annotated[int, Field(gt=0)] = 5,
    ) -> Annotated[CallToolResult, SearchResult]:
        async def work() -> SearchResult:
            c = await call("read", "search")
            if top_k > c.rt.settings.retrieval.max_top_k:
                raise InvalidRequest(f"top_k must be at most {c.rt.settings.retrieval.max_top_k}")
            opened = await c.open(namespace, "search")
            hits = await flow.search(c.rt, opened.key, query, top_k, opened.filter)
            return SearchResult(
                namespace=namespace,
                results=[
                    SearchHit(
                        document_id=h.chunk.document_id,
                        chunk_id=h.chunk.id,
                        title=h.chunk.title,
                        text=h.chunk.text,
                        score=round(h.score, 6),
                    )
                    for h in hits
                ],
            )

        return await guarded(work)

    @server.tool(
        description=(
            "Ask a question about the documents of `namespace`: an answer that cites its "
            "sources as [n], with the citations. Pass the returned `session_id` back to "
            "continue the conversation."
        )
    )
    async def chat(
        message: Annotated[str, Field(min_length=1)],
        namespace: str = DEFAULT_NAMESPACE,
        session_id: SessionId | None = None,
    ) -> Annotated[CallToolResult, ChatResult]:
        async def work() -> ChatResult:
            c = await call("read", "chat")
            opened = await c.open(namespace, "chat")
            await c.tenants.check_daily(c.principal.tenant)
            answer = await flow.answer(c.rt, opened.key, message, session_id, filter=opened.filter)
            await count_turn(c, answer)
            return ChatResult(
                session_id=answer.session_id,
                answer=answer.text,
                citations=[
                    ChatCitation(
                        index=x.index,
                        document_id=x.document_id,
                        chunk_id=x.chunk_id,
                        title=x.title,
                        text=x.text,
                        score=round(x.score, 6),
                    )
                    for x in answer.citations
                ],
                intent=answer.intent.kind,
            )

        return await guarded(work)

    @server.tool(description="One document of `namespace`: its title, source, chunks, metadata.")
    async def get_document(namespace: str, document_id: str) -> Annotated[CallToolResult, Document]:
        async def work() -> Document:
            c = await call("read")
            opened = await c.open(namespace, "read")
            doc = await c.document(opened, document_id)
            return Document(
                namespace=namespace,
                id=doc.id,
                title=doc.title,
                source=doc.source,
                chunks=doc.chunks,
                content_hash=doc.content_hash,
                created_at=doc.created_at,
                updated_at=doc.updated_at,
                metadata=dict(doc.metadata),
            )

        return await guarded(work)

    async def namespaces() -> Namespaces:
        c = await call("read")
        prefix = f"{c.principal.tenant}/"
        names = [split_namespace_key(k)[1] for k in await c.rt.store.list_namespaces(prefix)]
        out = []
        for name in names:
            if c.principal.may_use(name):
                docs, chunks = await c.rt.store.counts(prefix + name)
                out.append(NamespaceInfo(namespace=name, documents=docs, chunks=chunks))
        return Namespaces(namespaces=out)

    @server.tool(description="The caller's namespaces with their document and chunk counts.")
    async def list_namespaces() -> Annotated[CallToolResult, Namespaces]:
        return await guarded(namespaces)

    @server.resource(
        "ragtide://namespaces",
        name="namespaces",
        description="The caller's namespaces with their document and chunk counts.",
        mime_type="application/json",
    )
    async def namespaces_resource() -> str:
        try:
            return (await namespaces()).model_dump_json()
        except RagtideError as exc:
            raise _resource_error(exc) from None

    @server.resource(
        "ragtide://namespaces/{namespace}",
        name="namespace",
        description="One namespace: its document and chunk counts and its first documents.",
        mime_type="application/json",
    )
    async def namespace_resource(namespace: str) -> str:
        try:
            c = await call("read")
            opened = await c.open(namespace, _READ)
            await c.rt.require_namespace(opened.key)
            docs, chunks = await c.rt.store.counts(opened.key)
            listed = await c.rt.store.list_documents(opened.key, limit=_PREVIEW_DOCUMENTS)
            if opened.filter:
                listed = [d for d in listed if opened.filter.matches(d.id, d.metadata)]
        except RagtideError as exc:
            raise _resource_error(exc) from None
        return orjson.dumps(
            {
                "namespace": namespace,
                "documents": docs,
                "chunks": chunks,
                "first_documents": [{"id": d.id, "title": d.title} for d in listed],
            }
        ).decode()

    return server


_READ: Action = "read"


def _quiet_server() -> MCPServer[Any]:
    """An ``MCPServer``, without the root logging handler its constructor installs."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return MCPServer(
            "ragtide",
            title="Ragtide",
            version=__version__,
            instructions=(
                "Search and chat over the caller's own documents. Namespaces partition a "
                "tenant's documents; 'default' is used when none is given."
            ),
            warn_on_duplicate_tools=False,
        )
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


# --- the endpoint --------------------------------------------------------------------------


class MCPEndpoint:
    """The ASGI endpoint at ``/mcp``: authenticate, then hand the request to the SDK."""

    def __init__(self, app: FastAPI, server: MCPServer[Any], security: TransportSecuritySettings):
        self.app = app
        self.server = server
        self.security = security
        self.manager: StreamableHTTPSessionManager | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """A fresh session manager per app lifespan (one can only run once)."""
        self.server.streamable_http_app(
            streamable_http_path=MCP_PATH,
            stateless_http=True,
            json_response=True,
            transport_security=self.security,
        )
        manager = self.server.session_manager
        async with manager.run():
            self.manager = manager
            try:
                yield
            finally:
                self.manager = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # pragma: no cover - routes only match http here
            return
        rt = getattr(self.app.state, "runtime", None)
        manager = self.manager
        try:
            if rt is None or not rt.started or manager is None:
                raise BackendUnavailable("the service is starting", retry_after=1)
            who = await self._authenticate(scope)
        except RagtideError as exc:
            await _error(exc)(scope, receive, send)
            return
        scope["ragtide.principal"] = who
        tenant_var.set(who.tenant)
        token = _caller.set(who)
        try:
            await manager.handle_request(scope, receive, send)
        finally:
            _caller.reset(token)

    async def _authenticate(self, scope: Scope) -> Principal:
        header = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        try:
            who: Principal = await self.app.state.auth.authenticate(header)
        except RagtideError as exc:
            TENANT_REJECTIONS.labels("unknown", exc.code).inc()
            raise
        return who


def _error(exc: RagtideError) -> Any:
    headers: dict[str, str] = {}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, int(-(-retry_after // 1))))
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="ragtide"'
    return error_response(status_for(exc), exc.code, exc.message, headers or None)


def security(settings: Settings | None) -> TransportSecuritySettings:
    """DNS-rebinding protection where it matters: an open (no credential) loopback server.

    With authentication on, every request needs a bearer credential that a rebound page
    does not have, and deployed replicas are reached under names the SDK cannot know.
    """
    if settings is None or settings.auth.enabled:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    host = settings.http.host
    hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*", f"{host}:*"]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=hosts,
        allowed_origins=[f"http://{h}" for h in hosts] + [f"https://{h}" for h in hosts],
    )
