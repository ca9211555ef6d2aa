"""The worker's settings: these names are a contract with the Helm chart and KEDA."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ragtide.settings import Settings


def test_defaults_disable_tasks_and_name_the_queue_keda_watches() -> None:
    s = Settings()
    assert s.rabbitmq.url is None
    assert (s.rabbitmq.queue, s.rabbitmq.max_attempts, s.rabbitmq.prefetch) == (
        "ragtide.tasks",
        3,
        4,
    )
    assert (s.worker.host, s.worker.port) == ("0.0.0.0", 8001)
    assert s.result_store.use == "memory"


def test_the_chart_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGTIDE_RABBITMQ__URL", "amqp://u:p@rabbit:5672/")
    monkeypatch.setenv("RAGTIDE_REDIS__URL", "redis://cache:6379/0")
    monkeypatch.setenv("RAGTIDE_WORKER__PORT", "8001")
    monkeypatch.setenv("RAGTIDE_RABBITMQ__MAX_ATTEMPTS", "5")
    monkeypatch.setenv("RAGTIDE_RABBITMQ__PREFETCH", "8")
    s = Settings()
    assert s.rabbitmq.url == "amqp://u:p@rabbit:5672/" and s.worker.port == 8001
    assert (s.rabbitmq.max_attempts, s.rabbitmq.prefetch) == (5, 8)
    assert s.result_store.use == "redis" and s.result_store.config["url"] == "redis://cache:6379/0"


def test_tasks_without_a_shared_result_store_fail_early() -> None:
    with pytest.raises(ValidationError, match="result store"):
        Settings(rabbitmq={"url": "amqp://localhost/"})


@pytest.mark.parametrize(
    "section",
    [
        {"rabbitmq": {"queue": "has space"}},
        {"rabbitmq": {"queue": ""}},
        {"rabbitmq": {"max_attempts": 0}},
        {"rabbitmq": {"prefetch": 0}},
        {"worker": {"port": 70000}},
    ],
)
def test_bad_values_fail(section: dict[str, dict[str, object]]) -> None:
    with pytest.raises(ValidationError):
        Settings(**section)  # type: ignore[arg-type]
