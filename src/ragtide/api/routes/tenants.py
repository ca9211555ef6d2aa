"""Tenants, their API keys and their usage (the admin scope).

The bootstrap admin key manages every tenant; a key with the ``admin`` scope manages its
own tenant only (its keys and usage) and gets 404 for any other, as if it did not exist.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from starlette.responses import Response

from ragtide.api.deps import JSONResponse, call, json_body, json_body_schema
from ragtide.api.errors import responses
from ragtide.api.schemas import NAMESPACE_PATTERN, TenantPath
from ragtide.audit import audit
from ragtide.auth.keys import new_key
from ragtide.errors import Forbidden, InvalidRequest, KeyNotFound, TenantNotFound
from ragtide.tenant_config import TenantConfig
from ragtide.tenants import parse_tenant_config
from ragtide.types import (
    DEFAULT_TENANT,
    ApiKeyRecord,
    Principal,
    Scope,
    TenantRecord,
    split_namespace_key,
    validate_tenant,
)

router = APIRouter(prefix="/v1/tenants", tags=["tenants"])


class KeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    scopes: list[Scope] = Field(min_length=1, max_length=3, description="read, write, admin.")
    namespaces: list[Annotated[str, StringConstraints(pattern=NAMESPACE_PATTERN)]] | None = Field(
        None, min_length=1, max_length=1000, description="Limit the key to these namespaces."
    )
    expires_at: float | None = Field(
        None, description="Unix time after which the key fails (in the future)."
    )
    description: str = Field("", max_length=200)


def render_tenant(record: TenantRecord, *, secret: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": record.id,
        "config": dict(record.config),
        "version": record.version,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }
    if secret:
        out["webhook_secret"] = record.webhook_secret
    return out


def render_key(key: ApiKeyRecord) -> dict[str, Any]:
    return {
        "id": key.id,
        "tenant": key.tenant,
        "prefix": key.prefix,
        "scopes": list(key.scopes),
        "namespaces": None if key.namespaces is None else list(key.namespaces),
        "description": key.description,
        "created_at": key.created_at,
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
    }


def _platform(who: Principal) -> None:
    if not who.platform_admin:
        raise Forbidden("only the admin key manages tenants")


def _own(who: Principal, tenant: str) -> None:
    """A tenant's admin sees only its own tenant (others: not found)."""
    validate_tenant(tenant)
    if not who.platform_admin and who.tenant != tenant:
        raise TenantNotFound(tenant)


_ADMIN = responses(401, 403, 404, 422, 500, 503)


def _tenant_body_schema() -> dict[str, Any]:
    """A ``TenantConfig``; ``id`` may be left out (it is the path's)."""
    schema = TenantConfig.model_json_schema()
    schema["required"] = [f for f in schema.get("required", []) if f != "id"]
    if not schema["required"]:
        del schema["required"]
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        }
    }


@router.get("", responses=responses(401, 403, 500, 503))
async def list_tenants(request: Request) -> Response:
    c = await call(request, "admin")
    _platform(c.principal)
    records = await c.tenants.store.list_tenants()
    return JSONResponse({"tenants": [render_tenant(r, secret=False) for r in records]})


@router.put(
    "/{tenant}",
    openapi_extra=_tenant_body_schema(),
    responses={
        201: {"description": "Created."},
        **responses(401, 403, 413, 415, 422, 500, 503),
    },
)
async def put_tenant(tenant: TenantPath, request: Request) -> Response:
    """Create or replace a tenant record (201 when created)."""
    c = await call(request, "admin")
    _platform(c.principal)
    validate_tenant(tenant)
    body = await json_body(request, _TenantBody)
    data = body.model_dump(exclude_unset=True)
    if data.setdefault("id", tenant) != tenant:
        raise InvalidRequest(f"id {data['id']!r} does not match the path's tenant {tenant!r}")
    # strict, as JSON: "5" is not a number, "yes" not a boolean
    config = parse_tenant_config(data, where=f"tenant {tenant!r}")
    _strict_tenant(data, tenant)
    record, created = await c.tenants.put(config)
    audit("tenant.put", c.principal, target_tenant=tenant, version=record.version)
    return JSONResponse(render_tenant(record, secret=True), 201 if created else 200)


def _strict_tenant(data: dict[str, Any], tenant: str) -> None:
    """Refuse what only lax validation accepted: "5" for a number, "yes" for a boolean."""
    try:
        TenantConfig.model_validate_json(orjson.dumps(data), strict=True)
    except ValidationError as exc:
        # 5.0 is an integer in JSON: only text and booleans standing for numbers are refused
        errs = [e for e in exc.errors() if not _whole_float(e)]
        if errs:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in errs
            )
            raise InvalidRequest(f"tenant {tenant!r}: {problems}") from None


def _whole_float(error: Any) -> bool:
    value = error.get("input")
    return isinstance(value, float) and value.is_integer() and error.get("type") == "int_type"


