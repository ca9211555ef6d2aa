"""capacity.json's database tier: when the shared database, not the pods, saturates."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ragtide.planner.capacity import Capacity, DatabaseCapacity, default_capacity


def _with_database(**database: object) -> Capacity:
    raw = default_capacity().model_dump()
    raw["database"] = database
    return Capacity.model_validate(raw)


def test_no_database_tier_bounds_nothing() -> None:
    capacity = default_capacity()
    assert capacity.database is None
    assert capacity.database_cpu_seconds_per_request == 0.0
    assert capacity.database_saturation_rps is None
    assert capacity.max_useful_replicas() is None


def test_database_saturation_is_its_cores_over_the_mix_cost() -> None:
    # chat 0.75 x 2 ms + search 0.25 x 10 ms = 4 ms of database CPU per request.
    capacity = _with_database(
        cores=2, target_utilization=0.5, cpu_seconds_per_request={"chat": 0.002, "search": 0.01}
    )
    assert capacity.database_cpu_seconds_per_request == pytest.approx(0.004)
    assert capacity.database_saturation_rps == pytest.approx(2 * 0.5 / 0.004)  # 250 req/s
    per_replica = capacity.saturation_rps  # ~18.5 req/s for the example mix
    assert capacity.max_useful_replicas() == int(250 // per_replica) == 13
    # Throttled pods serve less each: more of them fit under the same database.
    throttled = capacity.max_useful_replicas(cpu_limit_milli=100)
    assert throttled is not None and throttled > 13


def test_a_costly_database_still_allows_one_replica() -> None:
    capacity = _with_database(cores=0.1, cpu_seconds_per_request={"search": 1.0})
    assert capacity.database_saturation_rps == pytest.approx(0.1 * 0.7 / 0.25)
    assert capacity.max_useful_replicas() == 1


def test_a_free_database_bounds_nothing() -> None:
    capacity = _with_database(cores=4, cpu_seconds_per_request={"search": 0.0})
    assert capacity.database_saturation_rps is None


@pytest.mark.parametrize(
    ("database", "message"),
    [
        ({"cores": 4, "cpu_seconds_per_request": {"upload": 0.1}}, "unknown endpoints"),
        ({"cores": 0, "cpu_seconds_per_request": {"search": 0.1}}, "cores"),
        ({"cores": 4, "cpu_seconds_per_request": {"search": -1}}, "cannot be negative"),
        ({"cores": 4, "cpu_seconds_per_request": {}}, "cpu_seconds_per_request"),
    ],
)
def test_invalid_database_tier_names_the_problem(database: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValidationError, match=message):
        _with_database(**database)


def test_database_capacity_is_exported() -> None:
    assert DatabaseCapacity(cores=1, cpu_seconds_per_request={"search": 0.001}).cores == 1
