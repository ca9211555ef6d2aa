"""``LoopWatch``: the event loop's lag, and the stacks of a loop that is stuck."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
from prometheus_client import REGISTRY

from ragtide.observability import LoopWatch


def _sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


class _Caught(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "event loop blocked":
            self.records.append(record)
            self.seen.set()


def _stuck_in_a_callback(caught: _Caught) -> bool:
    """Block the loop (this runs in it) until the watch reports it, from its thread."""
    return caught.seen.wait(10)


@pytest.mark.anyio
async def test_a_stuck_loop_is_reported_with_its_stack_and_its_lag_measured() -> None:
    caught = _Caught()
    logger = logging.getLogger("ragtide.loop")
    logger.addHandler(caught)
    blocked = _sample("ragtide_event_loop_blocked_total")
    lagged = _sample("ragtide_event_loop_lag_seconds_count")
    lag_sum = _sample("ragtide_event_loop_lag_seconds_sum")
    watch = LoopWatch(blocked_after=0.05, every=0.01)
    watch.start()
    try:
        began = time.monotonic()
        assert _stuck_in_a_callback(caught)  # reported while the loop was stuck
        stuck_s = time.monotonic() - began
        # One report for the stall
        assert len(caught.records) == 1
        assert _sample("ragtide_event_loop_blocked_total") - blocked == 1
        record = caught.records[0]
        assert record.seconds > 0.05  # type: ignore[attr-defined]
        stacks: dict[str, str] = record.stacks  # type: ignore[attr-defined]
        first = next(iter(stacks))
        assert first.endswith("(event loop)")
        assert "_stuck_in_a_callback" in stacks[first]
        assert "ragtide-loop-watch" not in stacks  # the watch's own thread is left out
        # Once the loop runs again, the tick it held back is measured as late by about
        # as long as the loop was stuck (it was due within one ``every`` of the stall).
        while _sample("ragtide_event_loop_lag_seconds_count") == lagged:
            await asyncio.sleep(0)
        assert _sample("ragtide_event_loop_lag_seconds_sum") - lag_sum >= stuck_s - 0.02
    finally:
        await watch.aclose()
        logger.removeHandler(caught)