class _TenantBody(BaseModel):
    """A tenant record; validated in full by ``TenantConfig``."""

    model_config = ConfigDict(extra="allow")


@router.get("/{tenant}", responses=_ADMIN)
async def get_tenant(tenant: TenantPath, request: Request) -> Response:
    c = await call(request, "admin")
    _own(c.principal, tenant)
    record = await c.tenants.store.get_tenant(tenant)
    if record is None:
        raise TenantNotFound(tenant)
    return JSONResponse(render_tenant(record, secret=True))


@router.delete("/{tenant}", status_code=204, responses=_ADMIN)
async def delete_tenant(tenant: TenantPath, request: Request) -> Response:
    """Remove a tenant: its keys, and every namespace with all its data."""
    c = await call(request, "admin")
    _platform(c.principal)
    validate_tenant(tenant)
    if tenant == DEFAULT_TENANT:
        raise InvalidRequest("the default tenant cannot be deleted")
    store = c.tenants.store
    if await store.get_tenant(tenant) is None:
        raise TenantNotFound(tenant)
    if not await store.delete_tenant(tenant):  # first: its keys stop working at once
        raise TenantNotFound(tenant)
    c.tenants.forget(tenant)
    rt = c.tenants.base
    names = await rt.store.list_namespaces(f"{tenant}/")
    for key in names:
        await rt.store.delete_namespace(key)
        await rt.memory.delete_namespace(key)
        await rt.documents_changed(key)
    audit(
        "tenant.delete",
        c.principal,
        target_tenant=tenant,
        namespaces=[split_namespace_key(k)[1] for k in names],
    )
    return Response(status_code=204)


@router.post(
    "/{tenant}/keys",
    status_code=201,
    openapi_extra=json_body_schema(KeyRequest),
    responses=responses(401, 403, 404, 413, 415, 422, 500, 503),
)
async def create_key(tenant: TenantPath, request: Request) -> Response:
    """A new API key, shown once in ``key``; only its hash is stored."""
    c = await call(request, "admin")
    _own(c.principal, tenant)
    body = await json_body(request, KeyRequest)
    if tenant != DEFAULT_TENANT and await c.tenants.store.get_tenant(tenant) is None:
        raise TenantNotFound(tenant)
    quotas = await c.tenants.quotas(tenant)
    live = [k for k in await c.tenants.store.list_keys(tenant) if k.revoked_at is None]
    if quotas.keys and len(live) >= quotas.keys:
        raise InvalidRequest(f"this tenant may hold at most {quotas.keys} keys")
    key, record = new_key(
        tenant,
        body.scopes,
        namespaces=body.namespaces,
        expires_at=body.expires_at,
        description=body.description,
    )
    await c.tenants.store.add_key(record)
    audit("key.create", c.principal, target_tenant=tenant, key_id=record.id)
    return JSONResponse({**render_key(record), "key": key}, 201)


@router.get("/{tenant}/keys", responses=_ADMIN)
async def list_keys(tenant: TenantPath, request: Request) -> Response:
    c = await call(request, "admin")
    _own(c.principal, tenant)
    keys = await c.tenants.store.list_keys(tenant)
    return JSONResponse({"keys": [render_key(k) for k in keys]})


@router.delete("/{tenant}/keys/{key_id}", status_code=204, responses=_ADMIN)
async def revoke_key(tenant: TenantPath, key_id: str, request: Request) -> Response:
    """Revoke a key: refused by this replica at once, by every replica within
    ``auth.cache_seconds``."""
    c = await call(request, "admin")
    _own(c.principal, tenant)
    store = c.tenants.store
    found = [k for k in await store.list_keys(tenant) if k.id == key_id]
    if not found or not await store.revoke_key(tenant, key_id, time.time()):
        raise KeyNotFound(tenant, key_id)
    request.app.state.auth.forget(found[0].hash)
    audit("key.revoke", c.principal, target_tenant=tenant, key_id=key_id)
    return Response(status_code=204)


@router.get("/{tenant}/usage", responses=_ADMIN)
async def usage(tenant: TenantPath, request: Request) -> Response:
    """What the tenant stores and has used today, next to its quotas."""
    c = await call(request, "admin")
    _own(c.principal, tenant)
    stored = await c.tenants.store.tenant_usage(tenant)
    quotas = await c.tenants.quotas(tenant)
    today = await c.tenants.today(tenant)
    keys = [k for k in await c.tenants.store.list_keys(tenant) if k.revoked_at is None]
    return JSONResponse(
        {
            "tenant": tenant,
            "namespaces": stored.namespaces,
            "documents": stored.documents,
            "chunks": stored.chunks,
            "stored_bytes": stored.bytes,
            "keys": len(keys),
            "today": today,
            "quotas": quotas.model_dump(),
        }
    )


__all__ = ["router"]
