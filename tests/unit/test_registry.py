from __future__ import annotations

import pytest
from pydantic import BaseModel

from ragtide.builtin.memory import InMemoryMemoryStore
from ragtide.components import MemoryStore, Retriever
from ragtide.errors import PluginError, PluginNotFound
from ragtide.registry import Registry
from ragtide.settings import ComponentSpec


def test_builds_by_name_with_validated_config() -> None:
    registry = Registry({MemoryStore: {"memory": InMemoryMemoryStore}})
    store = registry.build(MemoryStore, ComponentSpec(use="memory", config={"max_turns": 3}))
    assert isinstance(store, InMemoryMemoryStore)


def test_unknown_name_lists_the_choices() -> None:
    registry = Registry({MemoryStore: {"memory": InMemoryMemoryStore}})
    with pytest.raises(PluginNotFound) as info:
        registry.build(MemoryStore, ComponentSpec(use="redis"))
    assert "redis" in str(info.value) and "memory" in str(info.value)
    assert info.value.available == ["memory"]


def test_bad_config_names_the_plugin_and_field() -> None:
    registry = Registry({MemoryStore: {"memory": InMemoryMemoryStore}})
    with pytest.raises(PluginError, match=r"'memory'.*max_turns"):
        registry.build(MemoryStore, ComponentSpec(use="memory", config={"max_turns": -1}))


def test_wrong_protocol_is_refused() -> None:
    class NotARetriever:
        class Config(BaseModel):
            pass

        def __init__(self, config: Config) -> None:
            pass

    registry = Registry({Retriever: {"odd": NotARetriever}})
    with pytest.raises(PluginError, match="does not implement Retriever"):
        registry.build(Retriever, ComponentSpec(use="odd"))


def test_plugin_without_config_model_is_refused() -> None:
    class NoConfig:
        pass

    registry = Registry({Retriever: {"bare": NoConfig}})
    with pytest.raises(PluginError, match="no pydantic Config"):
        registry.build(Retriever, ComponentSpec(use="bare"))


def test_entry_points_register_the_builtins() -> None:
    registry = Registry.from_entry_points()
    names = {(p.kind, p.name) for p in registry.plugins()}
    assert {
        ("DocumentStore", "sqlite"),
        ("Embedder", "static"),
        ("Retriever", "hybrid"),
        ("ChatModel", "extractive"),
        ("MemoryStore", "memory"),
        ("IntentDetector", "rules"),
    } <= names


def test_allow_list_limits_what_loads() -> None:
    registry = Registry.from_entry_points(allow=["sqlite", "memory"])
    assert {p.name for p in registry.plugins()} == {"sqlite", "memory"}
