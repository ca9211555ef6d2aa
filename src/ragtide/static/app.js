// Ragtide's web app: plain DOM, no framework, no build step. Everything goes through the
// public HTTP API with the key from sessionStorage (never localStorage, never a cookie).
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "ragtide.key";
const PAGE_SIZE = 20;
const SESSIONS_PAGE = 50;
const CHUNKS_PAGE = 20;
const UPLOADS_AT_ONCE = 2;
const state = {
  ns: localStorage.getItem("ragtide.ns") || "default",
  session: null,   // the conversation shown
  stream: null,    // AbortController of the answer being streamed
  lastAsk: null,   // the last question, for Regenerate
  cursors: [null], // documents: the `after` of each page seen
  page: 0,
  tenant: "default",
  known: new Set(), // the namespaces the server listed for this credential
  sessions: [],     // the conversations of the namespace, from the server (latest first)
  sessionsNext: null,
  chunks: null,     // the document shown: { path, next }
  turns: { docs: 0, tenant: 0, sessions: 0, chunks: 0 }, // the latest request of each view: older answers are dropped
};

// --- the API -------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status; this.code = code; this.retryAfter = retryAfter;
  }
}

function authHeaders(extra) {
  const h = Object.assign({}, extra);
  const key = sessionStorage.getItem(KEY);
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

const enc = encodeURIComponent;
const nsPath = (rest) => `/v1/namespaces/${enc(state.ns)}${rest || ""}`;

async function errorOf(response) {
  let code = "http_" + response.status, message = response.statusText || "request failed";
  try {
    const body = await response.json();
    if (body && body.error) ({ code, message } = body.error);
  } catch (_) { /* not JSON: keep the status line */ }
  return new ApiError(response.status, code, message, response.headers.get("retry-after"));
}

async function api(method, path, body) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: authHeaders(body === undefined ? {} : { "content-type": "application/json" }),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (_) {
    throw new ApiError(0, "network", "the server cannot be reached");
  }
  if (!response.ok) throw await errorOf(response);
  return response.status === 204 ? null : response.json();
}

// What went wrong and what to do next, for each status the API answers.
function explain(err) {
  // The API's own message, as a sentence ("namespace 'x' …" → "Namespace 'x' …"; not "a.md: …").
  const raw = err.message || "";
  const msg = /^[a-z]+(\s|$)/.test(raw) ? raw.charAt(0).toUpperCase() + raw.slice(1) : raw;
  const wait = err.retryAfter ? ` Try again in ${err.retryAfter} s.` : " Try again in a moment.";
  switch (err.status) {
    case 0: return "The server cannot be reached: check that Ragtide is running and your connection, then try again.";
    case 401: return `${msg}. Enter a valid API key in the "API key" field and press "Use key".`;
    case 403: return `${msg}. This key may not do that: ask an administrator for a key with the scope it needs.`;
    case 404: return `${msg}. It may have been deleted, or this key may not use it: pick another namespace or reload.`;
    case 413: return `${msg}. Make it smaller (split the file) or ask the operator to raise the limit.`;
    case 415: return `${msg}. Send a supported file: .txt, .md, .html, .pdf, .docx or .jsonl.`;
    case 422: return `${msg}. Correct it and try again.`;
    case 429: return `${msg}. The tenant is over its rate or quota.${wait}`;
    case 503: return `${msg}. The service is starting, draining or overloaded.${wait}`;
    default: return `${msg || "Something went wrong"} (HTTP ${err.status}). Try again; if it persists, tell the operator.`;
  }
}

function showError(err) {
  if (!(err instanceof ApiError)) err = new ApiError(-1, "client", String(err && err.message || err));
  $("alert-text").textContent = explain(err);
  $("alert").hidden = false;
  return err;
}
function clearError() { $("alert").hidden = true; }

// --- small DOM helpers -----------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "onclick") node.addEventListener("click", v);
    else if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}
