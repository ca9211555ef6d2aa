"""Scenarios 2-4: a replica killed at peak load, a rolling restart, scaling out and in.

All traffic goes through nginx. Counts are exact: every request the load sent is
either acknowledged and found once, in order, in its session, or it is a failure that
the scenario allows (only for kill -9: requests in flight on the killed process).
"""

from __future__ import annotations

import time

import pytest

from .conftest import NAMESPACE
from .load import ConversationLoad, Turn, acked, audit
from .replicas import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.cluster]


def _failures(turns: list[Turn]) -> list[Turn]:
    return [t for t in turns if not t.acknowledged]


def _describe(turns: list[Turn]) -> list[tuple[object, ...]]:
    return [(t.status, t.code, t.error, t.upstream, t.started) for t in turns[:10]]


def test_kill_9_at_peak_load_loses_only_requests_in_flight_there(cluster: Cluster) -> None:
    requests = 3000
    victim = cluster.routed()[0]
    with ConversationLoad(
        cluster.nginx.url, NAMESPACE, conversations=3, max_requests=requests, max_seconds=90
    ) as load:
        load.wait_count(acked(), requests // 3, 60, "a third of the turns")
        cluster.kill(victim)
        dead_at = time.monotonic()
        turns = load.join(90)

    assert len(turns) == requests
    failed = _failures(turns)
    # Only turns that had reached the killed process, before it died, may fail...
    in_flight = [
        t for t in failed if t.status == 502 and t.replica == victim.addr and t.started < dead_at
    ]
    assert in_flight == failed, _describe(failed)
    # ... which is at most 0.1% of the load; the others carried on.
    assert len(failed) * 1000 <= requests, _describe(failed)
    after = [t for t in turns if t.started > dead_at]
    assert after and all(t.acknowledged for t in after)
    assert {t.replica for t in after} == {r.addr for r in cluster.live()}

    result = audit(cluster.nginx.url, NAMESPACE, turns)
    assert result.acknowledged == result.acknowledged_present == requests - len(failed)
    assert result.lost == 0 and result.clean(), result
    assert result.unacknowledged_present <= len(failed)
    print(
        f"kill -9: {requests} turns, {len(failed)} failed (in flight on the killed "
        f"replica), {result.unacknowledged_present} of those saved all the same, 0 lost"
    )


def test_rolling_restart_under_load_fails_nothing(cluster: Cluster) -> None:
    old = cluster.routed()
    drains = []
    with ConversationLoad(
        cluster.nginx.url, NAMESPACE, conversations=4, max_requests=20_000, max_seconds=90
    ) as load:
        load.wait_count(acked(), 50, 30, "turns before the restart")
        for replica in old:  # surge first (maxSurge 1, maxUnavailable 0), then drain
            (fresh,) = cluster.scale_out(1)
            drains.append(cluster.drain(replica))
            mark = time.monotonic()
            load.wait_count(acked(mark, fresh.addr), 10, 30, f"the new {fresh.addr} serves")
        turns = load.stop()

    assert [d.exit_code for d in drains] == [0, 0, 0]
    assert not {r.port for r in old} & set(cluster.nginx.upstreams)
    failed = _failures(turns)
    assert failed == [], _describe(failed)
    result = audit(cluster.nginx.url, NAMESPACE, turns)
    assert result.acknowledged == result.acknowledged_present == len(turns)
    assert result.lost == 0 and result.unacknowledged_present == 0 and result.clean(), result
    print(
        f"rolling restart: {len(turns)} turns, 0 failed, 0 lost; nginx dropped each replica "
        f"{max(d.removed_after_s for d in drains):.2f}s after SIGTERM at the latest"
    )


def test_scale_out_to_three_and_back_to_one_fails_nothing(cluster: Cluster) -> None:
    cluster.scale_in(2)
    assert len(cluster.routed()) == 1
    with ConversationLoad(
        cluster.nginx.url, NAMESPACE, conversations=4, max_requests=20_000, max_seconds=90
    ) as load:
        load.wait_count(acked(), 50, 30, "turns on one replica")
        fresh = cluster.scale_out(2)
        mark = time.monotonic()
        for r in fresh:
            load.wait_count(acked(mark, r.addr), 20, 30, f"the new {r.addr} serves")
        drains = cluster.scale_in(2)
        mark = time.monotonic()
        load.wait_count(acked(mark), 50, 30, "turns after scaling in")
        turns = load.stop()

    assert [d.exit_code for d in drains] == [0, 0]
    assert len(cluster.routed()) == 1
    failed = _failures(turns)
    assert failed == [], _describe(failed)
    assert len({t.replica for t in turns}) == 3  # one replica, two added, two removed
    result = audit(cluster.nginx.url, NAMESPACE, turns)
    assert result.acknowledged == result.acknowledged_present == len(turns)
    assert result.lost == 0 and result.unacknowledged_present == 0 and result.clean(), result
    print(f"scale 1 -> 3 -> 1: {len(turns)} turns, 0 failed, 0 lost")
