"""The API against its own OpenAPI document: schemathesis, every phase and every check.

The app runs in-process (ASGI) on a real SQLite store, with authentication on: the
credential is an API key of tenant ``acme`` (scopes read, write, admin) whose namespace
``docs`` holds two documents, so that 200s are reachable, not only 401/404s. The run is
bounded (examples per operation, steps, a fixed seed, deterministic generation) so that
CI is reproducible and quick.

Two allowances, each because the document cannot say more than it does:

- tasks are disabled here (no RabbitMQ): their routes answer 501 ``tasks_disabled``, a
  status their schema declares, which ``not_a_server_error`` is told to accept;
- what a schema cannot express is judged by the server: whether an uploaded file can be
  parsed (413/415/422 by the ingest limits) and whether a completion's *last* message is a
  non-empty user message (422). ``positive_data_acceptance`` accepts those statuses there.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.api.conftest import ADMIN, COOKING, KUBE, auth_settings

schemathesis = pytest.importorskip("schemathesis")

from schemathesis.config import SchemathesisConfig  # noqa: E402
from schemathesis.engine import events, from_schema  # noqa: E402
from schemathesis.python import asgi  # noqa: E402

from ragtide.api.app import create_app  # noqa: E402

MAX_EXAMPLES = 25
SEED = 20240601
TENANT, NAMESPACE = "acme", "docs"


@dataclass
class Outcome:
    cases: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    operations: set[str] = field(default_factory=set)


@pytest.fixture
def app_and_key(tmp_path: Path) -> Iterator[tuple[object, str]]:
    app = create_app(auth_settings(tmp_path), configure_logs=False)
    try:
        with asgi.get_client(app) as c:  # starts the app's lifespan, kept for the run
            r = c.put(f"/v1/tenants/{TENANT}", json={"name": "Acme"}, headers=ADMIN)
            assert r.status_code == 201, r.text
            r = c.post(
                f"/v1/tenants/{TENANT}/keys",
                json={"scopes": ["read", "write", "admin"]},
                headers=ADMIN,
            )
            assert r.status_code == 201, r.text
            key = r.json()["key"]
            for name, data in (("pods.md", KUBE), ("bread.md", COOKING)):
                r = c.post(
                    f"/v1/namespaces/{NAMESPACE}/documents",
                    files={"file": (name, data)},
                    headers={"Authorization": f"Bearer {key}"},
                )
                assert r.status_code == 201, r.text
        yield app, key
    finally:
        asgi.shutdown_lifespans()


def _config(key: str) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "max-failures": 1000,
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "mode": "all"},
            "auth": {"openapi": {"bearer": {"bearer": key}}},
            "checks": {"enabled": True},
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": True, "max-steps": 20},
            },
            "workers": 1,
            "request-timeout": 30,
            "operations": [
                {
                    "include-path-regex": "/tasks",
                    "checks": {
                        "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", 501]}
                    },
                },
                {
                    "include-path": "/v1/namespaces/{namespace}/documents",
                    "include-method": "POST",
                    "checks": {
                        "positive_data_acceptance": {
                            "expected-statuses": [
                                "2xx",
                                "401",
                                "403",
                                "404",
                                "409",
                                "413",
                                "415",
                                "422",
                                "429",
                                "5xx",
                            ]
                        }
                    },
                },
                {
                    "include-path": "/v1/chat/completions",
                    "checks": {
                        "positive_data_acceptance": {
                            "expected-statuses": [
                                "2xx",
                                "401",
                                "403",
                                "404",
                                "409",
                                "422",
                                "429",
                                "5xx",
                            ]
                        }
                    },
                },
            ],
        }
    )


def _run(app: object, key: str) -> Outcome:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=_config(key))
    out = Outcome()
    for event in from_schema(schema).execute():
        recorder = getattr(event, "recorder", None)
        if isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished) and recorder:
            out.cases[str(getattr(event, "phase", "fuzzing"))] += len(recorder.cases)
            out.operations.add(recorder.label)
            for checks in recorder.checks.values():
                for node in checks:
                    if node.failure_info is not None:
                        failure = node.failure_info.failure
                        out.failures.append(
                            f"{failure.operation} | {failure.title} | {failure.message}\n"
                            f"    {node.failure_info.code_sample}"
                        )
        elif isinstance(event, events.NonFatalError):
            out.errors.append(f"{event.label}: {event.info.format()}")
        elif isinstance(event, events.FatalError):
            out.errors.append(f"fatal: {event.exception!r}")
    return out


def test_the_api_conforms_to_its_openapi_document(app_and_key: tuple[object, str]) -> None:
    app, key = app_and_key
    out = _run(app, key)
    unique = sorted(set(out.failures))
    assert not out.errors, "\n".join(out.errors)
    assert not unique, f"{len(unique)} unique failures:\n" + "\n".join(unique)
    total = sum(out.cases.values())
    print(f"schemathesis: {total} cases {dict(out.cases)} over {len(out.operations)} operations")
    assert total > 500  # the run did run: every phase, every operation
    assert out.cases["coverage"] and out.cases["fuzzing"] and out.cases["stateful"]