const when = (seconds) => seconds ? new Date(seconds * 1000).toLocaleString() : "";
const briefly = (seconds) => new Date(seconds * 1000).toLocaleString([], { dateStyle: "short", timeStyle: "short" });
function bytes(n) {
  if (n === null || n === undefined) return "—";
  if (n < 1024) return n + " B";
  return n < 1048576 ? (n / 1024).toFixed(1) + " KB" : (n / 1048576).toFixed(1) + " MB";
}

// --- views ---------------------------------------------------------------------------

function show(view) {
  for (const b of document.querySelectorAll("nav button")) {
    if (b.dataset.view === view) b.setAttribute("aria-current", "page");
    else b.removeAttribute("aria-current");
  }
  for (const name of ["chat", "docs", "admin"]) $("view-" + name).hidden = name !== view;
  if (view === "docs") loadDocuments();
  if (view === "admin") loadAdmin();
  if (view === "chat") $("message").focus();
}

// --- namespaces ----------------------------------------------------------------------

async function loadNamespaces() {
  const names = [];
  let after = null;
  try {
    do {
      const page = await api("GET", "/v1/namespaces?limit=1000" + (after ? "&after=" + enc(after) : ""));
      names.push(...page.namespaces.map((n) => n.namespace));
      after = page.next;
    } while (after && names.length < 10000);
  } catch (err) { showError(err); }
  state.known = new Set(names);
  if (!names.includes(state.ns)) names.unshift(state.ns);
  const select = $("ns");
  select.replaceChildren(...names.map((n) => el("option", { value: n, text: n })));
  select.value = state.ns;
}

function setNamespace(ns) {
  state.ns = ns;
  localStorage.setItem("ragtide.ns", ns);
  $("ns").value = ns;
  for (const s of document.querySelectorAll(".ns-name")) s.textContent = ns;
  state.sessions = []; state.sessionsNext = null;  // another namespace's: never shown here
  newConversation();
  loadSessions();
  state.cursors = [null]; state.page = 0;
  $("doc-view").hidden = true;
  if (!$("view-docs").hidden) loadDocuments();
}

async function createNamespace(event) {
  event.preventDefault();
  const name = $("ns-new").value.trim();
  try {
    await api("PUT", `/v1/namespaces/${enc(name)}`);
    clearError();
    $("ns-new").value = "";
    state.ns = name;
    await loadNamespaces();
    setNamespace(name);
  } catch (err) { showError(err); }
}

async function deleteNamespace() {
  if (!confirm(`Delete namespace "${state.ns}" with all its documents and conversations?`)) return;
  try {
    await api("DELETE", nsPath());
    clearError();
    state.ns = "default";
    await loadNamespaces();
    setNamespace($("ns").value);
  } catch (err) { showError(err); }
}

// --- documents -----------------------------------------------------------------------

async function loadDocuments() {
  for (const s of document.querySelectorAll(".ns-name")) s.textContent = state.ns;
  const after = state.cursors[state.page];
  let page = { documents: [], next: null };
  const turn = ++state.turns.docs;
  if (state.known.has(state.ns)) try {
    page = await api("GET", nsPath(`/documents?limit=${PAGE_SIZE}` + (after ? "&after=" + enc(after) : "")));
    if (turn !== state.turns.docs) return;  // a newer page was asked for
  } catch (err) {
    if (err.status !== 404) { showError(err); return; }  // 404: deleted meanwhile
  }
  // Sizes: shown once the API reports them (a document's `bytes`); it does not yet.
  const sized = page.documents.some((d) => typeof d.bytes === "number");
  $("size-col").hidden = !sized;
  const rows = page.documents.map((d) => el("tr", {},
    el("td", {}, el("button", { type: "button", class: "link", onclick: () => openDocument(d.id), text: d.id })),
    el("td", { text: d.title }),
    el("td", { class: "num", text: String(d.chunks) }),
    sized ? el("td", { class: "num", text: bytes(d.bytes) }) : null,
    el("td", { text: when(d.updated_at) }),
    el("td", {}, el("button", { type: "button", class: "danger", "aria-label": `Delete ${d.id}`, onclick: () => deleteDocument(d.id), text: "Delete" })),
  ));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: sized ? "6" : "5", class: "muted", text: state.page ? "No more documents." : "No documents yet: drop some files above." })));
  $("docs").replaceChildren(...rows);
  if (page.next) state.cursors[state.page + 1] = page.next;
  $("prev").disabled = state.page === 0;
  $("next").disabled = !page.next;
  $("page-label").textContent = `Page ${state.page + 1}`;
}

