"""Logging setup, every Prometheus metric Ragtide exports, and the ``stage()`` timer.

All metrics live here so the whole set is visible in one place. Labels stay bounded:
route templates, methods, status codes, stage and component names, outcomes.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import sys
import threading
import time
import traceback
from typing import Any

import orjson
from prometheus_client import Counter, Gauge, Histogram

from ragtide.errors import RagtideError

__all__ = [
    "ANSWER_CACHE",
    "BUDGET_BYTES",
    "BUDGET_EVICTIONS",
    "CHAT_STREAMS_ABANDONED",
    "CHAT_TURNS",
    "CHUNKS_INGESTED",
    "CITATIONS_DROPPED",
    "COMPONENT_ERRORS",
    "DOCUMENTS_INGESTED",
    "EVENT_LOOP_BLOCKED",
    "EVENT_LOOP_LAG",
    "GROUNDED_ANSWERS",
    "HTTP_CONNECTIONS_CLOSED",
    "HTTP_IN_FLIGHT",
    "HTTP_LATENCY",
    "HTTP_OVERLOADED",
    "HTTP_REQUESTS",
    "INTENT_REWRITES",
    "INTENT_REWRITE_SECONDS",
    "LLM_TOKENS",
    "LOCAL_INDEX_CATCH_UP_SECONDS",
    "LOCAL_INDEX_NOTIFIED_AHEAD",
    "PLUGIN_FAILURES",
    "RATE_LIMITED",
    "READY",
    "STAGE_SECONDS",
    "TASKS",
    "TASKS_DEAD_LETTERED",
    "TASKS_QUEUE_DEPTH",
    "TASK_REDELIVERIES",
    "TASK_SECONDS",
    "TENANT_REJECTIONS",
    "TENANT_REQUESTS",
    "TENANT_TOKENS",
    "TENANT_TURNS",
    "TOOL_CALLS",
    "TOOL_CALL_SECONDS",
    "LoopWatch",
    "configure_logging",
    "configure_tenant_labels",
    "labelled",
    "new_request_id",
    "request_id_var",
    "stage",
    "tenant_label",
    "tenant_var",
    "write_access_log",
]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

HTTP_REQUESTS = Counter(
    "ragtide_http_requests", "HTTP requests handled", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "ragtide_http_request_duration_seconds",
    "HTTP request latency, first byte in to last byte out",
    ["method", "route"],
    buckets=_LATENCY_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge("ragtide_http_requests_in_flight", "HTTP requests being served now")
STAGE_SECONDS = Histogram(
    "ragtide_stage_duration_seconds",
    "Time per dialogue pipeline stage",
    ["stage", "component"],
    buckets=_LATENCY_BUCKETS,
)
COMPONENT_ERRORS = Counter(
    "ragtide_component_errors", "Errors raised inside a pipeline stage", ["stage", "error"]
)
CHAT_TURNS = Counter("ragtide_chat_turns", "Chat turns answered", ["intent", "outcome"])
DOCUMENTS_INGESTED = Counter(
    "ragtide_documents_ingested", "Documents ingested by outcome", ["outcome"]
)
CHUNKS_INGESTED = Counter("ragtide_chunks_ingested", "Chunks written to the store")
READY = Gauge("ragtide_ready", "1 when this replica reports ready, else 0")
ANSWER_CACHE = Counter(
    "ragtide_answer_cache", "Answer cache lookups by result (hit, miss, error)", ["result"]
)
RATE_LIMITED = Counter(
    "ragtide_rate_limited",
    "Requests refused by the rate limiter, or admitted because it was down (outcome=fail_open)",
    ["outcome"],
)
LLM_TOKENS = Counter(
    "ragtide_llm_tokens",
    "Tokens the chat model reported using for answers, by component and kind (prompt, completion)",
    ["component", "kind"],
)

# Per tenant. The label set is bounded: the first ``tenants.metric_tenants`` tenants a
# replica sees get their own label, later ones count as "other" (see ``tenant_label``).
TENANT_REQUESTS = Counter(
    "ragtide_tenant_requests",
    "Authenticated requests by tenant and route class",
    ["tenant", "route"],
)
TENANT_TURNS = Counter("ragtide_tenant_chat_turns", "Chat turns answered, by tenant", ["tenant"])
TENANT_TOKENS = Counter(
    "ragtide_tenant_llm_tokens",
    "LLM tokens by tenant and kind (prompt, completion)",
    ["tenant", "kind"],
)
TENANT_REJECTIONS = Counter(
    "ragtide_tenant_rejections",
    "Requests refused by tenant and reason (unauthenticated, forbidden, rate_limited, "
    "quota_exceeded)",
    ["tenant", "reason"],
)
PLUGIN_FAILURES = Counter(
    "ragtide_plugin_failures",
    "A tenant's plugin failed to build, start or run (that tenant's requests fail)",
    ["tenant", "plugin"],
)

# Budgets and server limits: what a replica sheds instead of running out of memory or
# hanging (the HPA sees saturation as 503s and in-flight requests, not as timeouts).
BUDGET_EVICTIONS = Counter(
    "ragtide_budget_evictions",
    "Entries dropped from an in-memory store to stay within its budget, by store (sessions, "
    "answer_cache, search_indexes) and reason (bytes, entries, too_large)",
    ["store", "reason"],
)
BUDGET_BYTES = Gauge(
    "ragtide_budget_bytes",
    "Bytes accounted by the in-memory stores of this process (UTF-8 text + per-entry overhead)",
    ["store"],
)
# The PostgreSQL store's keyword searches: ranked in the replica (``_pg_local``) or in SQL,
# and what kept the replica's indexes current.
POSTGRES_SEARCHES = Counter(
    "ragtide_postgres_searches",
    "Searches of the PostgreSQL store, by kind (keyword, vector) and where they were ranked"
    " (replica, database)",
    ["kind", "ranked"],
)
LOCAL_INDEX_UPDATES = Counter(
    "ragtide_local_keyword_index_updates",
    "Replica-local keyword indexes loaded from the postings (load) or from a snapshot another"
    " replica saved (load_saved), snapshots saved (save) or refreshed as writes accumulate"
    " (refresh), vector graphs built (graph_build), extended by the chunks written since"
    " (graph_extend) or taken from another replica's refresh (graph_adopt), indexes caught up"
    " from the change log, dropped as stale (to be loaded again) or failed (searched in SQL"
    " for a minute)",
    ["kind"],
)
LOCAL_INDEX_NOTIFICATIONS = Counter(
    "ragtide_local_index_notifications",
    "Writes this replica heard of (PostgreSQL NOTIFY, its schema's); those of a namespace"
    " it holds start a catch-up of its local index before a search asks",
)
LOCAL_INDEX_NOTIFIED_AHEAD = Counter(
    "ragtide_local_index_notifications_ahead",
    "Notifications of a generation that the database, read after they came, did not have"
    " (a read replica behind the primary, or a NOTIFY that no write sent): forgotten, so"
    " searches do not wait for them",
)
LOCAL_INDEX_CATCH_UP_SECONDS = Histogram(
    "ragtide_local_index_catch_up_seconds",
    "Time per catch-up of a replica-local index, by step: read (the changes, from the"
    " database) and apply (to the index, in a thread)",
    ["step"],
    buckets=_LATENCY_BUCKETS,
)
LOCAL_INDEX_LISTENERS = Gauge(
    "ragtide_local_index_listeners",
    "Connections LISTENing for the writes of the PostgreSQL store (1 per replica; 0 while"
    " one reconnects: searches then find writes by the namespace's generation)",
)
HTTP_OVERLOADED = Counter(
    "ragtide_http_overloaded",
    "Requests answered 503 overloaded, by limit (in_flight, connections)",
    ["limit"],
)
HTTP_CONNECTIONS_CLOSED = Counter(
    "ragtide_http_connections_closed",
    "Connections the server closed on a timeout (header, keep_alive)",
    ["reason"],
)

# The event loop itself: every request waits while it runs something else.
EVENT_LOOP_LAG = Histogram(
    "ragtide_event_loop_lag_seconds",
    "How late the event loop ran a timer due every 0.1 s: what any request waited then for"
    " work in the loop (or for the GIL, held by another thread)",
    buckets=(0.0005, *_LATENCY_BUCKETS),
)
EVENT_LOOP_BLOCKED = Counter(
    "ragtide_event_loop_blocked",
    "Times the event loop ran no timer for longer than logging.blocked_loop_seconds; each"
    " is logged with the stack of every thread",
)

CHAT_STREAMS_ABANDONED = Counter(
    "ragtide_chat_streams_abandoned",
    "Streamed chat turns whose client went away before the answer was complete "
    "(generation stopped, nothing saved, cached or counted as a turn)",
)

# Tools a chat model called (ragtide.tools): the tool label is a registered tool's name or
# "unknown" (a name the model made up), so it stays bounded.
TOOL_CALLS = Counter(
    "ragtide_tool_calls",
    "Tool calls by tool and outcome (ok, error, timeout, unknown_tool, invalid_arguments, skipped)",
    ["tool", "outcome"],
)
TOOL_CALL_SECONDS = Histogram(
    "ragtide_tool_call_duration_seconds",
    "Time per tool call, argument checks included",
    ["tool"],
    buckets=_LATENCY_BUCKETS,
)

# Follow-ups an LLM rewrote into standalone questions (intent "llm"); any outcome but
# "rewritten" fell back to the rule condenser's query.
INTENT_REWRITES = Counter(
    "ragtide_intent_rewrites",
    "Follow-up rewrites by an LLM, by outcome (rewritten, timeout, error, invalid)",
    ["outcome"],
)
INTENT_REWRITE_SECONDS = Histogram(
    "ragtide_intent_rewrite_duration_seconds",
    "Time per follow-up rewrite, up to the detector's deadline",
    buckets=_LATENCY_BUCKETS,
)

# Dialogue tasks on RabbitMQ (ragtide.worker): KEDA scales workers on the queue's length.
TASKS_QUEUE_DEPTH = Gauge(
    "ragtide_tasks_queue_depth",
    "Ready messages in a task queue (passive declare, refreshed by the worker and on scrape)",
    ["queue"],
)
TASK_SECONDS = Histogram(
    "ragtide_task_seconds",
    "Time a worker spent on one delivery of a task, by kind and outcome",
    ["kind", "outcome"],
    buckets=_LATENCY_BUCKETS,
)
TASKS = Counter(
    "ragtide_tasks",
    "Task deliveries handled by kind and outcome (done, failed, retry, duplicate, orphaned, …)",
    ["kind", "outcome"],
)
TASKS_DEAD_LETTERED = Counter(
    "ragtide_tasks_dead_lettered",
    "Tasks rejected to the dead-letter queue, by kind and reason",
    ["kind", "reason"],
)
TASK_REDELIVERIES = Counter(
    "ragtide_task_redeliveries",
    "Task deliveries that were not the first (a failed attempt or a worker that stopped)",
    ["kind"],
)
WEBHOOKS = Counter(
    "ragtide_webhooks",
    "Task callbacks by outcome (delivered, refused, failed, rejected_url)",
    ["outcome"],
)

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
tenant_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("tenant", default=None)

_labelled_tenants: set[str] = set()
_max_labelled_tenants = 50


def configure_tenant_labels(limit: int) -> None:
    """How many tenants get their own metric label on this replica (the rest: "other")."""
    global _max_labelled_tenants
    _max_labelled_tenants = limit


def tenant_label(tenant: str) -> str:
    if tenant in _labelled_tenants:
        return tenant
    if len(_labelled_tenants) < _max_labelled_tenants:
        _labelled_tenants.add(tenant)
        return tenant
    return "other"


# ``color_message`` is uvicorn's copy of the message with terminal escape codes.
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id is not None:
            entry["request_id"] = request_id
        tenant = tenant_var.get()
        if tenant is not None:
            entry["tenant"] = tenant
        for key, value in record.__dict__.items():
            if key not in _RESERVED:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in record.__dict__.items() if k not in _RESERVED)
        request_id = request_id_var.get()
        tenant = tenant_var.get()
        prefix = f"[{request_id}] " if request_id else ""
        prefix += f"tenant={tenant} " if tenant else ""
        line = f"{record.levelname:<7} {record.name}: {prefix}{record.getMessage()} {extras}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line.rstrip()


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Send every log record (ours, uvicorn's) to stderr in one format. Idempotent."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # our middleware logs requests


def write_access_log(
    request_id: str | None,
    method: str,
    path: str,
    status: int,
    duration_s: float,
    tenant: str | None = None,
) -> None:
    """One JSON access-log line, the same shape ``JsonFormatter`` writes.

    It bypasses ``logging`` on purpose: a LogRecord, the caller lookup and the handler
    lock cost about 0.1 ms, a tenth of a whole search request. One ``write`` per line.
    """
    entry = {
        "ts": round(time.time(), 6),
        "level": "info",
        "logger": "ragtide.access",
        "msg": "request finished",
        "request_id": request_id,
        "method": method,
        "path": path,
        "status": status,
        "duration_s": round(duration_s, 6),
    }
    if tenant is not None:
        entry["tenant"] = tenant
    try:
        os.write(2, orjson.dumps(entry) + b"\n")
    except OSError:  # stderr closed or full: never fail a request over a log line
        pass


_CHILDREN: dict[tuple[Any, ...], Any] = {}  # (metric, *label values) -> its child
_MAX_CHILDREN = 4096


def labelled(metric: Any, *values: str) -> Any:
    """``metric.labels(*values)``, remembered.

    ``labels()`` checks, converts and hashes its arguments under the metric's lock on
    every call, several times per request; the child it returns is the same object each
    time, so the hot paths keep it. At most ``_MAX_CHILDREN`` are remembered (labels stay
    bounded anyway; past that, ``labels()`` is simply called).
    """
    key = (metric, *values)
    child = _CHILDREN.get(key)
    if child is None:
        child = metric.labels(*values)
        if len(_CHILDREN) < _MAX_CHILDREN:
            _CHILDREN[key] = child
    return child


_ID_BYTES = 8  # a request id is 16 hex digits
_ids: list[str] = []


def new_request_id() -> str:
    """16 random hex digits, as ``uuid4().hex[:16]`` gives: from the OS's random source,
    read 512 ids at a time instead of one system call per request."""
    if not _ids:
        raw = os.urandom(_ID_BYTES * 512).hex()
        _ids.extend(raw[i : i + 2 * _ID_BYTES] for i in range(0, len(raw), 2 * _ID_BYTES))
    return _ids.pop()


os.register_at_fork(after_in_child=_ids.clear)  # a forked child draws ids of its own


_STAGE_CHILDREN: dict[tuple[str, str], Any] = {}  # (stage, component) -> labelled histogram


class stage:  # lower case: used like a function, ``async with stage(...)``
    """Time one pipeline stage and count the errors it raises.

    A plain class rather than ``@asynccontextmanager``: it runs twice per search, and the
    generator machinery and the label lookup cost more than the timing itself.
    """

    __slots__ = ("_histogram", "_name", "_start")

    def __init__(self, name: str, component: str) -> None:
        key = (name, component)
        histogram = _STAGE_CHILDREN.get(key)
        if histogram is None:
            histogram = _STAGE_CHILDREN[key] = STAGE_SECONDS.labels(name, component)
        self._histogram, self._name = histogram, name

    async def __aenter__(self) -> None:
        self._start = time.perf_counter()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        self._histogram.observe(time.perf_counter() - self._start)
        if isinstance(exc, RagtideError):
            COMPONENT_ERRORS.labels(self._name, exc.code).inc()


# Grounded answers (ragtide.grounding): what verification found and what the policy did.
CITATIONS_DROPPED = Counter(
    "ragtide_citations_dropped",
    "Citation numbers in answers that named no retrieved chunk, removed",
)
GROUNDED_ANSWERS = Counter(
    "ragtide_grounded_answers",
    "Answers verified against their chunks, by outcome (supported, unsupported, stripped, "
    "declined)",
    ["outcome"],
)


class LoopWatch:
    """Measures how late the running event loop is (``EVENT_LOOP_LAG``), and when it is
    stuck for longer than ``blocked_after`` seconds, logs the stack of every thread once,
    while it is stuck: what blocked it, seen from a thread of its own."""

    def __init__(self, *, blocked_after: float, every: float = 0.1) -> None:
        self._every, self._blocked_after = every, blocked_after
        self._last = time.monotonic()
        self._stopped = threading.Event()
        self._ticker: asyncio.Task[None] | None = None
        self._loop_thread = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._last = time.monotonic()
        self._ticker = self._loop.create_task(self._ticking())
        if self._blocked_after > 0:
            threading.Thread(target=self._watching, name="ragtide-loop-watch", daemon=True).start()

    async def aclose(self) -> None:
        self._stopped.set()
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)

    async def __aenter__(self) -> LoopWatch:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _ticking(self) -> None:
        due = self._last + self._every  # the first one interval after ``start``
        while True:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            self._last = now = time.monotonic()
            EVENT_LOOP_LAG.observe(max(0.0, now - due))
            due = now + self._every

    def _watching(self) -> None:
        reported = False
        assert self._loop is not None
        while not self._stopped.wait(self._every) and not self._loop.is_closed():
            behind = time.monotonic() - self._last - self._every
            if behind <= self._blocked_after:
                reported = False
            elif not reported:
                reported = True
                EVENT_LOOP_BLOCKED.inc()
                logging.getLogger("ragtide.loop").warning(
                    "event loop blocked",
                    extra={"seconds": round(behind, 3), "stacks": self._stacks()},
                )

    def _stacks(self) -> dict[str, str]:
        """The innermost frames of each thread, the event loop's first."""
        names = {t.ident: t.name for t in threading.enumerate()}
        frames = sys._current_frames()
        order = sorted(frames, key=lambda ident: ident != self._loop_thread)
        return {
            f"{names.get(ident, ident)}{' (event loop)' if ident == self._loop_thread else ''}": (
                "".join(traceback.format_list(traceback.extract_stack(frames[ident])[-12:]))
            )
            for ident in order
            if ident != threading.get_ident()
        }
