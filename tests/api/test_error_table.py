"""The README's error table, pinned row by row.

Every code the README lists must come back with that row's status, through a real request
where one can be made here (the LLM rows through an OpenAI-compatible stub that fails or
stalls); ``Retry-After`` is a whole number of seconds, at least 1, also for a fractional
delay. Rows whose setup needs a broker, a tenant plugin or an access policy are pinned by
the table (``status_for``) here and through requests in test_tasks.py, test_tenants.py and
test_policies_api.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from ragtide import errors
from ragtide.api.app import create_app
from ragtide.api.errors import _for_ragtide_error, status_for
from tests.api.conftest import KUBE, auth_settings, bearer, make_settings, new_key, upload
from tests.unit.builtin.test_openai import StubLLM

README = Path(__file__).resolve().parents[2] / "README.md"

# Codes the README's table does not list: raised at startup, never by a request.
NOT_IN_README = {"internal", "config_error", "plugin_not_found", "plugin_error"}  # startup
# Made by the handlers, the in-flight cap (ragtide.api.limits) or the server's protocol
# (request_timeout: tests/integration/test_server_limits.py), not by an error class.
NOT_ERROR_CLASSES = {
    "forbidden",
    "method_not_allowed",
    "invalid_json",
    "overloaded",
    "request_timeout",
}


def readme_table() -> dict[str, int]:
    """code -> status, from the table after "Errors always have the body"."""
    text = README.read_text(encoding="utf-8")
    table = text[text.index("Errors always have the body") :].split("\n\n")[1]
    rows: dict[str, int] = {}
    for line in table.splitlines()[2:]:
        status, codes = (cell.strip() for cell in line.strip("|").split("|", 1))
        statuses = [int(s) for s in re.findall(r"\d{3}", status)]
        names = re.findall(r"`([a-z_]+)`", codes)  # not `Retry-After`, `RAGTIDE_...`
        if len(statuses) == 2:  # "502 / 504 | `upstream_error` / `upstream_timeout`"
            rows.update(dict(zip(names, statuses, strict=True)))
        else:
            rows.update(dict.fromkeys(names, statuses[0]))
    return rows


def _classes() -> dict[str, type[errors.RagtideError]]:
    return {
        cls.code: cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.RagtideError)
    }


def test_the_readme_table_is_read() -> None:
    table = readme_table()
    assert table["upstream_error"] == 502 and table["upstream_timeout"] == 504
    assert table["rate_limited"] == 429 and table["unauthenticated"] == 401
    assert table["backend_unavailable"] == 503 and table["tasks_disabled"] == 501
    assert len(table) >= 28, sorted(table)


@pytest.mark.parametrize("code", sorted(readme_table()))
def test_each_documented_code_has_its_documented_status(code: str) -> None:
    classes = _classes()
    if code in NOT_ERROR_CLASSES - classes.keys():
        return  # pinned through requests below
    cls = classes[code]
    assert status_for(cls.__new__(cls)) == readme_table()[code], code


def test_overloaded_row() -> None:
    from ragtide.api.limits import overloaded_response

    response = overloaded_response("requests")
    assert response.status_code == readme_table()["overloaded"] == 503
    assert orjson.loads(response.body)["error"]["code"] == "overloaded"
    assert int(response.headers["retry-after"]) >= 1


def test_every_error_code_is_documented_or_known_missing() -> None:
    missing = set(_classes()) - set(readme_table())
    assert missing <= NOT_IN_README, sorted(missing - NOT_IN_README)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("internal", 500), ("config_error", 500), ("plugin_not_found", 500),
        ("plugin_error", 500), ("document_too_large", 413), ("document_too_complex", 422),
    ],
)  # fmt: skip
def test_codes_the_readme_does_not_list_yet_have_a_pinned_status(code: str, status: int) -> None:
    cls = _classes()[code]
    assert status_for(cls.__new__(cls)) == status


@pytest.mark.parametrize(
    ("exc", "header"),
    [
        (errors.RateLimited("slow down", retry_after=0.2), "1"),
        (errors.RateLimited("slow down", retry_after=0.0), "1"),
        (errors.RateLimited("slow down", retry_after=1.0), "1"),
        (errors.RateLimited("slow down", retry_after=1.01), "2"),
        (errors.QuotaExceeded("tomorrow", retry_after=3599.5), "3600"),
        (errors.BackendUnavailable("redis down"), "5"),
        (errors.BackendUnavailable("redis down", retry_after=0.4), "1"),
    ],
)
def test_retry_after_is_whole_seconds_rounded_up_and_at_least_1(
    exc: errors.RagtideError, header: str
) -> None:
    response = _for_ragtide_error(exc)
    assert response.headers["retry-after"] == header
    assert response.headers["content-type"] == "application/json"
    assert response.status_code == readme_table()[exc.code]
    assert orjson.loads(response.body) == {"error": {"code": exc.code, "message": exc.message}}


def test_errors_without_a_delay_have_no_retry_after() -> None:
    response = _for_ragtide_error(errors.UpstreamTimeout("late"))
    assert "retry-after" not in response.headers and response.status_code == 504
    unauthenticated = _for_ragtide_error(errors.Unauthenticated("who?"))
    assert unauthenticated.headers["www-authenticate"] == 'Bearer realm="ragtide"'
    assert "retry-after" not in unauthenticated.headers


# --- through requests ----------------------------------------------------------------------


def _error(r: object) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["code"]  # type: ignore[attr-defined]


def test_client_error_rows_through_requests(client: TestClient) -> None:
    table = readme_table()
    upload(client, "kb", "pods.md", KUBE)
    cases = {
        "namespace_not_found": client.get("/v1/namespaces/missing"),
        "document_not_found": client.get("/v1/namespaces/kb/documents/nope.md"),
        "session_not_found": client.get("/v1/namespaces/kb/sessions/nope"),
        "task_not_found": None,  # needs the worker: test_tasks.py
        "not_found": client.get("/no/such/route"),
        "method_not_allowed": client.delete("/healthz"),
        "invalid_json": client.post(
            "/v1/namespaces/kb/chat",
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        ),
        "invalid_request": client.post("/v1/namespaces/kb/chat", json={"nope": 1}),
        "invalid_namespace": client.put("/v1/namespaces/Not%20Valid!"),
        "empty_document": upload(client, "kb", "empty.md", b""),
        "unsupported_media_type": upload(client, "kb", "a.exe", b"MZ\x90\x00binary"),
        "payload_too_large": client.post(
            "/v1/namespaces/kb/chat", json={"message": "x" * (1024 * 1024 + 10)}
        ),
        "tasks_disabled": client.post(
            "/v1/namespaces/kb/tasks", json={"kind": "chat", "message": "hi"}
        ),
    }
    for code, response in cases.items():
        if response is not None:
            assert _error(response) == (table[code], code), (code, response.text)  # type: ignore[attr-defined]


def test_auth_rows_through_requests(tmp_path: Path) -> None:
    table = readme_table()
    with TestClient(create_app(auth_settings(tmp_path), configure_logs=False)) as client:
        r = client.get("/v1/namespaces")
        assert _error(r) == (table["unauthenticated"], "unauthenticated")
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert _error(client.get("/v1/namespaces", headers=bearer("rt-unknown-key"))) == (
            401,
            "unauthenticated",
        )
        client.put("/v1/tenants/acme", json={}, headers=bearer("adm-" + "k" * 28))
        _, reader = new_key(client, "acme", ["read"])
        assert _error(client.put("/v1/namespaces/kb", headers=reader)) == (
            table["forbidden"],
            "forbidden",
        )
        assert _error(client.get("/v1/tenants/nope", headers=bearer("adm-" + "k" * 28))) == (
            table["tenant_not_found"],
            "tenant_not_found",
        )


def test_rate_limited_row_through_requests(tmp_path: Path) -> None:
    # 0.5 tokens a second: the refusal's delay is 2 s minus the time since; the header is
    # a whole number of seconds, never 0.
    settings = make_settings(
        tmp_path,
        rate_limit={"enabled": True},
        tenants={"quotas": {"search_per_second": 0.5, "burst_seconds": 2}},
    )
    with TestClient(create_app(settings, configure_logs=False)) as client:
        upload(client, "kb", "pods.md", KUBE)
        assert client.post("/v1/namespaces/kb/search", json={"query": "pod"}).status_code == 200
        r = client.post("/v1/namespaces/kb/search", json={"query": "pod"})
        assert _error(r) == (readme_table()["rate_limited"], "rate_limited")
        assert r.headers["retry-after"] in ("1", "2")


@pytest.fixture
def stub() -> Iterator[StubLLM]:
    server = StubLLM()
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("mode", "code"), [("fail500", "upstream_error"), ("slow", "upstream_timeout")]
)
@pytest.mark.parametrize("stream", [False, True])
def test_llm_rows_through_an_upstream_that_fails_or_stalls(
    tmp_path: Path, stub: StubLLM, mode: str, code: str, stream: bool
) -> None:
    model = {
        "use": "openai",
        "config": {"base_url": stub.url(mode), "api_key": "sk-x", "max_retries": 0,
                   "timeout_s": 0.3},
    }  # fmt: skip
    settings = make_settings(tmp_path, chat_model=model)
    with TestClient(create_app(settings, configure_logs=False)) as client:
        upload(client, "kb", "pods.md", KUBE)
        body = {"message": "What is a Pod?"}
        if not stream:
            r = client.post("/v1/namespaces/kb/chat", json=body)
            assert _error(r) == (readme_table()[code], code), r.text
            completions = client.post(
                "/v1/chat/completions",
                json={"model": "kb", "messages": [{"role": "user", "content": "What is a Pod?"}]},
            )
            assert _error(completions) == (readme_table()[code], code)
        else:
            # a stream has sent its 200 already: the error comes in-band, with the status
            with client.stream(
                "POST", "/v1/namespaces/kb/chat", json={**body, "stream": True}
            ) as r:
                raw = "".join(r.iter_text())
            assert r.status_code == 200
            events = [e for e in raw.split("\n\n") if e.startswith("event: error")]
            assert len(events) == 1, raw
            data = orjson.loads(events[0].split("data: ", 1)[1])
            assert (data["status"], data["code"]) == (readme_table()[code], code)
