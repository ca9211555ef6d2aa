"""Latency versus load for one replica, and the per-second serving step of the fleet.

Two regimes:

* **Below saturation** the latency distribution of each endpoint comes from the
  measured curve in ``capacity.json`` (a log-normal fitted through the interpolated
  p50 and p99) or, without a curve, from an M/M/c queue (``concurrency`` servers).
  The request mix is a mixture of the endpoints; its p50/p99 are found by bisection.
  Everything is tabulated once over the utilization ``rho`` so the replay only
  interpolates.
* **At or over saturation** a fluid queue takes over: what the ready replicas cannot
  serve waits in a backlog, every request waits ``backlog / capacity`` seconds on
  top of the latency at saturation, and requests that would wait longer than the
  request timeout are dropped.

The per-replica capacity is the mix's saturation throughput, lowered when the CPU
limit cannot sustain it (``(limit - idle) / cpu per request``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ragtide.planner.capacity import Capacity, EndpointCapacity

__all__ = [
    "RHO_MAX",
    "SecondResult",
    "ServiceModel",
    "erlang_c",
    "mixture_quantile",
    "mmc_response_cdf",
]

RHO_MAX = 0.995
_Z99 = 2.3263478740408408  # standard normal quantile of 0.99


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability that an arrival waits in an M/M/c queue (Erlang C); 1 when overloaded."""
    if offered_load <= 0:
        return 0.0
    if offered_load >= servers:
        return 1.0
    blocking = 1.0
    for k in range(1, servers + 1):
        blocking = offered_load * blocking / (k + offered_load * blocking)
    rho = offered_load / servers
    return blocking / (1 - rho * (1 - blocking))


def mmc_response_cdf(
    servers: int, service_rate: float, arrival_rate: float
) -> Callable[[float], float]:
    """CDF of the M/M/c response time (wait plus exponential service), time in seconds."""
    mu, lam = service_rate, arrival_rate
    wait_prob = erlang_c(servers, lam / mu)
    theta = servers * mu - lam

    def cdf(t: float) -> float:
        if t <= 0:
            return 0.0
        if abs(theta - mu) < 1e-12:
            tail_wait = (1 + mu * t) * math.exp(-mu * t)
        else:
            tail_wait = (mu * math.exp(-theta * t) - theta * math.exp(-mu * t)) / (mu - theta)
        return 1.0 - ((1 - wait_prob) * math.exp(-mu * t) + wait_prob * tail_wait)

    return cdf


def _lognormal_cdf(p50: float, p99: float) -> Callable[[float], float]:
    mu = math.log(p50)
    sigma = max((math.log(p99) - mu) / _Z99, 1e-6)

    def cdf(t: float) -> float:
        if t <= 0:
            return 0.0
        return 0.5 * (1 + math.erf((math.log(t) - mu) / (sigma * math.sqrt(2))))

    return cdf


def mixture_quantile(
    cdfs: Sequence[Callable[[float], float]], weights: Sequence[float], q: float, hi: float
) -> float:
    """The ``q`` quantile of a weighted mixture of distributions, by bisection on [0, hi]."""
    lo = 0.0
    while sum(w * f(hi) for f, w in zip(cdfs, weights, strict=True)) < q:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        if sum(w * f(mid) for f, w in zip(cdfs, weights, strict=True)) < q:
            lo = mid
        else:
            hi = mid
    return hi


def _endpoint_at(
    endpoint: EndpointCapacity, rho: float
) -> tuple[Callable[[float], float], float, float]:
    """``(cdf in ms, mean ms, a generous upper bound in ms)`` at utilization ``rho``."""
    rate = rho * endpoint.saturation_rps
    if endpoint.latency:
        rates = [p.rps for p in endpoint.latency]
        p50 = float(np.interp(rate, rates, [p.p50_ms for p in endpoint.latency]))
        p99 = float(np.interp(rate, rates, [p.p99_ms for p in endpoint.latency]))
        sigma = max((math.log(p99) - math.log(p50)) / _Z99, 1e-6)
        return _lognormal_cdf(p50, p99), p50 * math.exp(sigma**2 / 2), 10 * p99
    servers = endpoint.concurrency
    mu = endpoint.saturation_rps / servers
    lam = min(rate, RHO_MAX * endpoint.saturation_rps)
    cdf_s = mmc_response_cdf(servers, mu, lam)
    mean_s = 1 / mu + erlang_c(servers, lam / mu) / (servers * mu - lam)
    return (lambda t_ms: cdf_s(t_ms / 1000.0)), mean_s * 1000, 50 * mean_s * 1000


@dataclass(frozen=True, slots=True)
class SecondResult:
    """One second of the fleet: what was served, dropped, left waiting, and how fast."""

    served: float
    dropped: float
    backlog: float
    rho: float
    p50_ms: float
    p99_ms: float
    inflight_per_pod: float
    cpu_per_pod_milli: float


