"""The audit log: JSON lines to a file (actor named, never a key) or to the logger."""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from ragtide.audit import audit, configure_audit
from ragtide.auth.keys import new_key
from ragtide.observability import request_id_var
from ragtide.types import Principal


@pytest.fixture(autouse=True)
def unconfigured() -> Iterator[None]:
    configure_audit(None)
    yield
    configure_audit(None)


def key_principal() -> tuple[str, Principal]:
    key, record = new_key("acme", ["write"], now=1_700_000_000.0)
    principal = Principal("acme", f"key:{record.id}", frozenset({"write"}), key_id=record.id)
    return key, principal


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_lines_go_to_the_file_with_the_actor_and_never_the_key(tmp_path: Path) -> None:
    key, principal = key_principal()
    path = tmp_path / "audit" / "log.jsonl"  # the directory is created
    configure_audit(path)
    token = request_id_var.set("req-1")
    try:
        audit("documents.delete", principal, namespace="docs", document_id="d1")
    finally:
        request_id_var.reset(token)
    audit("key.create", principal, target_tenant="beta", key_id="key_x")
    raw = path.read_text(encoding="utf-8")
    assert key not in raw and key[3:] not in raw
    first, second = lines(path)
    assert first["action"] == "documents.delete"
    assert first["tenant"] == "acme"
    assert first["actor"] == principal.subject and first["actor_kind"] == "key"
    assert first["request_id"] == "req-1"
    assert (first["namespace"], first["document_id"]) == ("docs", "d1")
    assert isinstance(first["ts"], float)
    assert second["action"] == "key.create" and second["request_id"] is None
    assert second["target_tenant"] == "beta"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert raw.endswith("\n") and raw.count("\n") == 2


def test_the_file_is_appended_to_across_configurations(tmp_path: Path) -> None:
    _, principal = key_principal()
    path = tmp_path / "log.jsonl"
    configure_audit(path)
    audit("one", principal)
    configure_audit(path)  # reopened (e.g. a second app in the process): appends
    audit("two", principal)
    assert [line["action"] for line in lines(path)] == ["one", "two"]


def test_unconfigured_lines_go_to_the_logger(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "log.jsonl"
    configure_audit(path)
    configure_audit(None)  # back to the log stream: the file gets nothing more
    key, principal = key_principal()
    with caplog.at_level(logging.INFO, logger="ragtide.audit"):
        audit("namespace.create", principal, namespace="docs")
    [record] = [r for r in caplog.records if r.name == "ragtide.audit"]
    entry = record.audit  # type: ignore[attr-defined]
    assert entry["action"] == "namespace.create"
    assert entry["actor"] == principal.subject and entry["namespace"] == "docs"
    assert key not in json.dumps(entry)
    assert path.read_text(encoding="utf-8") == ""


def test_a_failed_write_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_audit(tmp_path / "log.jsonl")
    _, principal = key_principal()

    def broken(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("ragtide.audit.os.write", broken)
    with caplog.at_level(logging.ERROR, logger="ragtide.audit"):
        audit("tenant.put", principal)
    [record] = [r for r in caplog.records if r.name == "ragtide.audit"]
    assert record.levelno == logging.ERROR
    assert record.audit["action"] == "tenant.put"  # type: ignore[attr-defined]
