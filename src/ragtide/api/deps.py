"""Small helpers the routes share: the runtime, JSON responses, content-type checks.

Dependencies are ``async def`` on purpose: FastAPI runs plain ``def`` dependencies in a
thread pool, a thread hop per request that cost more than the whole search.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from ragtide.audit import audit
from ragtide.auth.authenticator import Authenticator
from ragtide.errors import (
    BackendUnavailable,
    DocumentNotFound,
    DocumentRejected,
    Forbidden,
    InvalidRequest,
    RagtideError,
    UnsupportedMediaType,
)
from ragtide.ingest.pipeline import Ingestor, IngestOutcome
from ragtide.observability import (
    TENANT_REJECTIONS,
    TENANT_REQUESTS,
    labelled,
    tenant_label,
    tenant_var,
)
from ragtide.runtime import Runtime
from ragtide.tenants import Opened, RouteClass, TenantDirectory
from ragtide.types import Action, DocumentInfo, Principal, Scope

__all__ = [
    "Call",
    "JSONResponse",
    "body_errors",
    "call",
    "directory",
    "ingestor",
    "json_body",
    "json_body_schema",
    "principal",
    "require_json",
    "runtime",
    "single_form_fields",
]


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


async def runtime(request: Request) -> Runtime:
    rt: Runtime | None = getattr(request.app.state, "runtime", None)
    if rt is None or not rt.started:
        raise BackendUnavailable("the service is starting", retry_after=1)
    return rt


async def ingestor(request: Request) -> Ingestor:
    await runtime(request)
    ing: Ingestor = request.app.state.ingestor
    return ing


async def require_json(request: Request) -> None:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"expected Content-Type application/json, got {content_type or 'none'}"
        )


logger = logging.getLogger(__name__)


def directory(request: Request) -> TenantDirectory:
    found: TenantDirectory = request.app.state.tenants
    return found


async def principal(request: Request) -> Principal:
    """Who is calling, from the ``Authorization`` header only (once per request)."""
    known: Principal | None = request.scope.get("ragtide.principal")
    if known is not None:
        return known
    await runtime(request)
    auth: Authenticator = request.app.state.auth
    try:
        found = await auth.authenticate(request.headers.get("authorization"))
    except RagtideError as exc:
        TENANT_REJECTIONS.labels("unknown", exc.code).inc()
        raise
    request.scope["ragtide.principal"] = found
    tenant_var.set(found.tenant)
    return found


@dataclass(frozen=True, slots=True)
class Call:
    """An authenticated call: who, the tenant runtime that answers, the directory."""

    principal: Principal
    rt: Runtime
    tenants: TenantDirectory

    async def open(self, namespace: str, action: Action) -> Opened:
        return await self.tenants.open(self.rt, self.principal, namespace, action)

    async def document(self, opened: Opened, document_id: str) -> DocumentInfo:
        """A document the caller may see (its policies' filter applies), or not found."""
        await self.rt.require_namespace(opened.key)
        doc = await self.rt.store.get_document(opened.key, document_id)
        if doc is None or (opened.filter and not opened.filter.matches(doc.id, doc.metadata)):
            raise DocumentNotFound(opened.name, document_id)
        return doc

    async def upload(
        self,
        ingestor: Ingestor,
        opened: Opened,
        filename: str,
        data: bytes,
        document_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> tuple[list[IngestOutcome], bool]:
        """Ingest one file within the tenant's quotas: (outcomes, whether anything changed).

        A file refused whole raises its reason; what changed is audited. Every edge (HTTP,
        gRPC) uploads through this.
        """
        tenant = self.principal.tenant
        if not await self.rt.store.namespace_exists(opened.key):
            await self.tenants.check_storage(tenant, new_namespace=True)
        outcomes = await ingestor.ingest_bytes(
            opened.key, filename, data, document_id, metadata, await self.tenants.budget(tenant)
        )
        landed = [o for o in outcomes if o.status != "rejected"]
        if not landed and outcomes:  # the whole file was refused: answer with its reason
            raise outcomes[0].error or DocumentRejected("document rejected")
        changed = any(o.status in ("created", "updated") for o in landed)
        if changed:
            audit(
                "documents.put",
                self.principal,
                namespace=opened.name,
                documents=[o.document_id for o in landed if o.status != "unchanged"][:100],
            )
        return outcomes, changed


async def call(request: Request, scope: Scope, route: RouteClass | None = None) -> Call:
    """Authenticate, require ``scope``, take the tenant's rate for ``route``."""
    who = await principal(request)
    tenants = directory(request)
    if not who.has_scope(scope):
        TENANT_REJECTIONS.labels(tenant_label(who.tenant), "forbidden").inc()
        raise Forbidden(f"this credential lacks the {scope!r} scope")
    if route is not None:
        await tenants.admit(who, route)
        labelled(TENANT_REQUESTS, tenant_label(who.tenant), route).inc()
    return Call(who, await tenants.runtime(who.tenant), tenants)


M = TypeVar("M", bound=BaseModel)


async def json_body(request: Request, model: type[M]) -> M:
    """Parse and validate a JSON body in one pass (pydantic's own JSON parser).

    The hot routes use this instead of a FastAPI body parameter: it skips a ``json.loads``
    into Python objects and a second validation pass; errors are reported the same way.
    """
    await require_json(request)
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(body_errors(exc)) from None


def body_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """A body's validation errors located as FastAPI locates them (``("body", field…)``), so
    that a field named ``query`` or ``path`` is never taken for the location."""
    out: list[dict[str, Any]] = []
    for error in exc.errors(include_url=False):
        found = dict(error)
        if found.get("type") != "json_invalid":
            found["loc"] = ("body", *error.get("loc", ()))
        out.append(found)
    return out


def json_body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a body that ``json_body`` reads."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


def single_form_fields(*names: str) -> Callable[[Request], Awaitable[None]]:
    """A dependency refusing a form that repeats one of ``names`` (422, not the last one).

    FastAPI keeps the last of repeated fields; a second ``file`` would be dropped silently.
    The form is already parsed (and cached on the request) when dependencies run.
    """

    async def check(request: Request) -> None:
        form = await request.form()
        repeated = [name for name in names if len(form.getlist(name)) > 1]
        if repeated:
            raise InvalidRequest(f"{repeated[0]}: send this form field once, not several times")

    return check
