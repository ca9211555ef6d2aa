"""Latency model: Erlang C, M/M/c response times, the tabulated mix, the fluid queue."""

from __future__ import annotations

import math

import pytest

from ragtide.planner.capacity import Capacity, default_capacity
from ragtide.planner.queueing import RHO_MAX, ServiceModel, erlang_c, mmc_response_cdf


def test_erlang_c_known_values() -> None:
    assert erlang_c(1, 0.5) == pytest.approx(0.5)  # M/M/1: P(wait) = rho
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(3, 3.5) == 1.0


def test_mm1_response_time_is_exponential() -> None:
    cdf = mmc_response_cdf(1, service_rate=10.0, arrival_rate=6.0)
    for t in (0.05, 0.2, 1.0):
        assert cdf(t) == pytest.approx(1 - math.exp(-(10 - 6) * t))


@pytest.fixture(scope="module")
def model() -> ServiceModel:
    return ServiceModel.from_capacity(default_capacity(), cpu_limit_milli=500)


def test_latency_grows_with_utilization(model: ServiceModel) -> None:
    p99 = [model.latency(r)[1] for r in (0.1, 0.5, 0.8, 0.9, 0.99)]
    assert p99 == sorted(p99) and p99[-1] > 2 * p99[0]


def test_needed_replicas_for_200_rps_within_800_ms(model: ServiceModel) -> None:
    assert model.replicas_needed(200, 800) == 12
    assert model.replicas_needed(0, 800) == 0


def test_overload_builds_a_backlog_and_drops_past_the_timeout(model: ServiceModel) -> None:
    second = model.step(offered=200, ready=4, backlog=0.0, timeout_s=30)
    capacity = 4 * model.replica_rps
    assert second.served == pytest.approx(capacity)
    assert second.backlog == pytest.approx(200 - capacity)
    assert second.p99_ms > model.latency(RHO_MAX)[1]
    full = model.step(offered=200, ready=4, backlog=capacity * 30, timeout_s=30)
    assert full.dropped == pytest.approx(200 - capacity)  # what exceeds a 30 s wait


def test_no_ready_replica_drops_everything(model: ServiceModel) -> None:
    second = model.step(offered=10, ready=0, backlog=5.0, timeout_s=30)
    assert (second.dropped, second.served) == (15.0, 0.0)
    assert math.isnan(second.p99_ms)


def test_cpu_limit_caps_throughput() -> None:
    capacity = default_capacity()
    tight = ServiceModel.from_capacity(capacity, cpu_limit_milli=120)
    assert tight.replica_rps == pytest.approx((120 - 20) / 12.5)
    assert tight.cpu_at(100) == 120


def test_mmc_path_without_measured_curves() -> None:
    data = default_capacity().model_dump()
    for endpoint in data["endpoints"].values():
        endpoint["latency"] = ()
    model = ServiceModel.from_capacity(Capacity.model_validate(data))
    p50, p99, mean = model.latency(0.5)
    assert 0 < p50 < mean < p99
    assert model.latency(0.95)[1] > p99