function turnPage(delta) {
  state.page = Math.max(0, state.page + delta);
  loadDocuments();
}

async function openDocument(id) {
  const path = nsPath("/documents/" + id.split("/").map(enc).join("/"));
  try {
    const d = await api("GET", path);
    const rows = [["Id", d.id], ["Title", d.title], ["Source", d.source], ["Chunks", d.chunks],
      ["Created", when(d.created_at)], ["Updated", when(d.updated_at)], ["Content hash", d.content_hash]];
    for (const [k, v] of Object.entries(d.metadata || {})) rows.push([k, Array.isArray(v) ? v.join(", ") : String(v)]);
    $("doc-meta").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]));
    $("doc-view-title").textContent = d.title || d.id;
    $("doc-chunks").replaceChildren();
    $("chunks-more").hidden = true;
    $("doc-view").hidden = false;
    $("doc-view-title").focus();
    state.chunks = { path, next: null };
    await loadChunks(false);
    $("doc-view").scrollIntoView({ block: "start" });
  } catch (err) { showError(err); }
}

// A document's chunks, a page at a time, in order (numbered by ordinal).
async function loadChunks(more) {
  const shown = state.chunks;
  const turn = ++state.turns.chunks;
  const after = more && shown.next !== null ? `&after=${shown.next}` : "";
  try {
    const page = await api("GET", `${shown.path}/chunks?limit=${CHUNKS_PAGE}${after}`);
    if (turn !== state.turns.chunks) return;  // another document was opened since
    const items = page.chunks.map((c) => el("li", { value: String(c.ordinal + 1) },
      c.headings.length ? el("p", { class: "muted small", text: c.headings.join(" › ") }) : null,
      el("p", { class: "chunk-text", text: c.text })));
    if (more) $("doc-chunks").append(...items); else $("doc-chunks").replaceChildren(...items);
    shown.next = page.next;
    $("chunks-more").hidden = page.next === null;
  } catch (err) { showError(err); }
}

async function deleteDocument(id) {
  if (!confirm(`Delete "${id}" and its chunks?`)) return;
  try {
    await api("DELETE", nsPath("/documents/" + id.split("/").map(enc).join("/")));
    clearError();
    $("doc-view").hidden = true;
    loadDocuments();
  } catch (err) { showError(err); }
}

// Uploads: one request per file (the API takes one `file` each), a few at a time, each
// with its own progress bar and its own outcome (the API's message when refused).
function upload(files) {
  const queue = [];
  for (const file of files) {
    const bar = el("progress", { max: "100", value: "0", "aria-label": `Upload of ${file.name}` });
    const status = el("span", { class: "status", text: "waiting" });
    $("uploads").append(el("li", {}, el("span", { class: "name", text: `${file.name} (${bytes(file.size)})` }), bar, status));
    queue.push({ file, bar, status });
  }
  let running = 0;
  const next = () => {
    while (running < UPLOADS_AT_ONCE && queue.length) {
      running++;
      send(queue.shift()).finally(() => {
        running--;
        if (!queue.length && !running) { state.known.add(state.ns); loadDocuments(); }
        next();
      });
    }
  };
  next();
}

