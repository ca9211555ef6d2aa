"""Scenario 1: any replica can serve any turn, and sees the whole history when it does."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from .conftest import NAMESPACE
from .load import Turn, audit, message_for, post_turn
from .replicas import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

CONVERSATIONS = 6
TURNS = 6


async def _converse(
    clients: list[httpx.AsyncClient], j: int, served_by: dict[int, list[int]]
) -> list[Turn]:
    session_id = f"any-replica-{j}"
    turns: list[Turn] = []
    for k in range(TURNS):
        replica = (j + k) % len(clients)  # consecutive turns never share a replica
        client = clients[replica]
        # The history this replica sees before the turn: every earlier turn, in order.
        r = await client.get(f"/v1/namespaces/{NAMESPACE}/sessions/{session_id}")
        if k == 0:
            assert r.status_code == 404
        else:
            assert r.status_code == 200, r.text
            seen = [(t["role"], t["content"]) for t in r.json()["turns"]]
            expected = [
                pair for t in turns for pair in (("user", t.message), ("assistant", t.answer))
            ]
            assert seen == expected, f"replica {replica} sees an incomplete history at turn {k}"
        turn = await post_turn(client, NAMESPACE, session_id, k, message_for(j, 0, k))
        assert turn.acknowledged, (turn.status, turn.code, turn.error)
        if k > 0:  # the follow-up was condensed with the history written elsewhere
            assert turn.query is not None and f"ref{j}x0x{k - 1}" in turn.query, turn.query
        served_by[replica].append(k)
        turns.append(turn)
    return turns


async def _run(urls: list[str]) -> tuple[list[Turn], dict[int, list[int]]]:
    clients = [httpx.AsyncClient(base_url=u, timeout=10) for u in urls]
    served_by: dict[int, list[int]] = {i: [] for i in range(len(urls))}
    try:
        batches = await asyncio.gather(
            *(_converse(clients, j, served_by) for j in range(CONVERSATIONS))
        )
    finally:
        for c in clients:
            await c.aclose()
    return [t for batch in batches for t in batch], served_by


def test_every_turn_on_another_replica_sees_the_whole_history(cluster: Cluster) -> None:
    replicas = cluster.live()
    assert len(replicas) == 3
    turns, served_by = asyncio.run(_run([r.url for r in replicas]))

    assert len(turns) == CONVERSATIONS * TURNS == 36
    assert sum(t.acknowledged for t in turns) == 36
    assert {i: len(ks) for i, ks in served_by.items()} == {0: 12, 1: 12, 2: 12}
    result = audit(cluster.nginx.url, NAMESPACE, turns)
    assert result.sessions == CONVERSATIONS
    assert result.acknowledged == result.acknowledged_present == 36
    assert result.clean(), result
