"""capacity.json: schema validation, the shipped example, derived throughput."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragtide.errors import ConfigError
from ragtide.planner.capacity import EXAMPLE_PATH, default_capacity, load_capacity


def _example() -> dict:  # type: ignore[type-arg]
    return json.loads(EXAMPLE_PATH.read_text())  # type: ignore[no-any-return]


def test_defaults_are_the_documented_example_file() -> None:
    assert default_capacity() == load_capacity(EXAMPLE_PATH)
    assert "ragtide bench capacity" in default_capacity().source


def test_mix_throughput_is_the_harmonic_mean() -> None:
    capacity = default_capacity()
    assert capacity.saturation_rps == pytest.approx(1 / (0.75 / 16 + 0.25 / 40))
    assert capacity.cpu_seconds_per_request == pytest.approx(0.0125)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("endpoints", "chat", "share"), 0.5, "shares must sum to 1"),
        (("schema_version",), 2, "schema_version"),
        (("endpoints", "chat", "saturation_rps"), 15.0, "below saturation_rps"),
        (("replica", "startup_seconds"), -1, "startup_seconds"),
        (("endpoints", "search", "latency", 0, "p99_ms"), 10, "p99_ms must be at least p50_ms"),
    ],
)
def test_invalid_capacity_names_the_problem(
    tmp_path: Path, path: tuple[str | int, ...], value: object, message: str
) -> None:
    data = _example()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    file = tmp_path / "capacity.json"
    file.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=message):
        load_capacity(file)


def test_unreadable_capacity_file(tmp_path: Path) -> None:
    file = tmp_path / "capacity.json"
    file.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read"):
        load_capacity(file)
