"""Shared, expensive planner runs (each computed once per session)."""

from __future__ import annotations

import pytest

from ragtide.planner.capacity import Capacity, default_capacity
from ragtide.planner.plan import Plan, make_plan
from ragtide.planner.queueing import ServiceModel
from ragtide.planner.simulate import SimulationParams
from ragtide.planner.traffic import busy_day, diurnal
from ragtide.planner.values import ChartValues, load_values


@pytest.fixture(scope="session")
def capacity() -> Capacity:
    return default_capacity()


@pytest.fixture(scope="session")
def values() -> ChartValues:
    return load_values()


@pytest.fixture(scope="session")
def model(capacity: Capacity, values: ChartValues) -> ServiceModel:
    return ServiceModel.from_capacity(capacity, values.cpu_limit_milli)


@pytest.fixture(scope="session")
def busy_day_plan(values: ChartValues, capacity: Capacity) -> Plan:
    """The issue's scenario: default values, default capacity, starting from 4 replicas."""
    params = SimulationParams(initial_replicas=4)
    return make_plan(busy_day(), values, capacity, params, slo_p99_ms=800, deadline_s=90)


@pytest.fixture(scope="session")
def diurnal_plan(values: ChartValues, capacity: Capacity) -> Plan:
    return make_plan(diurnal(), values, capacity, SimulationParams(), slo_p99_ms=800, search=False)
