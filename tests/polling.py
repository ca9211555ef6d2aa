"""Waiting on observable state in tests: poll a condition against a deadline, never sleep blind."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["until"]

T = TypeVar("T")


def until(
    condition: Callable[[], T], what: str, timeout: float = 30.0, *, interval: float = 0.02
) -> T:
    """Call ``condition`` until it returns something truthy and return that; fail with
    ``what`` once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(interval)