function send({ file, bar, status }) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.open("POST", nsPath("/documents"));
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = Math.round((100 * e.loaded) / e.total); };
    status.textContent = "uploading";
    const done = (ok, text) => {
      status.textContent = text;
      status.className = "status " + (ok ? "ok" : "bad");
      resolve();
    };
    xhr.onerror = () => done(false, explain(new ApiError(0, "network", "")));
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) {
        bar.value = 100;
        const docs = (body && body.documents) || [];
        const bad = docs.filter((d) => d.status === "rejected");
        const good = docs.filter((d) => d.status !== "rejected");
        const parts = good.map((d) => `${d.document_id}: ${d.status}, ${d.chunks} chunk${d.chunks === 1 ? "" : "s"}`).slice(0, 3);
        if (good.length > 3) parts.push(`and ${good.length - 3} more`);
        for (const d of bad.slice(0, 3)) parts.push(`${d.document_id || d.source}: rejected (${d.error ? d.error.message : "no reason"})`);
        done(!bad.length, parts.join("; ") || "nothing to ingest");
      } else {
        const e = (body && body.error) || {};
        done(false, explain(new ApiError(xhr.status, e.code, e.message || xhr.statusText, xhr.getResponseHeader("retry-after"))));
      }
    };
    xhr.send(form);
  });
}

// --- chat ----------------------------------------------------------------------------

// Conversations come from the server (GET …/sessions): every replica and every browser of
// the namespace sees the same list, latest first; nothing is kept in this browser.
async function loadSessions(more) {
  const turn = ++state.turns.sessions;
  const after = more ? state.sessionsNext : null;
  let page = { sessions: [], next: null };
  if (state.known.has(state.ns)) try {
    page = await api("GET", nsPath(`/sessions?limit=${SESSIONS_PAGE}` + (after ? "&after=" + enc(after) : "")));
  } catch (err) {
    if (turn === state.turns.sessions && err.status !== 404) showError(err);  // 404: the namespace went meanwhile
  }
  if (turn !== state.turns.sessions) return;  // a newer list was asked for
  state.sessions = more ? state.sessions.concat(page.sessions) : page.sessions;
  state.sessionsNext = page.next;
  renderSessions();
}

function renderSessions() {
  const items = state.sessions.map((s) => {
    const title = s.title || "Untitled conversation";
    return el("li", { "aria-current": s.session_id === state.session ? "true" : null },
      el("button", { type: "button", class: "open", title, onclick: () => resume(s.session_id), text: title }),
      el("span", { class: "muted small", text: `${briefly(s.updated_at)} · ${s.turns} turns` }),
      el("button", { type: "button", class: "quiet", "aria-label": `Rename ${title}`, onclick: () => renameSession(s), text: "Rename" }),
      el("button", { type: "button", class: "quiet", "aria-label": `Delete ${title}`, onclick: () => deleteSession(s), text: "Delete" }));
  });
  if (!items.length) items.push(el("li", { class: "muted small", text: "No conversations yet." }));
  $("sessions").replaceChildren(...items);
  $("sessions-more").hidden = !state.sessionsNext;
}

async function renameSession(s) {
  const title = prompt("New name for this conversation", s.title);
  if (title === null || !title.trim()) return;
  try {
    await api("PATCH", nsPath("/sessions/" + enc(s.session_id)), { title: title.trim().slice(0, 80) });
    clearError();
  } catch (err) { showError(err); }
  loadSessions();
}

async function deleteSession(s) {
  if (!confirm(`Delete the conversation "${s.title || "Untitled conversation"}"?`)) return;
  try {
    await api("DELETE", nsPath("/sessions/" + enc(s.session_id)));
    clearError();
  } catch (err) {
    if (err.status !== 404) { showError(err); return; }  // gone already
  }
  if (state.session === s.session_id) newConversation();
  loadSessions();
}

async function resume(id) {
  stopStream();
  let session;
  try {
    session = await api("GET", nsPath("/sessions/" + enc(id)));
  } catch (err) {
    if (err.status === 404 && err.code === "session_not_found") {
      err.message = "this conversation is no longer on the server (it expired or was deleted)";
      loadSessions();
    }
    showError(err);
    return;
  }
  clearError();
  newConversation();
  state.session = id;
  for (const turn of session.turns) {  // tool turns (a tool call and its result) are not shown
    if (turn.role === "user") { addUser(turn.content); state.lastAsk = turn.content; }
    else if (turn.role === "assistant") finishAnswer(addAnswer(), turn.content, [], "Sources are not kept in the session history.");
  }
  renderSessions();
  $("message").focus();
}

