"""The OpenAPI document, made to tell the truth about the server it describes.

FastAPI writes most of it from the routes (their parameters, ``responses=``); this module
finishes it:

- request bodies that routes read themselves (``json_body``) carry pydantic schemas whose
  nested models sit under ``$defs``: those are hoisted into ``components/schemas`` and every
  ``$ref`` (and discriminator mapping) is rewritten to point there;
- the credential: a bearer ``securityScheme``, required by every route but the probes;
- the limits that come from settings (``top_k``, message length) are stated as numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from ragtide.api.schemas import DOCUMENT_ID_PATTERN, NOT_BLANK_PATTERN
from ragtide.settings import Settings

__all__ = ["PUBLIC_PATHS", "finish_openapi", "install_openapi"]

# Routes that answer without a credential.
PUBLIC_PATHS = frozenset({"/healthz", "/ready", "/metrics"})

_DEFS = "#/$defs/"
_COMPONENTS = "#/components/schemas/"
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Make ``app.openapi()`` return the finished document (built once, then cached)."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if getattr(app, "_ragtide_openapi", None) is None:
            app.openapi_schema = None
            doc = finish_openapi(build(), settings)
            app.openapi_schema = doc
            app._ragtide_openapi = doc  # type: ignore[attr-defined]
        found: dict[str, Any] = app._ragtide_openapi  # type: ignore[attr-defined]
        return found

    app.openapi = openapi  # type: ignore[method-assign]


def finish_openapi(doc: dict[str, Any], settings: Settings) -> dict[str, Any]:
    components = doc.setdefault("components", {})
    schemas: dict[str, Any] = components.setdefault("schemas", {})
    for path, item in doc.get("paths", {}).items():
        for method in _METHODS:
            op = item.get(method)
            if op is None:
                continue
            for media in op.get("requestBody", {}).get("content", {}).values():
                if "schema" in media:
                    media["schema"] = _hoist(media["schema"], schemas, top=True)
            if path in PUBLIC_PATHS:
                op["security"] = []
            else:
                op["security"] = [{"bearer": []}]
    components["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (rt_...), the bootstrap admin key, or a JWT.",
        }
    }
    _apply_settings(schemas, settings)
    return doc


def _hoist(schema: dict[str, Any], schemas: dict[str, Any], *, top: bool) -> dict[str, Any]:
    """Move ``schema``'s ``$defs`` (and a titled top-level model) into ``schemas``."""
    schema = dict(schema)
    renames: dict[str, str] = {}
    defs: dict[str, Any] = schema.pop("$defs", {})
    for name, sub in defs.items():
        renames[name] = _place(name, sub, schemas)
    for name in defs:
        target = renames[name]
        schemas[target] = _rewrite(schemas[target], renames)
    schema = _rewrite(schema, renames)
    title = schema.get("title")
    if top and isinstance(title, str) and schema.get("type") == "object":
        return {"$ref": _COMPONENTS + _place(title, schema, schemas)}
    return schema


def _place(name: str, schema: Any, schemas: dict[str, Any]) -> str:
    """The component name for ``schema``: ``name``, or ``name_2``... when that is taken."""
    candidate, n = name, 1
    while candidate in schemas and schemas[candidate] != schema:
        n += 1
        candidate = f"{name}_{n}"
    schemas[candidate] = schema
    return candidate


def _rewrite(value: Any, renames: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _rewrite(v, renames) for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite(v, renames) for v in value]
    if isinstance(value, str) and value.startswith(_DEFS):
        name = value[len(_DEFS) :]
        return _COMPONENTS + renames.get(name, name)
    return value


def _apply_settings(schemas: dict[str, Any], settings: Settings) -> None:
    def prop(model: str, field: str) -> dict[str, Any] | None:
        found = schemas.get(model, {}).get("properties", {}).get(field)
        return found if isinstance(found, dict) else None

    top_k = prop("SearchRequest", "top_k")
    if top_k is not None:
        top_k["maximum"] = settings.retrieval.max_top_k
    for model in ("ChatRequest", "ChatTaskRequest"):
        message = prop(model, "message")
        if message is not None:
            message["maxLength"] = settings.chat.max_message_chars
            message["pattern"] = NOT_BLANK_PATTERN
    # Rules that validators (not types) enforce, stated for clients.
    inline_id = prop("InlineDocument", "id")
    if inline_id is not None:
        inline_id["pattern"] = DOCUMENT_ID_PATTERN
