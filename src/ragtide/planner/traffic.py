"""Traffic traces at 1 s resolution: a CSV loader and synthetic shapes.

CSV format (header required; ``#`` lines are comments)::

    timestamp,rps[,queue_arrivals]
    0,50
    60,200,3.5

``timestamp`` is seconds (any origin, ascending) or ISO-8601; ``rps`` the API
request rate; ``queue_arrivals`` the worker's queue arrivals in messages per second.
Between rows the value is held (a step function), so a sparse file describes a
piecewise-constant trace; the last row lasts one second.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from ragtide.errors import ConfigError

__all__ = [
    "SHAPES",
    "Trace",
    "busy_day",
    "diurnal",
    "load_trace",
    "ramp",
    "spike",
    "step",
    "surge_start",
]


@dataclass(frozen=True, eq=False)
class Trace:
    """Per-second API load (req/s) and, optionally, worker queue arrivals (msg/s)."""

    rps: np.ndarray
    queue_arrivals: np.ndarray | None = None
    name: str = "trace"
    notes: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.rps.ndim != 1 or self.rps.size == 0:
            raise ConfigError("a trace needs at least one second of load")
        if np.any(self.rps < 0) or not np.all(np.isfinite(self.rps)):
            raise ConfigError("request rates must be finite and non-negative")
        if self.queue_arrivals is not None and self.queue_arrivals.shape != self.rps.shape:
            raise ConfigError("queue_arrivals must cover the same seconds as rps")

    @property
    def seconds(self) -> int:
        return int(self.rps.size)


def _seconds(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError as exc:
            raise ConfigError(f"timestamp {value!r} is neither seconds nor ISO-8601") from exc


def load_trace(source: Path | str, name: str | None = None) -> Trace:
    """Read a trace CSV (a path or its text) into a 1 s step-held ``Trace``."""
    text = source.read_text() if isinstance(source, Path) else source
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    fields = [f.strip() for f in reader.fieldnames or []]
    if "timestamp" not in fields or "rps" not in fields:
        raise ConfigError("trace CSV needs a header with at least 'timestamp' and 'rps'")
    times, rates, arrivals = [], [], []
    for row in reader:
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
        try:
            times.append(_seconds(row["timestamp"]))
            rates.append(float(row["rps"]))
            arrivals.append(float(row.get("queue_arrivals") or 0.0))
        except ValueError as exc:
            raise ConfigError(f"bad trace row {row}: {exc}") from exc
    if not times:
        raise ConfigError("trace CSV has no rows")
    if any(b <= a for a, b in itertools.pairwise(times)):
        raise ConfigError("trace timestamps must be strictly ascending")
    offsets = np.floor(np.asarray(times) - times[0]).astype(int)
    length = int(offsets[-1]) + 1
    index = np.searchsorted(offsets, np.arange(length), side="right") - 1
    has_queue = "queue_arrivals" in fields
    label = name or (source.stem if isinstance(source, Path) else "trace")
    return Trace(
        rps=np.asarray(rates, dtype=float)[index],
        queue_arrivals=np.asarray(arrivals, dtype=float)[index] if has_queue else None,
        name=label,
    )


def surge_start(rps: np.ndarray, window: int = 120, min_rise: float = 0.5) -> int | None:
    """Start of the steepest rise if the load grows by ``min_rise`` (50 %) within ``window`` s.

    The start is the first second of that window whose load exceeds the window's first
    second by 10 %. Slow daily swings are not surges (``None``).
    """
    if rps.size <= window:
        return None
    rise = rps[window:] - rps[:-window]
    begin = int(np.argmax(rise))
    before = float(rps[begin])
    if rise[begin] <= min_rise * max(before, 1e-9):
        return None
    segment = rps[begin : begin + window + 1]
    return begin + int(np.flatnonzero(segment > 1.1 * before)[0])


def _queue(rps: np.ndarray, per_request: float) -> np.ndarray | None:
    return rps * per_request if per_request > 0 else None


def step(
    base: float = 50, peak: float = 200, at: int = 300, duration: int = 1800, queue_ratio: float = 0
) -> Trace:
    """``base`` req/s, then ``peak`` from second ``at`` on."""
    rps = np.where(np.arange(duration) < at, float(base), float(peak))
    return Trace(rps, _queue(rps, queue_ratio), "step", {"base": base, "peak": peak, "at": at})


def ramp(
    base: float = 50,
    peak: float = 200,
    at: int = 300,
    ramp_seconds: int = 60,
    duration: int = 1800,
    queue_ratio: float = 0,
) -> Trace:
    """``base`` req/s, rising linearly to ``peak`` over ``ramp_seconds`` from ``at``."""
    t = np.arange(duration, dtype=float)
    fraction = np.clip((t - at) / max(ramp_seconds, 1), 0.0, 1.0)
    rps = base + (peak - base) * fraction
    notes = {"base": base, "peak": peak, "at": at, "ramp_seconds": ramp_seconds}
    return Trace(rps, _queue(rps, queue_ratio), "ramp", notes)


def busy_day(
    base: float = 50,
    peak: float = 200,
    at: int = 600,
    ramp_seconds: int = 60,
    hold: int = 1800,
    decline_seconds: int = 300,
    tail: int = 900,
    queue_ratio: float = 0.02,
) -> Trace:
    """The issue's scenario: ``base`` req/s rising to ``peak`` within a minute at ``at``.

    The peak holds for ``hold`` seconds, declines back to ``base`` over
    ``decline_seconds`` and stays there for ``tail`` seconds (one hour by default).
    """
    up_end = at + ramp_seconds
    down_start = up_end + hold
    duration = down_start + decline_seconds + tail
    t = np.arange(duration, dtype=float)
    rising = np.clip((t - at) / max(ramp_seconds, 1), 0.0, 1.0)
    falling = np.clip((t - down_start) / max(decline_seconds, 1), 0.0, 1.0)
    rps = base + (peak - base) * (rising - falling)
    notes = {"base": base, "peak": peak, "at": at, "ramp_seconds": ramp_seconds}
    return Trace(rps, _queue(rps, queue_ratio), "busy-day", notes)


def diurnal(
    base: float = 30,
    peak: float = 200,
    period: int = 86_400,
    peak_at: int = 14 * 3600,
    noise: float = 0.0,
    seed: int = 0,
    queue_ratio: float = 0.02,
) -> Trace:
    """A 24 h day: a raised cosine from ``base`` (at night) to ``peak`` (at ``peak_at``)."""
    t = np.arange(period, dtype=float)
    shape = 0.5 * (1 + np.cos(2 * math.pi * (t - peak_at) / period))
    rps = base + (peak - base) * shape
    if noise > 0:
        rng = np.random.default_rng(seed)
        rps = np.clip(rps * (1 + noise * rng.standard_normal(period)), 0, None)
    notes = {"base": base, "peak": peak, "peak_at": peak_at}
    return Trace(rps, _queue(rps, queue_ratio), "diurnal", notes)


def spike(
    base: float = 50,
    peak: float = 300,
    at: int = 300,
    spike_seconds: int = 120,
    duration: int = 1800,
    queue_ratio: float = 0,
) -> Trace:
    """``base`` req/s with a rectangular burst to ``peak`` lasting ``spike_seconds``."""
    t = np.arange(duration)
    rps = np.where((t >= at) & (t < at + spike_seconds), float(peak), float(base))
    notes = {"base": base, "peak": peak, "at": at, "spike_seconds": spike_seconds}
    return Trace(rps, _queue(rps, queue_ratio), "spike", notes)


SHAPES: dict[str, Callable[..., Trace]] = {
    "step": step,
    "ramp": ramp,
    "diurnal": diurnal,
    "spike": spike,
    "busy-day": busy_day,
}