function newConversation() {
  stopStream();
  state.session = null;
  state.lastAsk = null;
  $("log").replaceChildren(el("p", { class: "empty muted", text: "Ask a question about the documents in this namespace." }));
  closeCitation();
  renderSessions();
}

function newSessionId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function addUser(text) {
  for (const e of $("log").querySelectorAll(".empty")) e.remove();
  const node = el("div", { class: "msg user" }, el("div", { class: "text", text }));
  $("log").append(node);
  return node;
}

function addAnswer() {
  const text = el("div", { class: "text typing" });
  const node = el("div", { class: "msg answer", "aria-busy": "true" }, text);
  $("log").append(node);
  $("log").scrollTop = $("log").scrollHeight;
  return node;
}

// Where the answer says what its sources do not support: [start, end) ranges of the
// sentences grounding marked unsupported, found in order (markers may sit inside them).
function unsupported(answer, grounding) {
  const ranges = [];
  let from = 0;
  for (const s of (grounding && grounding.sentences) || []) {
    const words = s.text.match(/[\p{L}\p{N}]+/gu);
    if (!words) continue;
    const m = new RegExp(words.join("(?:[^\\p{L}\\p{N}]|\\[\\d+\\])+"), "u").exec(answer.slice(from));
    if (!m) continue;  // left out (grounding stripped it)
    const start = from + m.index;
    from = start + m[0].length;
    if (s.supported === false) ranges.push([start, from]);
  }
  return ranges;
}

// answer[from, to) with the unsupported parts wrapped in a marked span.
function marked(answer, from, to, ranges) {
  const out = [];
  let at = from;
  for (const [start, end] of ranges) {
    const a = Math.max(start, at), b = Math.min(end, to);
    if (a >= b) continue;
    if (a > at) out.push(answer.slice(at, a));
    out.push(el("span", { class: "unsupported", title: "Not supported by the sources" }, answer.slice(a, b)));
    if (b === end) out.push(el("span", { class: "sr-only", text: " (not supported by the sources)" }));
    at = b;
  }
  if (at < to) out.push(answer.slice(at, to));
  return out;
}

// The answer with each [n] as a button opening citation n, and what grounding found
// unsupported marked.
function finishAnswer(node, answer, citations, note, grounding) {
  const text = node.querySelector(".text");
  text.classList.remove("typing");
  node.removeAttribute("aria-busy");
  const byIndex = new Map(citations.map((c) => [c.index, c]));
  const ranges = unsupported(answer, grounding);
  const parts = [];
  let last = 0;
  for (const m of answer.matchAll(/\[(\d+)\]/g)) {
    const c = byIndex.get(Number(m[1]));
    if (!c) continue;
    parts.push(...marked(answer, last, m.index, ranges));
    parts.push(el("button", { type: "button", class: "cite-ref", "aria-expanded": "false",
      "aria-label": `Source ${c.index}: ${c.title || c.document_id}`, onclick: (e) => openCitation(e.currentTarget, c, answer),
      text: `[${c.index}]` }));
    last = m.index + m[0].length;
  }
  parts.push(...marked(answer, last, answer.length, ranges));
  text.replaceChildren(...parts);
  if (ranges.length) note = "Dotted underline: not supported by the sources.";
  else if (grounding && grounding.action === "stripped") note = "Sentences the sources did not support were left out.";
  const tools = el("div", { class: "tools" },
    el("button", { type: "button", onclick: (e) => copyAnswer(e.currentTarget, answer), text: "Copy" }),
    el("button", { type: "button", class: "regen", onclick: regenerate, text: "Regenerate" }));
  if (citations.length) {
    node.append(el("ol", { class: "sources", "aria-label": "Sources" }, ...citations.map((c) =>
      el("li", { value: String(c.index) }, el("button", { type: "button", class: "link cite-ref", "aria-expanded": "false",
        onclick: (e) => openCitation(e.currentTarget, c, answer), text: `${c.title || c.document_id}` })))));
  }
  if (note) node.append(el("p", { class: "muted small", text: note }));
  node.append(tools);
}

