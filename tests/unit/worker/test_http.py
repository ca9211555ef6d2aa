"""The worker's probe endpoint, driven through ASGI (no socket)."""

from __future__ import annotations

import httpx
import pytest

from ragtide.worker.http import ProbeApp

pytestmark = pytest.mark.anyio


class Probes:
    def __init__(self) -> None:
        self.reason: str | None = "starting: connecting to rabbitmq"
        self.ready_calls = 0
        self.refreshes = 0

    async def ready(self) -> str | None:
        self.ready_calls += 1
        return self.reason

    async def refresh(self) -> None:
        self.refreshes += 1


async def get(app: ProbeApp, path: str, method: str = "GET") -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        return await client.request(method, path)


async def test_healthz_answers_without_asking_anything() -> None:
    probes = Probes()
    r = await get(ProbeApp(probes.ready, probes.refresh), "/healthz")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})
    assert probes.ready_calls == 0 and probes.refreshes == 0


async def test_ready_follows_the_worker() -> None:
    probes = Probes()
    app = ProbeApp(probes.ready, probes.refresh)
    r = await get(app, "/ready")
    assert r.status_code == 503
    assert r.json() == {"status": "unavailable", "reason": "starting: connecting to rabbitmq"}
    probes.reason = None
    r = await get(app, "/ready")
    assert (r.status_code, r.json()) == (200, {"status": "ready"})


async def test_metrics_refresh_before_they_are_rendered() -> None:
    probes = Probes()
    r = await get(ProbeApp(probes.ready, probes.refresh), "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert "# TYPE ragtide_tasks_queue_depth gauge" in r.text
    assert "# TYPE ragtide_task_seconds histogram" in r.text
    assert "# TYPE ragtide_tasks_total counter" in r.text
    assert probes.refreshes == 1


@pytest.mark.parametrize(
    ("path", "method", "status", "code"),
    [("/nope", "GET", 404, "not_found"), ("/ready", "POST", 405, "method_not_allowed")],
)
async def test_other_requests_get_json_errors(
    path: str, method: str, status: int, code: str
) -> None:
    probes = Probes()
    r = await get(ProbeApp(probes.ready, probes.refresh), path, method)
    assert r.status_code == status and r.json()["error"]["code"] == code
