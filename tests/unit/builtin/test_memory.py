"""Memory budgets: the in-process session store is bounded in bytes (LRU, counted), and the
startup check compares every budget with the container's cgroup memory limit.

(The ``MemoryStore`` contract itself runs in tests/contract/test_stores.py.)
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from ragtide.builtin.memory import SESSION_OVERHEAD_BYTES, InMemoryMemoryStore, turn_bytes
from ragtide.server import (
    BASELINE_BYTES,
    cgroup_memory_limit,
    check_memory_budget,
    memory_budget,
    memory_budget_warning,
)
from ragtide.settings import ComponentSpec, Settings
from ragtide.types import ChatTurn

MiB = 1024 * 1024


def evictions(reason: str, store: str = "sessions") -> float:
    value = REGISTRY.get_sample_value(
        "ragtide_budget_evictions_total", {"store": store, "reason": reason}
    )
    return value or 0.0


def budget_bytes(store: str = "sessions") -> float:
    return REGISTRY.get_sample_value("ragtide_budget_bytes", {"store": store}) or 0.0


def session_bytes(namespace: str, session_id: str, *texts: str) -> int:
    overhead = SESSION_OVERHEAD_BYTES + len(namespace) + len(session_id)
    return overhead + sum(turn_bytes(ChatTurn.user(t)) for t in texts)


def store(**config: int) -> InMemoryMemoryStore:
    return InMemoryMemoryStore(InMemoryMemoryStore.Config(**config))


# --- the session store's byte budget ---------------------------------------------------------


def test_defaults_fit_the_charts_memory_limit_with_the_cache() -> None:
    assert InMemoryMemoryStore.Config().max_bytes == 64 * MiB
    settings = Settings(data_dir=Path("/nonexistent"))
    assert sum(size for _, size in memory_budget(settings)) <= 512 * MiB  # of 1 GiB


def test_a_turn_counts_its_utf8_bytes_plus_an_overhead() -> None:
    assert turn_bytes(ChatTurn.user("é" * 10)) == turn_bytes(ChatTurn.user("e" * 20))
    assert turn_bytes(ChatTurn.user("abc")) - turn_bytes(ChatTurn.user("")) == 3


@pytest.mark.anyio
async def test_used_bytes_follow_appends_trims_and_deletes() -> None:
    memory = store(max_turns=2)
    await memory.append("ns", "s", ChatTurn.user("one"), ChatTurn.user("two"))
    assert memory.used_bytes == session_bytes("ns", "s", "one", "two")
    await memory.append("ns", "s", ChatTurn.user("three"))  # "one" goes (max_turns)
    assert memory.used_bytes == session_bytes("ns", "s", "two", "three")
    await memory.append("ns", "t", ChatTurn.user("x"))
    assert await memory.delete("ns", "s") is True
    assert memory.used_bytes == session_bytes("ns", "t", "x")
    assert await memory.delete_namespace("ns") == 1
    assert memory.used_bytes == 0


@pytest.mark.anyio
async def test_least_recently_used_sessions_are_evicted_past_the_byte_budget() -> None:
    text = "x" * 1000
    one = session_bytes("ns", "s0", text)
    memory = store(max_bytes=3 * one + 10)
    before = evictions("bytes")
    for i in range(3):
        await memory.append("ns", f"s{i}", ChatTurn.user(text))
    assert evictions("bytes") == before
    await memory.load("ns", "s0")  # s0 is now more recent than s1
    await memory.append("ns", "s3", ChatTurn.user(text))
    assert evictions("bytes") == before + 1
    assert await memory.load("ns", "s1") == []  # the least recently used went
    for kept in ("s0", "s2", "s3"):
        assert len(await memory.load("ns", kept)) == 1, kept
    assert memory.used_bytes <= 3 * one + 10


@pytest.mark.anyio
async def test_evicts_by_bytes_not_by_count() -> None:
    memory = store(max_bytes=session_bytes("ns", "big", "x" * 5000) + 100, max_sessions=100)
    for i in range(5):
        await memory.append("ns", f"small{i}", ChatTurn.user("hi"))
    await memory.append("ns", "big", ChatTurn.user("x" * 5000))
    assert [await memory.load("ns", f"small{i}") for i in range(5)] == [[]] * 5
    assert len(await memory.load("ns", "big")) == 1


@pytest.mark.anyio
async def test_a_session_alone_over_the_budget_keeps_its_latest_turns() -> None:
    text = "y" * 1000
    memory = store(max_bytes=session_bytes("ns", "s", text, text, text) + 10)
    before = evictions("bytes")
    for i in range(5):
        await memory.append("ns", "s", ChatTurn.user(f"{i}{text[1:]}"))
    turns = await memory.load("ns", "s", limit=100)
    assert [t.content[0] for t in turns] == ["2", "3", "4"]
    assert evictions("bytes") == before + 2
    assert memory.used_bytes <= session_bytes("ns", "s", text, text, text) + 10


@pytest.mark.anyio
async def test_max_sessions_still_applies_and_is_counted() -> None:
    memory = store(max_sessions=2)
    before = evictions("entries")
    for i in range(3):
        await memory.append("ns", f"s{i}", ChatTurn.user("q"))
    assert evictions("entries") == before + 1
    assert await memory.load("ns", "s0") == []


@pytest.mark.anyio
async def test_the_bytes_gauge_sums_the_live_stores() -> None:
    memory = store()
    before = budget_bytes()
    await memory.append("ns", "s", ChatTurn.user("hello"))
    assert budget_bytes() == before + memory.used_bytes


# --- cgroup limit and the startup check ------------------------------------------------------


def test_cgroup_v2_limit(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text(f"{1024 * MiB}\n")
    assert cgroup_memory_limit(tmp_path) == 1024 * MiB


def test_cgroup_v2_without_a_limit(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text("max\n")
    assert cgroup_memory_limit(tmp_path) is None


def test_cgroup_v1_limit_and_its_unlimited_value(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    v1 = tmp_path / "memory" / "memory.limit_in_bytes"
    v1.write_text(f"{512 * MiB}\n")
    assert cgroup_memory_limit(tmp_path) == 512 * MiB
    v1.write_text("9223372036854771712\n")
    assert cgroup_memory_limit(tmp_path) is None


def test_no_cgroup_files_or_garbage_is_no_limit(tmp_path: Path) -> None:
    assert cgroup_memory_limit(tmp_path) is None
    (tmp_path / "memory.max").write_text("lots\n")
    assert cgroup_memory_limit(tmp_path) is None


def _settings(tmp_path: Path, **parts: ComponentSpec) -> Settings:
    return Settings(data_dir=tmp_path, **parts)  # type: ignore[arg-type]


def test_default_budgets_fit_one_gib(tmp_path: Path) -> None:
    assert memory_budget_warning(_settings(tmp_path), 1024 * MiB) is None
    assert memory_budget_warning(_settings(tmp_path), None) is None  # no limit: no check


def test_budgets_over_the_limit_name_the_settings(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        memory=ComponentSpec(use="memory", config={"max_bytes": 900 * MiB}),
        answer_cache=ComponentSpec(use="memory", config={"max_bytes": 200 * MiB}),
    )
    warning = memory_budget_warning(settings, 1024 * MiB)
    assert warning is not None
    assert "memory.config.max_bytes 900 MiB" in warning
    assert "answer_cache.config.max_bytes 200 MiB" in warning
    assert "RAGTIDE_MEMORY__CONFIG__MAX_BYTES" in warning
    assert "1024 MiB" in warning


def test_stores_in_redis_and_a_disabled_cache_count_nothing(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        memory=ComponentSpec(use="redis", config={"url": "redis://x"}),
        answer_cache=ComponentSpec(use="memory", config={"enabled": False}),
    )
    names = [name for name, _ in memory_budget(settings)]
    assert not any("max_bytes" in name for name in names)


def test_the_embedded_index_is_estimated_by_its_file(tmp_path: Path) -> None:
    (tmp_path / "ragtide.db").write_bytes(b"\0" * 4096)
    parts = dict(memory_budget(_settings(tmp_path)))
    assert parts["process baseline"] == BASELINE_BYTES
    assert [size for name, size in parts.items() if name.startswith("store")] == [4096]


def test_the_embedded_index_counts_at_most_its_budget(tmp_path: Path) -> None:
    (tmp_path / "ragtide.db").write_bytes(b"\0" * (2 * MiB))
    capped = Settings(data_dir=tmp_path, store={"use": "sqlite", "config": {"index_budget_mb": 1}})
    assert dict(memory_budget(capped))["store.config.index_budget_mb"] == MiB
    unlimited = {"use": "sqlite", "config": {"index_budget_mb": 0}}
    parts = memory_budget(Settings(data_dir=tmp_path, store=unlimited))
    assert [size for name, size in parts if name.startswith("store")] == [2 * MiB]
    warning = memory_budget_warning(capped, BASELINE_BYTES + MiB // 2)
    assert warning is not None and "RAGTIDE_STORE__CONFIG__INDEX_BUDGET_MB" in warning


def test_the_startup_check_reads_the_cgroup_and_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "memory.max").write_text(f"{300 * MiB}\n")
    with caplog.at_level(logging.WARNING, logger="ragtide.server"):
        warning = check_memory_budget(_settings(tmp_path), cgroup_root=cgroup)
    assert warning is not None and "memory.config.max_bytes" in warning
    assert [r.getMessage() for r in caplog.records] == [warning]
    (cgroup / "memory.max").write_text(f"{1024 * MiB}\n")
    assert check_memory_budget(_settings(tmp_path), cgroup_root=cgroup) is None