async function copyAnswer(button, answer) {
  const label = button.dataset.label || (button.dataset.label = button.textContent);
  try {
    await navigator.clipboard.writeText(answer);
    button.textContent = "Copied";
  } catch (_) {
    button.textContent = "Copy failed: select the text instead";
  }
  setTimeout(() => { button.textContent = label; }, 2000);
}

// The sentence of the chunk that supports what the answer says with [n].
function sentences(text) { return text.match(/[^.!?\n]+(?:[.!?]+["')\]]*|\n|$)/g) || [text]; }
const words = (s) => new Set((s.toLowerCase().match(/[\p{L}\p{N}]+/gu) || []).filter((w) => w.length > 2));
function supporting(chunk, answer, index) {
  const claims = sentences(answer).filter((s) => s.includes(`[${index}]`)).join(" ").replace(/\[\d+\]/g, "");
  const want = words(claims || answer);
  let best = null, bestScore = 0;
  for (const s of sentences(chunk)) {
    const have = words(s);
    let shared = 0;
    for (const w of have) if (want.has(w)) shared++;
    const score = shared / Math.sqrt(have.size || 1);
    if (score > bestScore) { best = s; bestScore = score; }
  }
  return best;
}

function openCitation(button, c, answer) {
  for (const b of document.querySelectorAll(".cite-ref[aria-expanded=true]")) b.setAttribute("aria-expanded", "false");
  button.setAttribute("aria-expanded", "true");
  $("cite-title").textContent = `[${c.index}] ${c.title || c.document_id}`;
  $("cite-meta").textContent = `Document ${c.document_id} · chunk ${c.chunk_id} · score ${c.score}`;
  const hit = supporting(c.text, answer, c.index);
  const at = hit ? c.text.indexOf(hit) : -1;
  const quote = $("cite-text");
  if (at < 0) quote.replaceChildren(c.text);
  else quote.replaceChildren(c.text.slice(0, at), el("mark", { text: hit }), c.text.slice(at + hit.length));
  $("cite").hidden = false;
  $("cite-title").focus();
  const mark = quote.querySelector("mark");
  if (mark) mark.scrollIntoView({ block: "nearest" });
}
function closeCitation() {
  $("cite").hidden = true;
  for (const b of document.querySelectorAll(".cite-ref[aria-expanded=true]")) b.setAttribute("aria-expanded", "false");
}

function streaming(on) {
  $("send").disabled = on;
  $("stop").hidden = !on;
  for (const b of document.querySelectorAll(".regen")) b.disabled = on;
}

function stopStream() {
  if (state.stream) state.stream.abort();
  state.stream = null;
}

async function ask(message) {
  clearError();
  if (!state.session) state.session = newSessionId();
  const session = state.session;
  state.lastAsk = message;
  addUser(message);
  const node = addAnswer();
  const text = node.querySelector(".text");
  const ctrl = new AbortController();
  state.stream = ctrl;
  streaming(true);
  let shown = "";
  try {
    const response = await fetch(nsPath("/chat"), {
      method: "POST",
      headers: authHeaders({ "content-type": "application/json", accept: "text/event-stream" }),
      body: JSON.stringify({ message, session_id: session, stream: true }),
      signal: ctrl.signal,
    });
    if (!response.ok) throw await errorOf(response);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "", finished = false;
    while (!finished) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const raw = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = "message", data = "";
        for (const line of raw.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trim();
        }
        const payload = data ? JSON.parse(data) : {};
        if (name === "token") { shown += payload.text; text.textContent = shown; }
        else if (name === "done") { finishAnswer(node, payload.answer, payload.citations || [], null, payload.grounding); finished = true; }
        else if (name === "error") throw new ApiError(payload.status || 500, payload.code, payload.message);
      }
      $("log").scrollTop = $("log").scrollHeight;
    }
    if (!finished) throw new ApiError(0, "network", "the answer was cut off");
  } catch (err) {
    if (ctrl.signal.aborted) {
      // The server abandons a turn whose client leaves: neither it nor this question is saved.
      finishAnswer(node, shown, [], "Stopped: this question and its answer were not saved.");
      node.previousElementSibling.classList.add("unsaved");
    } else {
      node.classList.add("error");
      finishAnswer(node, shown, [], explain(showError(err)));
    }
  } finally {
    if (state.stream === ctrl) state.stream = null;
    streaming(false);
    loadSessions();
  }
}

function regenerate() {
  if (!state.lastAsk || state.stream) return;
  // The same question again, in the same conversation: drop the last exchange from view.
  const log = $("log");
  const answers = log.querySelectorAll(".msg.answer");
  const users = log.querySelectorAll(".msg.user");
  if (answers.length) answers[answers.length - 1].remove();
  if (users.length) users[users.length - 1].remove();
  closeCitation();
  ask(state.lastAsk);
}

// --- admin ---------------------------------------------------------------------------

async function loadAdmin() {
  $("admin-none").hidden = true;
  try {
    const { tenants } = await api("GET", "/v1/tenants");
    $("tenants-box").hidden = false;
    const ids = [...new Set(["default", ...tenants.map((t) => t.id)])];  // default has no record
    $("tenants").replaceChildren(...ids.map((id) => el("li", {},
      el("button", { type: "button", onclick: () => { $("tenant").value = id; loadTenant(); }, text: id }))));
  } catch (err) {
    $("tenants-box").hidden = true;
    // 403 for a tenant's own admin key (and the open loopback default): not the platform admin.
    if (err.status === 403 && /lacks the 'admin' scope/.test(err.message)) {
      $("admin-body").hidden = true;
      $("admin-none").hidden = false;
      return;
    }
    if (err.status !== 403) { showError(err); return; }
  }
  $("admin-body").hidden = false;
  loadTenant();
}

async function loadTenant(event) {
  if (event) event.preventDefault();
  const t = $("tenant").value.trim();
  state.tenant = t;
  const turn = ++state.turns.tenant;
  try {
    const [usage, { keys }] = await Promise.all([
      api("GET", `/v1/tenants/${enc(t)}/usage`), api("GET", `/v1/tenants/${enc(t)}/keys`)]);
    if (turn !== state.turns.tenant) return;  // another tenant was asked for since
    clearError();
    const rows = [["Namespaces", usage.namespaces], ["Documents", usage.documents], ["Chunks", usage.chunks],
      ["Stored", bytes(usage.stored_bytes)], ["Live keys", usage.keys]];
    for (const [k, v] of Object.entries(usage.today || {})) rows.push([`Today: ${k.replace(/_/g, " ")}`, v]);
    for (const [k, v] of Object.entries(usage.quotas || {})) {
      if (v !== null) rows.push([`Quota: ${k.replace(/_/g, " ")}`, v === 0 && k !== "burst_seconds" ? "unlimited" : v]);
    }
    $("usage").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]));
    $("keys").replaceChildren(...keys.map((k) => el("tr", {},
      el("td", {}, el("code", { text: k.prefix })), el("td", { text: k.scopes.join(", ") }),
      el("td", { text: k.namespaces ? k.namespaces.join(", ") : "all" }), el("td", { text: k.description }),
      el("td", { text: when(k.created_at) }),
      el("td", { text: k.revoked_at ? "revoked" : (k.expires_at && k.expires_at * 1000 < Date.now() ? "expired" : "active") }),
      el("td", {}, k.revoked_at ? null : el("button", { type: "button", class: "danger", "aria-label": `Revoke key ${k.prefix}`,
        onclick: () => revokeKey(k.id), text: "Revoke" })))));
  } catch (err) { showError(err); }
}

