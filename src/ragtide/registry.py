"""Plugins by name: one entry-point group per role, built from a ``ComponentSpec``.

A plugin is a class with a nested pydantic ``Config`` and ``__init__(config, **deps)``.
Built-in components register through the same entry points as third-party packages
(``pyproject.toml``), so ``ragtide plugins list`` shows both. Tests build a
``Registry`` from a plain mapping instead of patching entry points.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ragtide.access import AccessPolicy
from ragtide.components import (
    AnswerCache,
    ChatModel,
    DocumentStore,
    Embedder,
    IntentDetector,
    MemoryStore,
    RateLimiter,
    ResultStore,
    Retriever,
)
from ragtide.errors import PluginError, PluginNotFound
from ragtide.settings import ComponentSpec
from ragtide.tools.base import Tool

__all__ = ["GROUPS", "PluginInfo", "Registry"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

GROUPS: dict[type, str] = {
    DocumentStore: "ragtide.stores",
    Embedder: "ragtide.embedders",
    Retriever: "ragtide.retrievers",
    IntentDetector: "ragtide.intent",
    ChatModel: "ragtide.chat_models",
    MemoryStore: "ragtide.memory_stores",
    AnswerCache: "ragtide.answer_caches",
    RateLimiter: "ragtide.rate_limiters",
    ResultStore: "ragtide.result_stores",
    AccessPolicy: "ragtide.policies",
    Tool: "ragtide.tools",
}


@dataclass(frozen=True, slots=True)
class PluginInfo:
    kind: str
    name: str
    target: str
    distribution: str


class Registry:
    """Maps (role, name) to a factory class."""

    def __init__(self, factories: Mapping[type, Mapping[str, type | EntryPoint]]) -> None:
        self._factories = {kind: dict(named) for kind, named in factories.items()}
        self._info: list[PluginInfo] = []

    @classmethod
    def from_entry_points(cls, allow: Collection[str] | None = None) -> Registry:
        """Find every installed plugin (or only the names in ``allow``).

        Plugins are imported only when built, so an unused plugin costs no start-up time
        and a broken one fails only where it is used, naming itself.
        """
        factories: dict[type, dict[str, type | EntryPoint]] = {kind: {} for kind in GROUPS}
        infos = []
        installed = entry_points()  # one scan of the installed distributions, not one a group
        for kind, group in GROUPS.items():
            for ep in installed.select(group=group):
                if allow is not None and ep.name not in allow:
                    continue
                factories[kind][ep.name] = ep
                dist = ep.dist.name if ep.dist is not None else "?"
                infos.append(PluginInfo(kind.__name__, ep.name, ep.value, dist))
        registry = cls(factories)
        registry._info = infos
        return registry

    def plugins(self) -> list[PluginInfo]:
        return list(self._info)

    def names(self, kind: type) -> list[str]:
        return sorted(self._factories.get(kind, {}))

    def config_fields(self, kind: type, name: str) -> frozenset[str]:
        """The names a plugin's ``Config`` accepts (empty when it cannot be loaded)."""
        try:
            factory = self._load(kind, name)
        except (PluginError, PluginNotFound):
            return frozenset()
        config_model = getattr(factory, "Config", None)
        if isinstance(config_model, type) and issubclass(config_model, BaseModel):
            return frozenset(config_model.model_fields)
        return frozenset()

    def _load(self, kind: type, name: str) -> Any:
        try:
            factory = self._factories[kind][name]
        except KeyError:
            raise PluginNotFound(kind.__name__, name, self.names(kind)) from None
        if isinstance(factory, EntryPoint):
            try:
                factory = self._factories[kind][name] = factory.load()
            except Exception as exc:  # a broken third-party package must name itself
                raise PluginError(
                    f"{kind.__name__} plugin {name!r} ({factory.value}) failed to import"
                ) from exc
        return factory

    def build(self, kind: type[T], spec: ComponentSpec, **deps: Any) -> T:
        """Validate ``spec.config`` with the plugin's ``Config`` and build the component."""
        factory = self._load(kind, spec.use)
        config_model = getattr(factory, "Config", None)
        if not (isinstance(config_model, type) and issubclass(config_model, BaseModel)):
            raise PluginError(f"{kind.__name__} plugin {spec.use!r} has no pydantic Config")
        try:
            config = config_model.model_validate(spec.config)
        except ValidationError as exc:
            raise PluginError(
                f"invalid config for {kind.__name__} plugin {spec.use!r}: "
                + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            ) from None
        component = factory(config, **deps)
        if not isinstance(component, kind):
            raise PluginError(f"plugin {spec.use!r} does not implement {kind.__name__}")
        logger.debug("component built", extra={"kind": kind.__name__, "plugin": spec.use})
        return component
