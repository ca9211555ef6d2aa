"""The web app in headless Chromium against a real ``ragtide serve`` process.

One server per session (authentication on, the bootstrap admin key, a read/write key and
a read-only key of tenant ``default``) and one Chromium per session; each test gets a
fresh browser context (empty session and local storage). Every page:

- may only reach the server: any other origin is aborted and fails the test (offline);
- must not log a console error or throw: the browser's own log line for an HTTP error
  response counts too, unless the test declares that status as one it provokes.

Chromium is Debian's (``scripts/browser-ensure``); Playwright drives it, never downloads one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from ragtide.bench.server import free_port, wait_ready

CHROMIUM = os.environ.get("RAGTIDE_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
ADMIN_KEY = "rt_browser-tests-admin-key-0123456789abcdef"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Server:
    url: str
    admin: str
    writer: str  # read + write
    reader: str  # read only


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("browser-server")
    port = free_port()
    env = {
        **os.environ,
        "RAGTIDE_DATA_DIR": str(data),
        "RAGTIDE_AUTH__ENABLED": "true",
        "RAGTIDE_AUTH__ADMIN_KEY": ADMIN_KEY,
        "RAGTIDE_LOGGING__LEVEL": "WARNING",
    }
    log = (data / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ragtide.cli", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_ready(proc, port, time.perf_counter())
        url = f"http://127.0.0.1:{port}"
        admin = {"authorization": f"Bearer {ADMIN_KEY}"}
        with httpx.Client(base_url=url, headers=admin) as http:
            keys = {}
            for name, scopes in (("writer", ["read", "write"]), ("reader", ["read"])):
                made = http.post(
                    "/v1/tenants/default/keys", json={"scopes": scopes, "description": name}
                )
                assert made.status_code == 201, made.text
                keys[name] = made.json()["key"]
        yield Server(url, ADMIN_KEY, keys["writer"], keys["reader"])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# Module scope, not session: Playwright's sync API keeps an event loop running on the main
# thread while it is open, and every later test that runs a loop of its own would fail.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: run scripts/browser-ensure (Debian's chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Watch:
    """What a page logged; ``expect(401)`` allows the browser's line for one such response."""

    expected: set[int] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    offsite: list[str] = field(default_factory=list)

    def expect(self, *statuses: int) -> None:
        self.expected.update(statuses)

    def console(self, msg: Any) -> None:
        if msg.type != "error":
            return
        found = re.search(r"status of (\d{3})", msg.text)
        if found and int(found.group(1)) in self.expected:
            return
        self.errors.append(f"console: {msg.text} ({msg.location.get('url', '')})")


@dataclass
class Session:
    page: Any
    watch: Watch
    server: Server

    def open(self, path: str = "/", key: str | None = None) -> Any:
        """Open ``path``; with ``key``, as if it had been entered in this tab before."""
        if key is not None:
            self.page.add_init_script(f"sessionStorage.setItem('ragtide.key', {key!r})")
        self.page.goto(self.server.url + path)
        return self.page

    def use_key(self, key: str) -> None:
        self.page.get_by_label("API key").fill(key)
        self.page.get_by_role("button", name="Use key").click()

    def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def _session(browser: Any, server: Server, **context_args: Any) -> Iterator[Session]:
    context = browser.new_context(
        viewport={"width": 1280, "height": 800}, base_url=server.url, **context_args
    )
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    watch = Watch()

    def only_the_server(route: Any) -> None:
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            watch.offsite.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_server)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.on("console", watch.console)
    page.on("pageerror", lambda exc: watch.errors.append(f"pageerror: {exc}"))
    try:
        yield Session(page, watch, server)
        assert watch.offsite == [], f"requests left the server: {watch.offsite}"
        assert watch.errors == [], "\n".join(watch.errors)
    finally:
        context.close()


@pytest.fixture
def ui(browser: Any, server: Server) -> Iterator[Session]:
    yield from _session(browser, server)


@pytest.fixture
def dark_ui(browser: Any, server: Server) -> Iterator[Session]:
    yield from _session(browser, server, color_scheme="dark")
