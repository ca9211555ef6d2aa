"""``ragtide tenants`` and ``ragtide keys``: tenants and API keys from the command line.

``tenants apply -f DIR`` reconciles declarative tenant files (YAML or JSON, one tenant a
file; the chart's ``tenants`` values feed it from a Job) into the store every replica
reads. Every file is validated first, with errors naming the file, the line and the
field; if any file is bad, nothing is changed. Tenants are then created or updated
(unchanged ones are left alone); ``--prune`` also deletes tenants no file names.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from ragtide.auth.keys import new_key
from ragtide.components import DocumentStore, TenantStore
from ragtide.errors import ConfigError, RagtideError
from ragtide.registry import GROUPS, Registry
from ragtide.settings import Settings
from ragtide.tenant_config import TenantConfig
from ragtide.types import DEFAULT_TENANT

__all__ = ["FileError", "apply_tenants", "load_tenant_files", "run_with_store"]

T = TypeVar("T")
_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True, slots=True)
class FileError:
    path: Path
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


def _line_of(node: yaml.Node | None, loc: Sequence[Any]) -> int | None:
    """The 1-based line of the field at ``loc``: its key's line (as far down as it exists)."""
    line = None if node is None else node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            entry = next(((k, v) for k, v in node.value if getattr(k, "value", None) == part), None)
            if entry is None:
                return line
            line, node = entry[0].start_mark.line + 1, entry[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _plugin_fields(config: TenantConfig) -> list[tuple[tuple[Any, ...], str]]:
    """(location in the file, plugin name) of every plugin a tenant names."""
    out: list[tuple[tuple[Any, ...], str]] = []
    for field in ("retriever", "chat_model", "intent"):
        spec = getattr(config, field)
        if spec is not None:
            out.append(((field, "use"), spec.use))
    out.extend((("policies", i, "use"), spec.use) for i, spec in enumerate(config.policies))
    return out


def load_tenant_files(
    directory: Path, *, installed: Callable[[str], bool], allowed: Sequence[str] | None
) -> tuple[list[tuple[Path, TenantConfig]], list[FileError]]:
    """Parse and validate every tenant file under ``directory`` (no I/O beyond reading)."""
    if not directory.is_dir():
        return [], [FileError(directory, None, "", "not a directory")]
    files = sorted(p for p in directory.rglob("*") if p.suffix in _SUFFIXES and p.is_file())
    good: list[tuple[Path, TenantConfig]] = []
    errors: list[FileError] = []
    seen: dict[str, Path] = {}
    for path in files:
        if any(part.startswith("..") for part in path.relative_to(directory).parts):
            continue  # Kubernetes ConfigMap mounts keep their payload in ..data/ (symlinked)
        text = path.read_text(encoding="utf-8")
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            errors.append(FileError(path, line, "", f"not valid YAML/JSON: {exc}"))
            continue
        if not isinstance(data, dict):
            errors.append(FileError(path, 1, "", "a tenant file holds one mapping"))
            continue
        try:
            config = TenantConfig.model_validate(data)
        except ValidationError as exc:
            for e in exc.errors():
                loc = e["loc"]
                errors.append(
                    FileError(path, _line_of(node, loc), ".".join(map(str, loc)), e["msg"])
                )
            continue
        for loc, name in _plugin_fields(config):
            where = _line_of(node, loc), ".".join(map(str, loc))
            if allowed is not None and name not in allowed:
                errors.append(FileError(path, *where, f"plugin {name!r} is not allowed"))
            elif not installed(name):
                errors.append(FileError(path, *where, f"no installed plugin named {name!r}"))
        if config.id in seen:
            errors.append(
                FileError(path, _line_of(node, ["id"]), "id", f"also defined in {seen[config.id]}")
            )
        seen[config.id] = path
        good.append((path, config))
    return good, errors


async def apply_tenants(
    store: TenantStore, configs: Sequence[TenantConfig], *, prune: bool = False
) -> list[tuple[str, str]]:
    """Create or update each tenant; returns (tenant, created|updated|unchanged|deleted)."""
    import secrets

    results = []
    for config in configs:
        data = config.model_dump(mode="json", exclude_defaults=True)
        data["id"] = config.id
        existing = await store.get_tenant(config.id)
        if existing is not None and dict(existing.config) == data:
            results.append((config.id, "unchanged"))
            continue
        _, created = await store.put_tenant(config.id, data, secrets.token_urlsafe(32))
        results.append((config.id, "created" if created else "updated"))
    if prune:
        wanted = {c.id for c in configs}
        for record in await store.list_tenants():
            if record.id not in wanted and record.id != DEFAULT_TENANT:
                await store.delete_tenant(record.id)
                results.append((record.id, "deleted"))
    return results


def run_with_store(settings: Settings, fn: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``fn(store)`` on the configured document store (which keeps tenants)."""

    async def run() -> T:
        store = Registry.from_entry_points(settings.plugins.allow).build(
            DocumentStore, settings.store, data_dir=settings.data_dir
        )
        if not isinstance(store, TenantStore):
            raise ConfigError(f"the store {settings.store.use!r} cannot keep tenants")
        start = getattr(store, "start", None)
        if start is not None:
            await start()
        try:
            return await fn(store)
        finally:
            close = getattr(store, "aclose", None)
            if close is not None:
                await close()

    return asyncio.run(run())


def _installed(registry: Registry) -> Callable[[str], bool]:
    names = {name for kind in GROUPS for name in registry.names(kind)}
    return names.__contains__


def cmd_tenants(settings: Settings, action: str, directory: Path | None, prune: bool) -> int:
    if action == "list":
        records = run_with_store(settings, lambda s: s.list_tenants())
        for r in records:
            print(json.dumps({"id": r.id, "version": r.version, "config": r.config}))
        return 0
    if directory is None:
        print("ragtide: tenants apply needs -f DIR", file=sys.stderr)
        return 2
    registry = Registry.from_entry_points(settings.plugins.allow)
    good, errors = load_tenant_files(
        directory, installed=_installed(registry), allowed=settings.tenants.allowed_plugins
    )
    if errors:
        for error in errors:
            print(f"ragtide: {error}", file=sys.stderr)
        print(f"ragtide: {len(errors)} error(s); nothing was changed", file=sys.stderr)
        return 1
    results = run_with_store(
        settings, lambda s: apply_tenants(s, [c for _, c in good], prune=prune)
    )
    for tenant, outcome in results:
        print(json.dumps({"tenant": tenant, "outcome": outcome}))
    return 0


def cmd_keys(
    settings: Settings,
    action: str,
    tenant: str,
    *,
    scopes: Sequence[str] = (),
    namespaces: Sequence[str] | None = None,
    expires_in_s: float | None = None,
    description: str = "",
    key_id: str | None = None,
) -> int:
    async def create(store: Any) -> dict[str, Any]:
        if tenant != DEFAULT_TENANT and await store.get_tenant(tenant) is None:
            raise ConfigError(f"tenant {tenant!r} does not exist")
        expires = None if expires_in_s is None else time.time() + expires_in_s
        key, record = new_key(
            tenant, scopes, namespaces=namespaces, expires_at=expires, description=description
        )
        await store.add_key(record)
        return {
            "id": record.id,
            "tenant": tenant,
            "key": key,
            "prefix": record.prefix,
            "scopes": list(record.scopes),
            "expires_at": record.expires_at,
        }

    async def listing(store: Any) -> list[dict[str, Any]]:
        return [
            {
                "id": k.id,
                "prefix": k.prefix,
                "scopes": list(k.scopes),
                "namespaces": k.namespaces,
                "revoked_at": k.revoked_at,
                "expires_at": k.expires_at,
            }
            for k in await store.list_keys(tenant)
        ]

    async def revoke(store: Any) -> bool:
        return bool(await store.revoke_key(tenant, key_id or "", time.time()))

    try:
        if action == "create":
            print(json.dumps(run_with_store(settings, create)))
        elif action == "list":
            for row in run_with_store(settings, listing):
                print(json.dumps(row))
        elif not run_with_store(settings, revoke):
            print(f"ragtide: no live key {key_id!r} in tenant {tenant!r}", file=sys.stderr)
            return 1
    except RagtideError as exc:
        print(f"ragtide: {exc.message}", file=sys.stderr)
        return 1
    return 0
