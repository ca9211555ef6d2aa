"""A tenant's record: who it is, its limits, and how its answers are shaped.

The same model validates ``PUT /v1/tenants/{id}`` bodies and the declarative tenant
files ``ragtide tenants apply -f DIR`` reconciles (YAML or JSON, one tenant a file)::

    id: acme
    name: Acme Corp
    quotas: {search_per_second: 20, documents: 50000}
    retrieval: {top_k: 8}
    retriever: {use: acme-search, config: {boost: 2.0}}
    chat_model:
      use: openai
      config: {base_url: "https://llm.acme.example/v1", model: gpt-4o-mini,
               api_key: "${env:ACME_LLM_KEY}"}
    system_prompt: "Answer as Acme's support desk."
    grounding: strip            # annotate (default), strip or decline unsupported answers
    tools: [search, calculator] # tool plugins (ragtide.tools) its chat model may call
    policies:
      - {use: groups, config: {field: acl_groups}}

Secrets are never stored: a config value ``${env:NAME}`` or ``${file:/path}`` is kept as
that reference and resolved by ``resolve_secrets`` when the tenant's runtime is built.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ragtide.errors import ConfigError
from ragtide.settings import ComponentSpec
from ragtide.types import validate_tenant

__all__ = [
    "QuotaOverrides",
    "RetrievalOverrides",
    "TenantConfig",
    "resolve_secrets",
]

_SECRET_REF = re.compile(r"^\$\{(env|file):([^}]+)\}$")
_SECRETISH = re.compile(r"(api_?key|secret|password|token)$", re.IGNORECASE)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QuotaOverrides(_Strict):
    """Any field of ``settings.tenants.quotas`` (0 means unlimited)."""

    search_per_second: float | None = Field(None, ge=0)
    chat_per_second: float | None = Field(None, ge=0)
    write_per_second: float | None = Field(None, ge=0)
    burst_seconds: float | None = Field(None, gt=0)
    chat_turns_per_day: int | None = Field(None, ge=0)
    llm_tokens_per_day: int | None = Field(None, ge=0)
    documents: int | None = Field(None, ge=0)
    stored_bytes: int | None = Field(None, ge=0)
    namespaces: int | None = Field(None, ge=0)
    keys: int | None = Field(None, ge=0)


class RetrievalOverrides(_Strict):
    top_k: int | None = Field(None, gt=0, le=100, description="Chunks given to the chat model.")
    fusion: str | None = Field(None, description="convex, rrf, keyword or vector.")
    vector_weight: float | None = Field(None, ge=0, le=1)
    candidates: int | None = Field(None, gt=0, le=1000)


class TenantConfig(_Strict):
    id: str = Field(description="DNS-label id; what credentials name.")
    name: str = Field("", max_length=200)
    disabled: bool = Field(False, description="Every credential of a disabled tenant gets 401.")
    quotas: QuotaOverrides = QuotaOverrides()
    retrieval: RetrievalOverrides = RetrievalOverrides()
    retriever: ComponentSpec | None = Field(None, description="A retriever plugin by name.")
    chat_model: ComponentSpec | None = Field(None, description="A chat model plugin by name.")
    intent: ComponentSpec | None = None
    system_prompt: str | None = Field(None, max_length=8000)
    grounding: Literal["annotate", "strip", "decline"] | None = Field(
        None,
        description="What to do with answers the documents do not support (chat.grounding): "
        "annotate (report), strip (drop unsupported sentences) or decline.",
    )
    tools: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="Tool plugins (ragtide.tools) the tenant's chat model may call, by name; "
        "none by default. Used only with a chat model that can call tools (openai).",
    )
    policies: list[ComponentSpec] = Field(default_factory=list, max_length=16)

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        try:
            return validate_tenant(value)
        except Exception as exc:
            raise ValueError(str(exc)) from None

    @field_validator("retriever", "chat_model", "intent")
    @classmethod
    def _no_plain_secrets(cls, spec: ComponentSpec | None) -> ComponentSpec | None:
        if spec is not None:
            _refuse_plain_secrets(spec.config, spec.use)
        return spec

    @field_validator("policies")
    @classmethod
    def _no_plain_secrets_in_policies(cls, specs: list[ComponentSpec]) -> list[ComponentSpec]:
        for spec in specs:
            _refuse_plain_secrets(spec.config, spec.use)
        return specs

    @field_validator("tools")
    @classmethod
    def _unique_tools(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError("each tool may be named once")
        return names

    def plugin_names(self) -> list[str]:
        specs = [self.retriever, self.chat_model, self.intent, *self.policies]
        return [s.use for s in specs if s is not None] + list(self.tools)

    def chat_overrides(self) -> dict[str, Any]:
        """The fields of ``settings.chat`` this tenant sets."""
        return {} if self.grounding is None else {"grounding": self.grounding}


def _refuse_plain_secrets(value: Any, plugin: str, path: str = "", key: str = "") -> None:
    """Refuse any value under a secret-looking key (at any depth, in mappings and lists)
    that is not a ``${env:…}``/``${file:…}`` reference, whatever its type."""
    if isinstance(value, dict):
        for k, v in value.items():
            _refuse_plain_secrets(v, plugin, f"{path}{k}.", str(k))
        return
    if isinstance(value, list):
        for i, v in enumerate(value):
            _refuse_plain_secrets(v, plugin, f"{path[:-1]}[{i}].", key)
        return
    if not _SECRETISH.search(key) or value is None or value == "":
        return
    if isinstance(value, str) and _SECRET_REF.match(value):
        return
    raise ValueError(
        f"{plugin}: config.{path[:-1]} looks like a secret: give it by reference, "
        "as ${env:NAME} or ${file:/path}, never in plain text"
    )


def resolve_secrets(value: Any) -> Any:
    """Replace every ``${env:NAME}`` / ``${file:/path}`` string in ``value`` (recursively).

    The one place secret references are read. A missing variable or file is a
    ``ConfigError`` naming the reference, never the value.
    """
    if isinstance(value, dict):
        return {k: resolve_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_secrets(v) for v in value]
    if not isinstance(value, str):
        return value
    match = _SECRET_REF.match(value)
    if match is None:
        return value
    kind, name = match.groups()
    if kind == "env":
        if name not in os.environ:
            raise ConfigError(f"secret reference ${{env:{name}}}: the variable is not set")
        return os.environ[name]
    try:
        return Path(name).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"secret reference ${{file:{name}}}: {exc.strerror}") from None
