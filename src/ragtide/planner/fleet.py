"""The pods of one Deployment in the replay: created Pending, Running, then Ready.

A new pod is Pending for ``pending`` seconds, then its container starts, and it is
Ready ``startup`` seconds later; a warm pod (created before the replay) is Ready at
once. Scale-down removes not-ready pods first, then the newest (the ReplicaSet's
ranking), and they stop serving at once.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from ragtide.planner.adapter import PodTimes
from ragtide.planner.hpa import Reconciliation

__all__ = ["Fleet", "Pod", "ScaleDecision", "scale_decision"]


@dataclass(slots=True)
class Pod:
    """One pod: its name and when it started and became Ready."""

    name: str
    times: PodTimes


class Fleet:
    """The pods of one Deployment, created and removed by the autoscalers."""

    def __init__(self, prefix: str, pending: float, startup: float) -> None:
        self.prefix, self.pending, self.startup = prefix, pending, startup
        self.pods: list[Pod] = []
        self._serial = 0
        self._ready_times: list[float] = []

    def add(self, created: float, *, warm: bool = False) -> None:
        start = created - 3600 if warm else created + self.pending
        self.pods.append(
            Pod(f"{self.prefix}-{self._serial}", PodTimes(start, start + self.startup))
        )
        self._serial += 1
        self._ready_times = sorted(p.times.ready_at for p in self.pods)

    def resize(self, replicas: int, now: float) -> None:
        while len(self.pods) < replicas:
            self.add(now)
        if len(self.pods) > replicas:
            # ReplicaSet ranking: not-ready before ready, then newest first.
            ranked = sorted(self.pods, key=lambda p: (p.times.ready_at <= now, -p.times.start))
            doomed = {id(p) for p in ranked[: len(self.pods) - replicas]}
            self.pods = [p for p in self.pods if id(p) not in doomed]
            self._ready_times = sorted(p.times.ready_at for p in self.pods)

    def ready(self, now: float) -> int:
        return bisect.bisect_right(self._ready_times, now)


@dataclass(frozen=True, slots=True)
class ScaleDecision:
    """One rescale written by an autoscaler, with the status reasons behind it."""

    t: int
    target: str
    before: int
    after: int
    proposal: int | None
    reasons: tuple[str, ...]


def scale_decision(t: int, target: str, before: int, result: Reconciliation) -> ScaleDecision:
    reasons = tuple(f"{name}={c.reason}" for name, c in result.conditions.items())
    return ScaleDecision(t, target, before, result.desired_replicas, result.proposal, reasons)
