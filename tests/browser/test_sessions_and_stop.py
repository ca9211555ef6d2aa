"""Conversations kept on the server (any replica lists, resumes and renames them), a
document's chunks, answers whose unsupported sentences are marked, and Stop: in headless
Chromium against two ``ragtide serve`` replicas that share one SQLite file and one Redis
(sessions), with the ``openai`` chat model pointed at ``ScriptedLLM``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from playwright.sync_api import expect

from ragtide.bench.server import free_port, wait_ready
from tests.browser.conftest import Server, Session, _session
from tests.browser.scripted_llm import FIRST, HOLD, ScriptedLLM
from tests.polling import until

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/0"
BREAD = (
    b"# Bread\n\nBread is baked from flour, water, salt and yeast. "
    b"The dough rises while the yeast ferments the sugars.\n"
)
# A handbook long enough for several pages of chunks (20 a page in the app).
HANDBOOK = "# Handbook\n\n" + "\n\n".join(
    f"## Step {i}\n\n" + f"Step {i} of the bakery handbook covers one more task in detail. " * 30
    for i in range(30)
)


@pytest.fixture(scope="module")
def llm() -> Iterator[ScriptedLLM]:
    server = ScriptedLLM()
    yield server
    server.close()


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, llm: ScriptedLLM
) -> Iterator[tuple[Server, Server]]:
    data = tmp_path_factory.mktemp("replicas")
    prefix = f"browser-{uuid.uuid4().hex}"
    env = {
        **os.environ,
        "RAGTIDE_DATA_DIR": str(data),
        "RAGTIDE_EMBEDDER__USE": "hashing",
        "RAGTIDE_CHAT_MODEL__USE": "openai",
        "RAGTIDE_CHAT_MODEL__CONFIG__BASE_URL": llm.url,
        "RAGTIDE_CHAT_MODEL__CONFIG__MAX_RETRIES": "0",
        "RAGTIDE_CHAT_MODEL__CONFIG__TIMEOUT_S": "60",
        "RAGTIDE_MEMORY__USE": "redis",
        "RAGTIDE_MEMORY__CONFIG__URL": REDIS_URL,
        "RAGTIDE_MEMORY__CONFIG__KEY_PREFIX": prefix,
        "RAGTIDE_LOGGING__LEVEL": "WARNING",
    }
    procs: list[subprocess.Popen[bytes]] = []
    servers: list[Server] = []
    logs = []
    try:
        for name in ("a", "b"):
            port = free_port()
            log = (data / f"{name}.log").open("wb")
            logs.append(log)
            proc = subprocess.Popen(
                [sys.executable, "-m", "ragtide.cli", "serve", "--port", str(port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            procs.append(proc)
            wait_ready(proc, port, time.perf_counter())
            servers.append(Server(f"http://127.0.0.1:{port}", "", "", ""))
        with httpx.Client(base_url=servers[0].url, timeout=60) as http:
            for name, body in (("bread.md", BREAD), ("handbook.md", HANDBOOK.encode())):
                r = http.post("/v1/namespaces/default/documents", files={"file": (name, body)})
                assert r.status_code == 201, r.text
        yield servers[0], servers[1]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def on_a(browser: Any, replicas: tuple[Server, Server]) -> Iterator[Session]:
    yield from _session(browser, replicas[0])


@pytest.fixture
def on_b(browser: Any, replicas: tuple[Server, Server]) -> Iterator[Session]:
    yield from _session(browser, replicas[1])


def listed(server: Server) -> list[dict[str, Any]]:
    r = httpx.get(f"{server.url}/v1/namespaces/default/sessions", timeout=30)
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["sessions"]
    return found


def ask(page: Any, question: str) -> Any:
    message = page.get_by_label("Message", exact=True)
    message.fill(question)
    message.press("Enter")
    return page.locator(".msg.answer").last


def test_a_conversation_resumes_and_is_renamed_on_any_replica(on_a: Session, on_b: Session) -> None:
    """Asked on replica a: unsupported sentence marked; listed by b after a load, resumed
    and renamed there; a, reloaded, lists the new name and resumes it."""
    page = on_a.open("/")
    question = f"What is bread baked from {uuid.uuid4().hex[:6]}?"
    answer = ask(page, question)
    expect(answer.locator(".tools")).to_be_visible()
    unsupported = answer.locator(".unsupported")
    expect(unsupported).to_have_count(1)
    expect(unsupported).to_contain_text("The moon is made of green cheese")
    expect(answer).to_contain_text("Dotted underline: not supported by the sources.")
    assert "flour" in answer.locator(".text").inner_text()
    assert "flour" not in unsupported.inner_text()
    on_a.shot("grounding")
    expect(page.get_by_role("button", name=question, exact=True)).to_be_visible()

    other = on_b.open("/")
    other.get_by_role("button", name=question, exact=True).click()
    expect(other.locator(".msg.user")).to_have_text([question])
    expect(other.locator(".msg.answer .text")).to_contain_text("flour, water, salt and yeast")
    other.once("dialog", lambda d: d.accept("Baking basics"))
    other.get_by_role("button", name=f"Rename {question}").click()
    expect(other.get_by_role("button", name="Baking basics", exact=True)).to_be_visible()

    page.reload()
    resumed = page.get_by_role("button", name="Baking basics", exact=True)
    expect(resumed).to_be_visible()
    resumed.click()
    expect(page.locator(".msg.user")).to_have_text([question])
    expect(page.locator(".msg.answer")).to_have_count(1)
    expect(page.locator("#sessions li[aria-current=true]")).to_contain_text("Baking basics")
    titles = [s["title"] for s in listed(on_b.server)]
    assert "Baking basics" in titles and question not in titles


def test_stop_ends_the_stream_and_saves_nothing(on_a: Session, llm: ScriptedLLM) -> None:
    """Stop while the model holds the rest of its answer: the stream ends, the upstream
    request is dropped, the turn is not saved (README: an abandoned stream saves nothing),
    and the page takes the next question at once."""
    page = on_a.open("/")
    question = f"How is bread baked {HOLD} {uuid.uuid4().hex[:6]}?"
    answer = ask(page, question)
    expect(answer.locator(".text")).to_have_text("".join(FIRST))  # then the model waits
    stop, send = page.get_by_role("button", name="Stop"), page.get_by_role("button", name="Send")
    expect(send).to_be_disabled()
    stop.click()
    expect(answer).to_contain_text("Stopped: this question and its answer were not saved.")
    expect(stop).to_be_hidden()
    expect(send).to_be_enabled()
    expect(page.locator(".msg.user.unsaved")).to_have_text([question])
    until(lambda: question in llm.disconnected, "the upstream LLM request to be dropped")
    session_id = page.evaluate("state.session")
    r = httpx.get(f"{on_a.server.url}/v1/namespaces/default/sessions/{session_id}", timeout=30)
    assert r.status_code == 404, r.text
    assert session_id not in [s["session_id"] for s in listed(on_a.server)]
    expect(page.locator("#sessions")).not_to_contain_text(HOLD)

    follow_up = f"What does the dough do {uuid.uuid4().hex[:6]}?"
    answer = ask(page, follow_up)
    expect(answer.locator(".tools")).to_be_visible()
    expect(page.get_by_role("button", name=follow_up, exact=True)).to_be_visible()
    [saved] = [s for s in listed(on_a.server) if s["session_id"] == session_id]
    assert (saved["title"], saved["turns"]) == (follow_up, 2)

    # From the keyboard: Escape stops a stream as well; the conversation keeps its turns.
    held = f"Why does dough rise {HOLD} {uuid.uuid4().hex[:6]}?"
    answer = ask(page, held)
    expect(answer.locator(".text")).to_have_text("".join(FIRST))
    page.keyboard.press("Escape")
    expect(answer).to_contain_text("Stopped: this question and its answer were not saved.")
    until(lambda: held in llm.disconnected, "the second upstream request to be dropped")
    expect(page.get_by_label("Message", exact=True)).to_be_editable()
    [saved] = [s for s in listed(on_a.server) if s["session_id"] == session_id]
    assert saved["turns"] == 2


def test_a_documents_chunks_page_by_page(on_a: Session) -> None:
    page = on_a.open("/")
    total = httpx.get(
        f"{on_a.server.url}/v1/namespaces/default/documents/handbook.md", timeout=30
    ).json()["chunks"]
    assert total > 20  # more than one page of the app's
    page.get_by_role("button", name="Documents").click()
    page.get_by_role("button", name="handbook.md", exact=True).click()
    chunks = page.locator("#doc-chunks li")
    expect(chunks).to_have_count(20)
    expect(chunks.first).to_contain_text("Step 0 of the bakery handbook")
    expect(chunks.first.locator(".muted")).to_contain_text("Step 0")  # its headings
    on_a.shot("document")
    more = page.get_by_role("button", name="More chunks")
    while more.is_visible():
        count = chunks.count()
        more.click()
        expect(chunks).not_to_have_count(count)
    expect(chunks).to_have_count(total)
    expect(chunks.last).to_contain_text(f"Step {29}")
    numbers = chunks.evaluate_all("items => items.map(li => li.value)")
    assert numbers == list(range(1, total + 1))
