"""The metrics pipeline: what the HPA sees, and when."""

from __future__ import annotations

import itertools

from ragtide.planner.adapter import (
    PipelineParams,
    PodTimes,
    cpu_sample,
    gauge_sample,
    last_tick,
    rate_sample,
)


def _prefix(per_second: list[float]) -> list[float]:
    return [0.0, *itertools.accumulate(per_second)]


def test_last_tick() -> None:
    assert (last_tick(44, 15), last_tick(45, 15), last_tick(44, 30, 10)) == (30, 45, 40)


def test_cpu_sample_mixes_startup_cpu_until_ready() -> None:
    cpu = _prefix([100.0] * 120)
    old = PodTimes(start=-3600, ready_at=-3575)
    assert cpu_sample(old, 100, 15, cpu, startup_cpu=400) == (100, 90.0)
    young = PodTimes(start=60, ready_at=80)  # window [75, 90): 5 s hot, 10 s ready
    assert cpu_sample(young, 95, 15, cpu, startup_cpu=400) == (
        round((5 * 400 + 10 * 100) / 15),
        90.0,
    )
    assert cpu_sample(PodTimes(80, 100), 95, 15, cpu, startup_cpu=400) is None  # no full window


def test_rate_needs_two_scrapes_and_lags_the_load() -> None:
    params = PipelineParams(scrape_interval=30, rate_window=120)
    served = _prefix([10.0] * 300 + [20.0] * 300)  # per ready pod
    pod = PodTimes(start=-3600, ready_at=-3575)
    assert rate_sample(pod, 299, params, served) == 10_000
    # scrapes at 240, 270, 300, 330 straddle the step: (60 * 10 + 30 * 20) / 90 s
    assert rate_sample(pod, 330, params, served) == 13_333
    new = PodTimes(start=295, ready_at=320)
    assert rate_sample(new, 300, params, served) is None  # one scrape only: missing
    # scrapes at 300 (counter 0, not ready yet) and 330 (10 s of 20 req/s): 200 / 30 s
    assert rate_sample(new, 330, params, served) == 6_667


def test_gauge_reads_the_last_completed_second() -> None:
    params = PipelineParams(scrape_interval=30)
    gauge = [float(s) for s in range(100)]
    pod = PodTimes(start=0, ready_at=10)
    assert gauge_sample(pod, 65, params, gauge) == 59_000
    assert gauge_sample(PodTimes(start=0, ready_at=40), 35, params, gauge) == 0  # not ready yet
    assert gauge_sample(PodTimes(start=40, ready_at=60), 45, params, gauge) is None
