"""KEDA's ``cron`` scaler as the replay sees it: daily windows and the metric they report.

KEDA's cron scaler (``pkg/scalers/cron_scaler.go``) gives the HPA it creates an External
metric with an AverageValue target of 1 whose value is ``desiredReplicas`` inside the
window and 0 outside, so inside the window the replicas never drop below
``desiredReplicas``. The replay models daily windows: ``start``/``end`` are cron
expressions with a fixed minute and hour and ``*`` for day, month and weekday, and the
trace's ``t = 0`` is 00:00 in the schedule's timezone; a window whose end precedes its
start wraps midnight.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ragtide.errors import ConfigError
from ragtide.planner.values import (
    AutoscalingValues,
    ScheduleValues,
    cron_metric_name,
    first_cron_trigger,
)

__all__ = ["DAY", "DailyWindow", "cron_expression", "cron_metric_values", "daily_window"]

DAY = 86_400
_DAILY = re.compile(r"\s*(\d{1,2})\s+(\d{1,2})\s+\*\s+\*\s+\*\s*")


@dataclass(frozen=True, slots=True)
class DailyWindow:
    """A window in seconds of the day; ``end < start`` wraps midnight."""

    start: int
    end: int
    desired: int

    def active(self, t: float) -> bool:
        day = t % DAY
        if self.start <= self.end:
            return self.start <= day < self.end
        return day >= self.start or day < self.end


def _seconds_of_day(expression: str) -> int:
    match = _DAILY.fullmatch(expression)
    if match is None:
        raise ConfigError(
            f"cron expression {expression!r}: ragtide plan models daily schedules "
            "('M H * * *', a fixed minute and hour)"
        )
    minute, hour = int(match.group(1)), int(match.group(2))
    if minute > 59 or hour > 23:
        raise ConfigError(f"cron expression {expression!r}: minute or hour out of range")
    return hour * 3600 + minute * 60


def daily_window(schedule: ScheduleValues) -> DailyWindow:
    """The daily window of one ``autoscaling.keda.schedules`` entry."""
    return DailyWindow(
        _seconds_of_day(schedule.start), _seconds_of_day(schedule.end), schedule.desired_replicas
    )


def cron_metric_values(values: AutoscalingValues, t: float) -> Mapping[str, tuple[int, ...]]:
    """What each cron trigger reports at trace second ``t`` (milli): desired or 0."""
    if values.engine != "keda":
        return {}
    first = first_cron_trigger(values)
    out = {}
    for i, schedule in enumerate(values.keda.schedules):
        window = daily_window(schedule)
        out[cron_metric_name(first + i)] = ((window.desired * 1000) if window.active(t) else 0,)
    return out


def cron_expression(seconds: int) -> str:
    """The daily cron expression for a second of the day (minute precision)."""
    minutes = seconds // 60
    return f"{minutes % 60} {(minutes // 60) % 24} * * *"
