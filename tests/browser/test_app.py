"""The web app, driven in headless Chromium against a running ``ragtide serve``.

Each test drives what a person does (keyboard where it matters) and checks what they see;
the conftest fails any test whose page logged a console error, threw, or reached past the
server. The screenshots in the README are taken here (docs/screenshots).
"""

from __future__ import annotations

import gzip
import json
import re
from importlib.resources import files
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Server, Session

pytestmark = pytest.mark.integration

GUIDE = files("ragtide").joinpath("demo", "scaling.md").read_text(encoding="utf-8")
FAQ = "\n".join(
    json.dumps({"_id": f"faq-{i:02d}", "title": f"FAQ {i}", "text": text})
    for i, text in enumerate(
        [
            "Readiness probes tell Kubernetes when a replica can take traffic.",
            "A replica drains on SIGTERM: it stops accepting and finishes open turns.",
        ]
        * 11
    )
)
DROP = """(files) => {
    const dt = new DataTransfer();
    for (const f of files) dt.items.add(new File([f.text], f.name, {type: f.type}));
    return dt;
}"""


def drop_files(page: Any, specs: list[dict[str, str]]) -> None:
    """Drag-and-drop: a drop event on the drop zone carrying these files."""
    data = page.evaluate_handle(DROP, specs)
    page.dispatch_event("#drop", "drop", {"dataTransfer": data})


