"""The metrics pipeline between the pods and the HPA: what the controller can see, and when.

Three paths, each with its own delay (spec §7):

* **CPU** through metrics-server: the kubelet is scraped every ``metric_resolution``
  seconds; a sample is the mean CPU over the ``metric_resolution`` seconds before the
  scrape, stamped with the scrape time. A pod has a sample once it has run for a full
  window; during start-up it burns ``startup_cpu`` ("hot CPU").
* **Custom metrics** through Prometheus and prometheus-adapter: every pod's
  ``/metrics`` is scraped every ``scrape_interval`` seconds from container start.
  ``http_requests_per_second`` is ``rate(http_requests_total[rate_window])``, computed
  as ``(last - first) / (t_last - t_first)`` over the scrapes in the window (no
  extrapolation); a pod needs two scrapes in the window to have a series at all, so
  a new pod is *missing* first and then reports its (low) rate. ``http_requests_in_flight``
  is the gauge at the last scrape. The adapter queries Prometheus on each HPA sync.
* **KEDA**: the queue length is read live on each HPA sync, or the value cached on
  KEDA's last polling loop with ``use_cached_metrics``.

The functions here are pure: they read per-second histories kept by the replay.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "PipelineParams",
    "PodTimes",
    "cpu_sample",
    "gauge_sample",
    "last_tick",
    "rate_sample",
]


@dataclass(frozen=True, slots=True)
class PipelineParams:
    """Signal-delay parameters; defaults are upstream's or common Prometheus setups."""

    hpa_sync_period: float = 15.0  # --horizontal-pod-autoscaler-sync-period
    hpa_sync_offset: float = 0.0  # phase of the HPA's syncs in the trace
    metric_resolution: float = 15.0  # metrics-server --metric-resolution (upstream manifests)
    scrape_interval: float = 30.0  # Prometheus scrape interval of the ServiceMonitor
    scrape_offset: float = 0.0  # phase of the scrapes
    rate_window: float = 120.0  # rate(...[2m]) in the adapter's metricsQuery
    keda_use_cached_metrics: bool = False  # trigger option useCachedMetrics


@dataclass(frozen=True, slots=True)
class PodTimes:
    """When a simulated pod started its container and became Ready (seconds)."""

    start: float
    ready_at: float


def last_tick(now: float, period: float, offset: float = 0.0) -> float:
    """The latest time ``offset + k * period`` that is not after ``now``."""
    return math.floor((now - offset) / period) * period + offset


def _ready_second(pod: PodTimes) -> int:
    return math.ceil(pod.ready_at)


def cpu_sample(
    pod: PodTimes,
    now: float,
    resolution: float,
    cpu_prefix: Sequence[float],
    startup_cpu: float,
) -> tuple[int, float] | None:
    """``(mean millicores, timestamp)`` of the pod's latest metrics-server sample, if any.

    ``cpu_prefix[k]`` is the summed CPU of a ready pod over seconds ``[0, k)``.
    """
    stamp = int(last_tick(now, resolution))
    window = int(resolution)
    begin = stamp - window
    if begin < pod.start or begin < 0:
        return None
    ready = min(max(_ready_second(pod), begin), stamp)
    total = startup_cpu * (ready - begin) + (cpu_prefix[stamp] - cpu_prefix[ready])
    return round(total / window), float(stamp)


def _counter(pod: PodTimes, at: int, served_prefix: Sequence[float]) -> float:
    ready = max(_ready_second(pod), 0)
    return served_prefix[at] - served_prefix[ready] if at > ready else 0.0


def rate_sample(
    pod: PodTimes,
    now: float,
    params: PipelineParams,
    served_prefix: Sequence[float],
) -> int | None:
    """The pod's ``rate(http_requests_total[window])`` in milli req/s, or ``None`` (no series).

    ``served_prefix[k]`` is the number of requests one ready pod served in ``[0, k)``.
    """
    last = last_tick(now, params.scrape_interval, params.scrape_offset)
    scrapes = []
    t = last
    while t > now - params.rate_window and t >= pod.start and t >= 0:
        scrapes.append(int(t))
        t -= params.scrape_interval
    if len(scrapes) < 2:
        return None
    newest, oldest = scrapes[0], scrapes[-1]
    delta = _counter(pod, newest, served_prefix) - _counter(pod, oldest, served_prefix)
    return round(1000 * delta / (newest - oldest))


def gauge_sample(
    pod: PodTimes,
    now: float,
    params: PipelineParams,
    gauge: Sequence[float],
) -> int | None:
    """The pod's gauge (milli) at the last scrape, 0 before it was Ready, ``None`` if unscraped.

    ``gauge[k]`` is the value of a ready pod during second ``k``; a scrape at time ``s``
    reads the last completed second, ``s - 1``.
    """
    last = int(last_tick(now, params.scrape_interval, params.scrape_offset))
    if last < pod.start or last < 1:
        return None
    return round(1000 * gauge[last - 1]) if last - 1 >= _ready_second(pod) else 0
