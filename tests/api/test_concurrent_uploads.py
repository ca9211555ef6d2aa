"""Concurrent uploads of one document id: exactly one of them says ``created``.

The ingest pipeline used to decide ``created`` from a read before the write, so uploads
racing for a new id all read "no such document" and most of them answered ``created``.
The store now says atomically, with the write, what the document was before it. To make
the race certain rather than likely, the test holds every upload's read of the document
until all of them have made it (a barrier around ``get_document``): whatever the
pipeline reads beforehand, the answer must come from the write.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import httpx
from fastapi.testclient import TestClient

from ragtide.types import DocumentInfo

UPLOADS = 20
DOC = "pods.md"


class ReadBarrier:
    """A store whose ``get_document`` of ``DOC`` returns only once ``expected`` reads of it
    are waiting (or after a few seconds, should the pipeline read it fewer times)."""

    def __init__(self, store: Any, expected: int) -> None:
        self._store = store
        self._expected = expected
        self._waiting = 0
        self._all_in = anyio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def get_document(self, namespace: str, document_id: str) -> DocumentInfo | None:
        found: DocumentInfo | None = await self._store.get_document(namespace, document_id)
        if document_id == DOC and not self._all_in.is_set():
            self._waiting += 1
            if self._waiting >= self._expected:
                self._all_in.set()
            with anyio.move_on_after(5):
                await self._all_in.wait()
        return found


async def _upload_all(app: Any, bodies: list[bytes]) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        responses: list[httpx.Response] = []

        async def one(body: bytes) -> None:
            files = {"file": (DOC, body)}
            responses.append(await client.post("/v1/namespaces/kb/documents", files=files))

        async with anyio.create_task_group() as tg:
            for body in bodies:
                tg.start_soon(one, body)
    return responses


def _statuses(client: TestClient, bodies: list[bytes]) -> Counter[tuple[int, str]]:
    rt = client.app.state.runtime  # type: ignore[attr-defined]
    real = rt.store
    rt.store = ReadBarrier(real, len(bodies))
    try:
        responses = client.portal.call(_upload_all, client.app, bodies)  # type: ignore[union-attr]
    finally:
        rt.store = real
    outcomes: Counter[tuple[int, str]] = Counter()
    for r in responses:
        assert r.status_code in (200, 201), r.text
        (doc,) = r.json()["documents"]
        assert doc["document_id"] == DOC
        outcomes[(r.status_code, doc["status"])] += 1
    return outcomes




def test_identical_concurrent_uploads_create_once(client: TestClient) -> None:
    body = b"# Pods\n\nA Pod runs one or more containers that share storage and network.\n"
    outcomes = _statuses(client, [body] * UPLOADS)
    assert outcomes == {(201, "created"): 1, (200, "unchanged"): UPLOADS - 1}
    docs = client.get("/v1/namespaces/kb/documents").json()["documents"]
    assert [d["id"] for d in docs] == [DOC]


def test_different_concurrent_uploads_create_once_then_update(client: TestClient) -> None:
    bodies = [f"# Pods\n\nVersion {n}: a Pod runs containers.\n".encode() for n in range(UPLOADS)]
    outcomes = _statuses(client, bodies)
    assert outcomes == {(201, "created"): 1, (201, "updated"): UPLOADS - 1}
    r = client.get(f"/v1/namespaces/kb/documents/{DOC}")
    assert r.status_code == 200


def test_sequential_uploads_still_say_what_happened(client: TestClient) -> None:
    """The control: without a race, created, unchanged, updated, as before."""
    body = b"# Pods\n\nA Pod runs containers.\n"
    assert _statuses(client, [body]) == {(201, "created"): 1}
    assert _statuses(client, [body]) == {(200, "unchanged"): 1}
    assert _statuses(client, [body + b"\nMore.\n"]) == {(201, "updated"): 1}
