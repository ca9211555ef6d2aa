"""The model server tier: latency versus load, and its per-second serving step.

One model replica has ``parallel`` slots; a call holds a slot for ``S`` seconds (prefill
plus decode, ``ModelServerCapacity.seconds_per_call``), so a replica completes
``parallel / S`` calls per second (Little's law). The Service spreads calls evenly over
the ready replicas and each replica queues what its slots cannot take (llama.cpp's
``requests_deferred``, vLLM's waiting queue). Two regimes, as for the API
(``queueing``):

* **Below saturation** each replica is an M/D/c queue (``c = parallel``, service time
  ``S``, every call the same size). Its wait is approximated from the M/M/c one: the
  probability of waiting is Erlang C, and the waiting time of a deterministic service is
  half the exponential one (``(1 + cv²) / 2`` with ``cv = 0``), so
  ``P(wait > t) = C(c, a) · exp(-2 (c/S - λ) t)``; a call takes ``S + wait``.
* **At or over saturation** a fluid queue: calls the slots cannot take wait in a
  backlog for ``backlog / capacity`` seconds, and those that would wait past the API's
  timeout for a model call (``chatModelConfig.timeout_s``, less ``S``) fail.

Requests in the tier (running plus waiting) are what the chart's autoscaler counts:
``running = completions/s x S`` and ``waiting = calls/s x mean wait`` (or the backlog).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ragtide.planner.capacity import ModelServerCapacity
from ragtide.planner.queueing import RHO_MAX, erlang_c

__all__ = ["ModelSecond", "ModelServerModel"]


@dataclass(frozen=True, slots=True)
class ModelSecond:
    """One second of the model tier: calls completed, failed, waiting, in the tier, latency."""

    served: float
    dropped: float
    backlog: float
    rho: float
    in_system: float
    busy_slots: float
    p50_ms: float
    p99_ms: float
    mean_ms: float


@dataclass(frozen=True, slots=True)
class ModelServerModel:
    """Per-replica slots, the seconds a call holds one, the share of turns that call."""

    share: float
    parallel: int
    seconds_per_call: float
    startup_seconds: float

    @classmethod
    def from_capacity(cls, capacity: ModelServerCapacity) -> ModelServerModel:
        return cls(
            share=capacity.share,
            parallel=capacity.parallel,
            seconds_per_call=capacity.seconds_per_call,
            startup_seconds=capacity.startup_seconds,
        )

    @property
    def replica_calls_per_second(self) -> float:
        """Calls one replica completes per second with every slot busy."""
        return self.parallel / self.seconds_per_call

    def wait_seconds(self, rho: float) -> tuple[float, float, float]:
        """``(p50, p99, mean)`` of the wait for a slot at utilization ``rho`` (M/D/c)."""
        rho = min(max(rho, 0.0), RHO_MAX)
        if rho <= 0:
            return 0.0, 0.0, 0.0
        c, s = self.parallel, self.seconds_per_call
        offered = rho * c
        waits = erlang_c(c, offered)
        decay = 2 * (c - offered) / s  # 2 (c mu - lambda), the deterministic halving

        def quantile(q: float) -> float:
            return math.log(waits / (1 - q)) / decay if waits > 1 - q else 0.0

        return quantile(0.5), quantile(0.99), waits / decay

    def latency_ms(self, rho: float) -> tuple[float, float, float]:
        """``(p50, p99, mean)`` of a call in ms (wait plus prefill and decode)."""
        s = self.seconds_per_call
        return tuple(1000 * (s + w) for w in self.wait_seconds(rho))  # type: ignore[return-value]

    def in_system_per_replica(self, rho: float) -> float:
        """Running plus waiting calls of one replica in steady state at ``rho`` (Little)."""
        rho = min(max(rho, 0.0), RHO_MAX)
        rate = rho * self.replica_calls_per_second
        return rate * (self.seconds_per_call + self.wait_seconds(rho)[2])

    def max_rho_for(self, p99_slo_ms: float) -> float:
        """The highest utilization whose p99 call latency meets the SLO (0 if none)."""
        if self.latency_ms(0.0)[1] > p99_slo_ms:
            return 0.0
        if self.latency_ms(RHO_MAX)[1] <= p99_slo_ms:
            return RHO_MAX
        lo, hi = 0.0, RHO_MAX
        for _ in range(50):
            mid = (lo + hi) / 2
            if self.latency_ms(mid)[1] <= p99_slo_ms:
                lo = mid
            else:
                hi = mid
        return lo

    def replicas_needed(self, turns_per_second: float, p99_slo_ms: float) -> int:
        """Fewest ready replicas whose calls meet the SLO in steady state at a turn rate."""
        calls = turns_per_second * self.share
        if calls <= 0:
            return 0
        rho = self.max_rho_for(p99_slo_ms)
        if rho <= 0:
            return 10**9
        return math.ceil(calls / (rho * self.replica_calls_per_second) - 1e-9)

    def step(self, calls: float, ready: int, backlog: float, timeout_s: float) -> ModelSecond:
        """Serve one second of ``calls`` with ``ready`` replicas (fluid queue over capacity).

        Without a ready replica the Service has no endpoint: every call fails at once.
        """
        if ready <= 0:
            nan = math.nan
            return ModelSecond(0.0, calls + backlog, 0.0, math.inf, 0.0, 0.0, nan, nan, nan)
        s = self.seconds_per_call
        capacity = ready * self.replica_calls_per_second
        waiting = backlog + calls
        served = min(waiting, capacity)
        remaining = waiting - served
        dropped = max(0.0, remaining - capacity * max(timeout_s - s, 0.0))
        remaining -= dropped
        rho = calls / capacity
        busy = served * s
        if remaining > 1e-9:
            wait_ms = 1000 * remaining / capacity
            p50, p99, mean = (1000 * s + wait_ms,) * 3
            in_system = busy + remaining
        else:
            remaining = 0.0
            p50, p99, mean = self.latency_ms(rho)
            in_system = busy + calls * (mean / 1000 - s)
        return ModelSecond(
            served=served,
            dropped=dropped,
            backlog=remaining,
            rho=rho,
            in_system=in_system,
            busy_slots=busy / (ready * self.parallel),
            p50_ms=p50,
            p99_ms=p99,
            mean_ms=mean,
        )
