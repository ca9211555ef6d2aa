"""capacity.json: schema validation, the shipped example, derived throughput."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragtide.errors import ConfigError
from ragtide.planner.capacity import EXAMPLE_PATH, default_capacity, load_capacity
from ragtide.planner.queueing import ServiceModel


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


BENCH = Path(__file__).parents[2] / "bench" / "results" / "capacity.json"


def test_a_500m_limit_serves_about_half_of_an_unthrottled_core() -> None:
    measured = load_capacity(BENCH)  # one unthrottled core: ~1000m at saturation
    assert 990 < measured.saturation_cpu_millicores < 1010
    limited = measured.at_cpu_limit(500)
    assert limited.saturation_rps / measured.saturation_rps == pytest.approx(0.5, abs=0.01)
    chat, chat_limited = measured.endpoints["chat"], limited.endpoints["chat"]
    assert chat_limited.latency[0].rps == pytest.approx(chat.latency[0].rps * 0.4967, rel=1e-3)
    assert chat_limited.latency[0].p99_ms == chat.latency[0].p99_ms  # same at equal utilization
    # start-up loads models at a full core: twice as long at 500m
    assert limited.replica.startup_seconds == pytest.approx(2 * measured.replica.startup_seconds)
    assert limited.replica.startup_cpu_millicores == 500
    assert limited.at_cpu_limit(500) == limited  # idempotent
    model = ServiceModel.from_capacity(limited, 500)
    assert model.replica_rps == pytest.approx(limited.saturation_rps, rel=1e-6)


def test_a_replica_that_never_reaches_its_limit_is_unchanged() -> None:
    llm_bound = default_capacity()  # 18.8 req/s x 12.5 ms + 20m idle = 255m < 500m
    assert llm_bound.at_cpu_limit(500) is llm_bound
    assert llm_bound.at_cpu_limit(None) is llm_bound
    assert llm_bound.at_cpu_limit(200).saturation_rps < llm_bound.saturation_rps