def unlabelled(page: Any) -> list[str]:
    """Form controls without an accessible name (label, aria-label or aria-labelledby)."""
    result: list[str] = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea, button, progress')]
            .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                         && !e.getAttribute('aria-labelledby') && !e.textContent.trim())
            .map(e => e.outerHTML.slice(0, 80))"""
    )
    return result


def test_upload_ask_cite_and_resume(ui: Session) -> None:
    """Three files dropped (one refused with the API's message), a streamed answer, a
    citation opened beside it, and the conversation resumed after a reload."""
    page = ui.open("/", key=ui.server.writer)
    ui.watch.expect(415)  # the refused upload
    assert unlabelled(page) == []
    page.get_by_role("button", name="Documents").click()
    page.get_by_label("New namespace").fill("handbook")
    page.get_by_role("button", name="Create", exact=True).click()
    expect(page.get_by_label("Namespace", exact=True)).to_have_value("handbook")

    drop_files(
        page,
        [
            {"name": "scaling.md", "text": GUIDE, "type": "text/markdown"},
            {"name": "faq.jsonl", "text": FAQ, "type": "application/jsonl"},
            {"name": "setup.exe", "text": "MZ\x00\x01binary", "type": "application/octet-stream"},
        ],
    )
    uploads = page.locator("#uploads li")
    expect(uploads).to_have_count(3)
    expect(uploads.nth(0).locator(".status")).to_have_text(
        re.compile(r"scaling\.md: created, \d+ chunks")
    )
    expect(uploads.nth(1).locator(".status")).to_have_text(
        re.compile(r"faq-00: created.*and 19 more")
    )
    refused = uploads.nth(2).locator(".status")
    expect(refused).to_have_class(re.compile("bad"))
    expect(refused).to_contain_text("Send a supported file")
    for i in range(3):
        expect(uploads.nth(i).locator("progress")).to_have_attribute("value", re.compile(r"\d+"))

    # The list: 23 documents, 20 a page, with chunk counts and dates.
    rows = page.locator("#docs tr")
    expect(rows).to_have_count(20)
    expect(page.locator("#next")).to_be_enabled()
    ui.shot("documents")
    page.locator("#next").click()
    expect(rows).to_have_count(3)
    expect(rows.last).to_contain_text("scaling.md")
    page.get_by_role("button", name="scaling.md", exact=True).click()
    expect(page.locator("#doc-meta")).to_contain_text("Scaling Ragtide on Kubernetes")
    chunks = httpx.get(
        f"{ui.server.url}/v1/namespaces/handbook/documents/scaling.md/chunks",
        headers={"authorization": f"Bearer {ui.server.writer}"},
    ).json()["chunks"]
    shown = page.locator("#doc-chunks li")
    expect(shown).to_have_count(len(chunks))
    for i, chunk in enumerate(chunks):
        expect(shown.nth(i).locator(".chunk-text")).to_have_text(chunk["text"])
    expect(page.locator("#chunks-more")).to_be_hidden()
    page.once("dialog", lambda d: d.accept())
    rows.filter(has_text="faq-21").get_by_role("button", name="Delete").click()
    expect(rows).to_have_count(2)

    # Chat, from the keyboard; the answer streams in, token by token.
    page.get_by_role("button", name="Chat").click()
    page.evaluate(
        """() => { window.partials = [];
           new MutationObserver(records => { for (const r of records)
               for (const n of r.removedNodes)
                   if (n.nodeType === 3 && n.data) window.partials.push(n.data);
           }).observe(document.getElementById('log'), {childList: true, subtree: true}); }"""
    )
    message = page.get_by_label("Message", exact=True)
    expect(message).to_be_focused()
    message.type("Why does CPU alone under-scale a RAG service?")
    message.press("Enter")
    answer = page.locator(".msg.answer").last
    expect(answer.locator(".tools")).to_be_visible()
    partials: list[str] = page.evaluate("window.partials")
    assert len(set(partials)) >= 3, partials  # the text grew several times before the end
    assert all(p for p in partials)

    cite = answer.locator(".text .cite-ref").first
    expect(cite).to_have_text(re.compile(r"\[\d+\]"))
    cite.click()
    panel = page.locator("#cite")
    expect(panel).to_be_visible()
    expect(page.locator("#cite-title")).to_be_focused()
    mark = panel.locator("mark")
    expect(mark).to_have_count(1)
    assert len(mark.inner_text().split()) >= 4
    assert mark.inner_text().strip() in GUIDE.replace("\n", " ") or mark.inner_text() in GUIDE
    ui.shot("chat")

    # Copy puts the answer on the clipboard.
    answer.get_by_role("button", name="Copy").click()
    expect(answer.get_by_role("button", name="Copied")).to_be_visible()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert "[1]" in copied or "[" in copied

    # A follow-up, then reload: the conversation comes back from the server.
    message.fill("And what does KEDA scale on?")
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".msg.answer")).to_have_count(2)
    expect(page.locator(".msg.answer").last.locator(".tools")).to_be_visible()
    title = "Why does CPU alone under-scale a RAG service?"
    page.reload()
    expect(page.get_by_label("Namespace", exact=True)).to_have_value("handbook")
    page.get_by_role("button", name=title, exact=True).click()
    expect(page.locator(".msg.user")).to_have_count(2)
    expect(page.locator(".msg.answer")).to_have_count(2)
    expect(page.locator(".msg.user").last).to_have_text("And what does KEDA scale on?")

    # Regenerate asks the last question again, in the same conversation.
    page.locator(".msg.answer").last.get_by_role("button", name="Regenerate").click()
    expect(page.locator(".msg.answer").last.locator(".tools")).to_be_visible()
    expect(page.locator(".msg.answer")).to_have_count(2)

    # Rename and delete, both on the server: a reload lists the new name, then nothing.
    page.once("dialog", lambda d: d.accept("CPU and KEDA"))
    page.get_by_role("button", name=f"Rename {title}").click()
    expect(page.get_by_role("button", name="CPU and KEDA", exact=True)).to_be_visible()
    page.reload()
    expect(page.get_by_role("button", name="CPU and KEDA", exact=True)).to_be_visible()
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete CPU and KEDA").click()
    expect(page.locator("#sessions")).to_contain_text("No conversations yet.")
    listed = httpx.get(
        f"{ui.server.url}/v1/namespaces/handbook/sessions",
        headers={"authorization": f"Bearer {ui.server.writer}"},
    ).json()["sessions"]
    assert listed == []


def test_errors_say_what_to_do(ui: Session) -> None:
    """A wrong key (401), a namespace that is not there (404), a body too large (413)."""
    ui.watch.expect(401, 404, 413)  # before the page loads: it may ask without a key first
    page = ui.open("/")
    ui.use_key("rt_not-a-real-key")
    alert = page.get_by_role("alert")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text('Enter a valid API key in the "API key" field')
    ui.shot("error")
    page.get_by_role("button", name="Dismiss").click()
    expect(alert).to_be_hidden()

    ui.use_key(ui.server.writer)
    expect(alert).to_be_hidden()
    page.get_by_label("Message", exact=True).fill("x" * 2_000_000)  # over the 1 MiB JSON body limit
    page.get_by_role("button", name="Send").click()
    expect(alert).to_contain_text("Make it smaller")
    expect(page.locator(".msg.answer.error")).to_be_visible()

    # A conversation listed here that another tab or replica deletes meanwhile.
    writer = {"authorization": f"Bearer {ui.server.writer}"}
    with httpx.Client(base_url=ui.server.url, headers=writer, timeout=30) as http:
        http.put("/v1/namespaces/default")
        chat = {"message": "Old chat", "session_id": "web-gone"}
        assert http.post("/v1/namespaces/default/chat", json=chat).status_code == 200
        page.reload()
        old = page.get_by_role("button", name="Old chat", exact=True)
        expect(old).to_be_visible()
        assert http.delete("/v1/namespaces/default/sessions/web-gone").status_code == 204
    old.click()
    expect(alert).to_contain_text("no longer on the server")
    expect(old).to_have_count(0)


def test_a_read_only_key(ui: Session, server: Server) -> None:
    """A key with only the read scope: it can chat and list, and is told why it cannot write."""
    with httpx.Client(
        base_url=server.url, headers={"authorization": f"Bearer {server.writer}"}
    ) as http:
        http.put("/v1/namespaces/notes")
        http.post(
            "/v1/namespaces/notes/documents",
            files={
                "file": (
                    "bread.md",
                    b"# Bread\n\nBread is baked from flour, water, salt and yeast.\n",
                )
            },
        )
    page = ui.open("/", key=server.reader)
    ui.watch.expect(403)
    page.get_by_label("Namespace", exact=True).select_option("notes")
    page.get_by_label("Message", exact=True).fill("What is bread baked from?")
    page.get_by_label("Message", exact=True).press("Enter")
    expect(page.locator(".msg.answer .tools")).to_be_visible()
    expect(page.locator(".msg.answer .text")).to_contain_text("flour")

    page.get_by_role("button", name="Documents").click()
    expect(page.locator("#docs")).to_contain_text("bread.md")
    drop_files(page, [{"name": "more.md", "text": "# More\n\nMore text.", "type": "text/markdown"}])
    status = page.locator("#uploads li .status")
    expect(status).to_contain_text("lacks the 'write' scope")
    expect(status).to_contain_text("ask an administrator for a key")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete bread.md").click()
    expect(page.get_by_role("alert")).to_contain_text("lacks the 'write' scope")
    expect(page.locator("#docs")).to_contain_text("bread.md")
    page.get_by_role("button", name="Admin").click()
    expect(page.locator("#admin-none")).to_be_visible()


def test_admin_view_in_the_dark(dark_ui: Session) -> None:
    """Tenants, usage and keys for the admin key; a new key is shown once."""
    ui = dark_ui
    page = ui.open("/", key=ui.server.admin)
    page.get_by_role("button", name="Admin").click()
    expect(page.locator("#tenants")).to_contain_text("default")
    expect(page.locator("#usage")).to_contain_text("Documents")
    page.get_by_label("New tenant id").fill("acme")
    page.get_by_role("button", name="Create tenant").click()
    expect(page.locator("#tenants")).to_contain_text("acme")
    expect(page.get_by_label("Tenant", exact=True)).to_have_value("acme")
    page.get_by_label("write").check()
    page.get_by_label("Description").fill("ingest bot")
    page.get_by_role("button", name="Create key").click()
    made = page.locator("#new-key-value")
    expect(made).to_have_text(re.compile(r"^rt_"))
    expect(page.locator("#keys")).to_contain_text("ingest bot")
    ui.shot("admin-dark")
    key = made.inner_text()
    with httpx.Client(base_url=ui.server.url) as http:
        assert (
            http.get("/v1/namespaces", headers={"authorization": f"Bearer {key}"}).status_code
            == 200
        )
    page.reload()  # shown once: gone after a reload, and never listed
    page.get_by_role("button", name="Admin").click()
    expect(page.locator("#keys")).to_contain_text("writer")  # tenant default's
    page.get_by_label("Tenant", exact=True).fill("acme")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#keys")).to_contain_text("ingest bot")
    assert key not in page.content()
    page.once("dialog", lambda d: d.accept())
    page.locator("#keys tr", has_text="ingest bot").get_by_role(
        "button", name=re.compile("Revoke")
    ).click()
    expect(page.locator("#keys tr", has_text="ingest bot")).to_contain_text("revoked")


def test_docs_and_redoc_offline(ui: Session) -> None:
    """Swagger UI and ReDoc render from the packaged assets (the conftest aborts any other
    origin, so a CDN reference would fail here)."""
    page = ui.open("/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Ragtide")
    expect(page.locator(".opblock").first).to_be_visible()
    page = ui.open("/redoc")
    expect(page.locator("h1", has_text="Ragtide")).to_be_visible(timeout=30_000)


def test_the_page_is_small_and_cached(server: Server) -> None:
    """The first load is a handful of small files; assets are immutable, the page revalidates."""
    with httpx.Client(base_url=server.url, headers={"accept-encoding": "gzip"}) as http:
        page = http.get("/")
        assert page.headers["cache-control"] == "no-cache"
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert http.get("/", headers={"if-none-match": page.headers["etag"]}).status_code == 304
        total = len(gzip.compress(page.content))
        for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
            r = http.get(asset)
            assert r.status_code == 200 and "immutable" in r.headers["cache-control"], asset
            assert r.headers["content-encoding"] == "gzip" or asset.endswith(".svg")
            total += int(r.headers.get("content-length", len(r.content)))
        assert total < 30_000, total  # bytes on the wire for the whole app
        assert http.get("/static/nothing.js").status_code == 404
        docs = http.get("/docs").text
        assert "cdn" not in docs and "/static/docs/swagger-ui-bundle.js" in docs
