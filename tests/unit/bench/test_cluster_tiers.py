"""The cluster bench's CPU accounting per tier: real processes sampled from /proc, and the
database tier it hands the planner."""

from __future__ import annotations

import subprocess
import sys

from ragtide.bench.cluster import Tiers, _database_tier
from ragtide.planner.capacity import DatabaseCapacity

BURN = "import sys\nx = 0\nfor _ in range(int(sys.argv[1])):\n    x += 1\n"


def test_spent_counts_new_processes_from_zero_and_leaves_ended_ones_out() -> None:
    before = {"api": {1: 5.0, 2: 1.0}, "database": {10: 3.0}}
    after = {"api": {1: 5.5, 2: 1.25}, "database": {10: 3.0, 11: 0.75}}  # 11 started
    assert Tiers.spent(before, after) == {"api": 0.75, "database": 0.75}
    gone = {"api": {1: 6.0}, "database": {11: 1.0}}  # 2 and 10 ended
    assert Tiers.spent(after, gone) == {"api": 0.5, "database": 0.25}


def test_a_tree_is_sampled_with_its_children() -> None:
    # A parent that starts a CPU-burning child and waits for it: the child's CPU is the
    # tree's while the child runs.
    code = (
        "import subprocess, sys\n"
        f"subprocess.run([sys.executable, '-c', {BURN!r}, '30000000'], check=True)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        tiers = Tiers([], {"database": parent.pid})
        first = tiers.sample()
        while len(first["database"]) < 2 and parent.poll() is None:
            first = tiers.sample()  # until the child is there
        assert len(first["database"]) == 2, "the child never showed up"
        child = next(pid for pid in first["database"] if pid != parent.pid)
        later = tiers.sample()
        while child in later["database"] and later["database"][child] <= first["database"][child]:
            later = tiers.sample()  # until the child's CPU time has moved (or it ended)
        assert Tiers.spent(first, later)["database"] > 0
        assert tiers.sample()["api"] == {}
    finally:
        parent.kill()
        parent.wait()


def test_the_database_tier_is_a_planner_database_section() -> None:
    def run(search: float, chat: float) -> dict[str, dict[str, dict[str, float]]]:
        return {
            "search": {"cpu_ms_per_request": {"database": search}},
            "chat": {"cpu_ms_per_request": {"database": chat}},
        }

    tier = _database_tier({"1": run(0.5, 2.0), "2": run(0.7, 2.4), "3": run(0.6, 9.0)})
    assert tier["cpu_seconds_per_request"] == {"search": 0.0006, "chat": 0.0024}  # medians
    assert tier["by_replicas"]["3"] == {"search": 0.6, "chat": 9.0}
    section = DatabaseCapacity(cores=2, cpu_seconds_per_request=tier["cpu_seconds_per_request"])
    assert section.cpu_seconds_per_request["search"] == 0.0006
