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