async function createTenant(event) {
  event.preventDefault();
  const id = $("tenant-new").value.trim();
  try {
    await api("PUT", `/v1/tenants/${enc(id)}`, { id });
    $("tenant-new").value = "";
    $("tenant").value = id;
    await loadAdmin();
  } catch (err) { showError(err); }
}

async function createKey(event) {
  event.preventDefault();
  const scopes = [...document.querySelectorAll("input[name=scope]:checked")].map((i) => i.value);
  const namespaces = $("key-ns").value.split(",").map((s) => s.trim()).filter(Boolean);
  const body = { scopes, description: $("key-desc").value.trim() };
  if (namespaces.length) body.namespaces = namespaces;
  try {
    const made = await api("POST", `/v1/tenants/${enc(state.tenant)}/keys`, body);
    $("new-key-value").textContent = made.key;
    $("new-key").hidden = false;
    $("new-key-copy").focus();
    loadTenant();
  } catch (err) { showError(err); }
}

async function revokeKey(id) {
  if (!confirm("Revoke this key? Clients using it stop working.")) return;
  try {
    await api("DELETE", `/v1/tenants/${enc(state.tenant)}/keys/${enc(id)}`);
    loadTenant();
  } catch (err) { showError(err); }
}

// --- wiring --------------------------------------------------------------------------