@dataclass(frozen=True, eq=False)
class ServiceModel:
    """Per-replica capacity, CPU and the tabulated latency of the request mix."""

    replica_rps: float
    cpu_per_request_milli: float
    idle_cpu_milli: float
    startup_cpu_milli: float
    cpu_limit_milli: float | None
    rho_grid: np.ndarray = field(repr=False)
    p50_grid: np.ndarray = field(repr=False)
    p99_grid: np.ndarray = field(repr=False)
    mean_grid: np.ndarray = field(repr=False)

    @classmethod
    def from_capacity(
        cls, capacity: Capacity, cpu_limit_milli: float | None = None, points: int = 200
    ) -> ServiceModel:
        cpu_per_request = capacity.cpu_seconds_per_request * 1000
        idle = capacity.replica.idle_cpu_millicores
        replica_rps = capacity.saturation_rps
        if cpu_limit_milli is not None and cpu_per_request > 0:
            replica_rps = min(replica_rps, max(cpu_limit_milli - idle, 0) / cpu_per_request)
        endpoints = list(capacity.endpoints.values())
        weights = [e.share for e in endpoints]
        rho_grid = np.linspace(0.0, RHO_MAX, points)
        p50, p99, mean = [], [], []
        for rho in rho_grid:
            parts = [_endpoint_at(e, float(rho)) for e in endpoints]
            cdfs = [p[0] for p in parts]
            hi = max(p[2] for p in parts)
            p50.append(mixture_quantile(cdfs, weights, 0.5, hi))
            p99.append(mixture_quantile(cdfs, weights, 0.99, hi))
            mean.append(sum(w * p[1] for w, p in zip(weights, parts, strict=True)))
        return cls(
            replica_rps=replica_rps,
            cpu_per_request_milli=cpu_per_request,
            idle_cpu_milli=idle,
            startup_cpu_milli=capacity.replica.startup_cpu_millicores,
            cpu_limit_milli=cpu_limit_milli,
            rho_grid=rho_grid,
            p50_grid=np.asarray(p50),
            p99_grid=np.asarray(p99),
            mean_grid=np.asarray(mean),
        )

    def latency(self, rho: float) -> tuple[float, float, float]:
        """``(p50, p99, mean)`` in ms for a replica at utilization ``rho`` (held at RHO_MAX).

        Linear interpolation on the uniform ``rho_grid`` (plain Python: it runs every second).
        """
        last = len(self.rho_grid) - 1
        position = min(max(rho, 0.0), RHO_MAX) / RHO_MAX * last
        low = min(int(position), last - 1)
        frac = position - low
        p50, p99, mean = self._table
        return (
            p50[low] + (p50[low + 1] - p50[low]) * frac,
            p99[low] + (p99[low + 1] - p99[low]) * frac,
            mean[low] + (mean[low + 1] - mean[low]) * frac,
        )

    @property
    def _table(self) -> tuple[list[float], list[float], list[float]]:
        cached: tuple[list[float], list[float], list[float]] | None = self.__dict__.get("_cache")
        if cached is None:
            cached = (self.p50_grid.tolist(), self.p99_grid.tolist(), self.mean_grid.tolist())
            object.__setattr__(self, "_cache", cached)
        return cached

    def cpu_at(self, rps_per_pod: float) -> float:
        """CPU (millicores) of a ready replica serving ``rps_per_pod``, capped at the limit."""
        cpu = self.idle_cpu_milli + rps_per_pod * self.cpu_per_request_milli
        return min(cpu, self.cpu_limit_milli) if self.cpu_limit_milli is not None else cpu

    def max_rho_for(self, p99_slo_ms: float) -> float:
        """The highest utilization whose steady-state p99 stays within the SLO (0 if none)."""
        ok = self.rho_grid[self.p99_grid <= p99_slo_ms]
        return float(ok.max()) if ok.size else 0.0

    def replicas_needed(self, rps: float, p99_slo_ms: float) -> int:
        """Fewest ready replicas that serve ``rps`` within the SLO in steady state."""
        rho = self.max_rho_for(p99_slo_ms)
        if rps <= 0:
            return 0
        if rho <= 0:
            return 10**9
        return math.ceil(rps / (rho * self.replica_rps) - 1e-9)

    def step(self, offered: float, ready: int, backlog: float, timeout_s: float) -> SecondResult:
        """Serve one second of ``offered`` requests with ``ready`` replicas (fluid queue)."""
        if ready <= 0:
            nan = math.nan
            return SecondResult(0.0, offered + backlog, 0.0, math.inf, nan, nan, 0.0, 0.0)
        capacity = ready * self.replica_rps
        waiting = backlog + offered
        served = min(waiting, capacity)
        remaining = waiting - served
        dropped = max(0.0, remaining - capacity * timeout_s)
        remaining -= dropped
        rho = offered / capacity
        if remaining > 1e-9:
            wait_ms = remaining / capacity * 1000
            p50, p99, mean = (v + wait_ms for v in self.latency(RHO_MAX))
        else:
            remaining = 0.0
            p50, p99, mean = self.latency(rho)
        per_pod = served / ready
        inflight = per_pod * mean / 1000 + remaining / ready
        return SecondResult(
            served, dropped, remaining, rho, p50, p99, inflight, self.cpu_at(per_pod)
        )
