"""Trace CSV loading and the synthetic shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ragtide.errors import ConfigError
from ragtide.planner.traffic import busy_day, diurnal, load_trace, ramp, spike, step, surge_start


def test_csv_is_held_between_rows() -> None:
    trace = load_trace("timestamp,rps,queue_arrivals\n# comment\n100,50,1\n103,200,2\n")
    assert trace.rps.tolist() == [50, 50, 50, 200]
    assert trace.queue_arrivals is not None and trace.queue_arrivals.tolist() == [1, 1, 1, 2]


def test_csv_accepts_iso_timestamps_and_file_paths(tmp_path: Path) -> None:
    file = tmp_path / "day.csv"
    file.write_text("timestamp,rps\n2025-01-01T00:00:00,10\n2025-01-01T00:00:02,20\n")
    trace = load_trace(file)
    assert (trace.name, trace.rps.tolist(), trace.queue_arrivals) == ("day", [10, 10, 20], None)


@pytest.mark.parametrize(
    "text",
    [
        "time,rps\n0,1\n",
        "timestamp,rps\n",
        "timestamp,rps\n0,1\n0,2\n",
        "timestamp,rps\n0,-1\n",
        "timestamp,rps\nnoon,1\n",
    ],
)
def test_bad_csv_raises_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        load_trace(text)


def test_busy_day_rises_from_50_to_200_within_a_minute() -> None:
    trace = busy_day()
    at = int(trace.notes["at"])
    assert trace.rps[at - 1] == 50 and trace.rps[at + 60] == 200
    assert np.all(np.diff(trace.rps[at : at + 61]) > 0)
    assert trace.rps[-1] == 50 and trace.seconds == 3660


def test_diurnal_peaks_at_peak_at() -> None:
    trace = diurnal(base=30, peak=200, peak_at=14 * 3600)
    assert trace.seconds == 86_400
    assert int(np.argmax(trace.rps)) == 14 * 3600
    assert trace.rps.min() == pytest.approx(30)


def test_step_ramp_spike_shapes() -> None:
    assert step(10, 20, at=2, duration=4).rps.tolist() == [10, 10, 20, 20]
    assert ramp(0, 10, at=0, ramp_seconds=10, duration=11).rps[5] == 5
    assert spike(1, 9, at=1, spike_seconds=2, duration=4).rps.tolist() == [1, 9, 9, 1]


def test_surge_start_finds_fast_rises_only() -> None:
    assert surge_start(busy_day().rps) == 603  # first second 10 % above 50 req/s
    assert surge_start(diurnal().rps) is None