function useKey(event) {
  event.preventDefault();
  const key = $("key").value.trim();
  if (key) sessionStorage.setItem(KEY, key); else sessionStorage.removeItem(KEY);
  $("key").value = "";
  $("key").placeholder = key ? "key in use (this tab only)" : "rt_… (none on localhost)";
  $("new-key").hidden = true;
  clearError();
  reload();
}

async function reload() {
  await loadNamespaces();
  setNamespace($("ns").value);
  if (!$("view-admin").hidden) loadAdmin();
}

function init() {
  for (const b of document.querySelectorAll("nav button")) b.addEventListener("click", () => show(b.dataset.view));
  $("key-form").addEventListener("submit", useKey);
  $("key-clear").addEventListener("click", () => { $("key").value = ""; useKey(new Event("submit")); });
  if (sessionStorage.getItem(KEY)) $("key").placeholder = "key in use (this tab only)";
  $("alert-close").addEventListener("click", clearError);
  $("ns").addEventListener("change", (e) => setNamespace(e.target.value));
  $("ns-form").addEventListener("submit", createNamespace);
  $("ns-delete").addEventListener("click", deleteNamespace);
  $("new-chat").addEventListener("click", () => { newConversation(); $("message").focus(); });
  $("sessions-more").addEventListener("click", () => loadSessions(true));
  $("chunks-more").addEventListener("click", () => loadChunks(true));
  $("ask").addEventListener("submit", (e) => {
    e.preventDefault();
    const message = $("message").value.trim();
    if (!message || state.stream) return;
    $("message").value = "";
    ask(message);
  });
  $("message").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); $("ask").requestSubmit(); }
  });
  $("stop").addEventListener("click", stopStream);
  document.addEventListener("keydown", (e) => {
    if (e.key !== "Escape") return;
    if (state.stream) stopStream();
    else if (!$("cite").hidden) closeCitation();
  });
  $("cite-close").addEventListener("click", closeCitation);
  $("doc-close").addEventListener("click", () => { $("doc-view").hidden = true; });
  $("prev").addEventListener("click", () => turnPage(-1));
  $("next").addEventListener("click", () => turnPage(1));
  $("files").addEventListener("change", (e) => { upload(e.target.files); e.target.value = ""; });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); upload(e.dataTransfer.files); });
  $("tenant-pick").addEventListener("submit", loadTenant);
  $("tenant-form").addEventListener("submit", createTenant);
  $("key-create").addEventListener("submit", createKey);
  $("new-key-copy").addEventListener("click", (e) => copyAnswer(e.currentTarget, $("new-key-value").textContent));
  reload();
}

init();
