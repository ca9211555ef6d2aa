from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from ragtide.settings import Settings, default_data_dir


def test_environment_nesting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RAGTIDE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RAGTIDE_HTTP__PORT", "9123")
    monkeypatch.setenv("RAGTIDE_CHAT_MODEL__USE", "openai")
    monkeypatch.setenv("RAGTIDE_CHAT_MODEL__CONFIG__MODEL", "gpt-test")
    s = Settings()
    assert s.data_dir == tmp_path
    assert s.http.port == 9123
    assert s.chat_model.use == "openai" and s.chat_model.config == {"model": "gpt-test"}


def test_explicit_values_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGTIDE_HTTP__PORT", "9123")
    assert Settings(http={"port": 7000}).http.port == 7000  # type: ignore[arg-type]


def test_bad_values_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGTIDE_HTTP__PORT", "not-a-port")
    with pytest.raises(ValidationError):
        Settings()


def test_unknown_fields_fail() -> None:
    with pytest.raises(ValidationError):
        Settings(colour="blue")  # type: ignore[call-arg]


def test_default_data_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / "ragtide"


def test_defaults_are_the_embedded_stack() -> None:
    s = Settings()
    assert (s.store.use, s.embedder.use, s.retriever.use, s.chat_model.use, s.memory.use) == (
        "sqlite",
        "static",
        "hybrid",
        "extractive",
        "memory",
    )


def test_store_url_picks_the_backend() -> None:
    s = Settings(store={"url": "postgresql://u@db:5432/rag"})  # type: ignore[arg-type]
    assert (s.store.use, s.store.config["url"]) == ("postgres", "postgresql://u@db:5432/rag")
    s = Settings(store={"url": "sqlite:///var/lib/ragtide/x.db"})  # type: ignore[arg-type]
    assert (s.store.use, s.store.config["path"]) == ("sqlite", "/var/lib/ragtide/x.db")
    with pytest.raises(ValidationError):
        Settings(store={"url": "mysql://x"})  # type: ignore[arg-type]


def test_store_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGTIDE_STORE__URL", "postgresql://postgres@127.0.0.1:5433/ragtide")
    assert Settings().store.use == "postgres"


def test_redis_url_moves_shared_state_to_redis() -> None:
    s = Settings(redis={"url": "redis://cache:6379/1"})  # type: ignore[arg-type]
    for spec in (s.memory, s.answer_cache, s.rate_limiter):
        assert (spec.use, spec.config["url"]) == ("redis", "redis://cache:6379/1")


def test_an_explicit_component_beats_the_redis_url() -> None:
    s = Settings(redis={"url": "redis://cache:6379/1"}, memory={"use": "memory"})  # type: ignore[arg-type]
    assert s.memory.use == "memory" and s.answer_cache.use == "redis"
