"""Process settings: built once (by the CLI or the caller of ``create_app``) and passed in.

Every field can be set from the environment with the ``RAGTIDE_`` prefix and ``__`` for
nesting: ``RAGTIDE_DATA_DIR``, ``RAGTIDE_HTTP__PORT``, ``RAGTIDE_CHAT_MODEL__USE=openai``,
``RAGTIDE_CHAT_MODEL__CONFIG__MODEL=gpt-4o-mini``. Nothing here touches the disk or the
network; directories are created when the service starts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "AuthSettings",
    "ChatSettings",
    "ComponentSpec",
    "GrpcSettings",
    "HttpSettings",
    "JWTSettings",
    "LogSettings",
    "PluginSettings",
    "QuotaSettings",
    "RabbitSettings",
    "RateLimitSettings",
    "RedisSettings",
    "RetrievalSettings",
    "Settings",
    "StoreSpec",
    "TenantSettings",
    "WebhookSettings",
    "WorkerSettings",
    "default_data_dir",
]


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/ragtide``, else ``~/.local/share/ragtide``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ragtide"


class ComponentSpec(BaseModel):
    """Which plugin fills a role (its entry-point name) and that plugin's own config."""

    use: str
    config: dict[str, Any] = Field(default_factory=dict)


class StoreSpec(ComponentSpec):
    """The document store; ``url`` picks it: ``postgresql://…`` or ``sqlite:///path``."""

    use: str = "sqlite"
    url: str | None = Field(None, description="Shorthand that sets use and config.")

    @model_validator(mode="after")
    def _from_url(self) -> StoreSpec:
        if self.url is None:
            return self
        scheme = self.url.split(":", 1)[0].lower()
        if scheme in ("postgres", "postgresql") or scheme.startswith("postgresql+"):
            self.use, self.config = "postgres", {**self.config, "url": self.url}
        elif scheme == "sqlite":
            path = self.url.removeprefix("sqlite://").removeprefix("/") or None
            self.use = "sqlite"
            self.config = {**self.config, **({"path": "/" + path} if path else {})}
        else:
            raise ValueError(f"unsupported store URL scheme {scheme!r}")
        return self


class RedisSettings(BaseModel):
    url: str | None = Field(
        None,
        description="When set, sessions, the answer cache and rate limits live in Redis "
        "(unless their own component is set explicitly).",
    )


class RateLimitSettings(BaseModel):
    enabled: bool = Field(False, description="Limit chat, search and uploads per client.")
    fail_open: bool = Field(True, description="Admit requests when the limiter is down.")


class HttpSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_body_bytes: int = Field(1_048_576, gt=0, description="Largest JSON request body.")
    max_upload_bytes: int = Field(20 * 1_048_576, gt=0, description="Largest uploaded file.")
    drain_seconds: float = Field(
        0.0, ge=0, description="After SIGTERM: keep serving (with /ready at 503) this long."
    )
    grace_seconds: float = Field(
        25.0, ge=0, description="After draining: wait this long for in-flight requests."
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="A connection must send a request's whole head (line and headers) "
        "within this long of connecting or of the request's first byte, or it is closed.",
    )
    keep_alive_s: float = Field(
        5.0, gt=0, description="An idle keep-alive connection is closed after this long."
    )
    max_connections: int = Field(
        1000,
        gt=0,
        description="Open connections served at once; a request on a connection past it "
        "is answered 503 overloaded (probes excepted).",
    )
    max_in_flight: int = Field(
        256,
        gt=0,
        description="Requests served at once; past it a request is answered 503 overloaded "
        "with Retry-After (probes and /metrics excepted).",
    )


class GrpcSettings(BaseModel):
    """The gRPC service beside HTTP, in the same process (``ragtide.grpc``; extra ``grpc``)."""

    port: int = Field(0, ge=0, le=65535, description="Its own port; 0 turns gRPC off.")
    host: str | None = Field(None, description="Bind address; None binds http.host.")
    max_message_bytes: int = Field(
        4 * 1_048_576, gt=0, description="Largest message received (an upload's pieces)."
    )
    max_concurrent_rpcs: int = Field(
        256, gt=0, description="Calls served at once; past it a call is RESOURCE_EXHAUSTED."
    )
    reflection: bool = Field(True, description="Serve grpc.reflection (grpcurl, generic clients).")
    health_interval_s: float = Field(
        2.0, gt=0, description="How often grpc.health.v1 re-checks readiness (as /ready)."
    )


class RetrievalSettings(BaseModel):
    top_k: int = Field(5, gt=0, le=100, description="Chunks given to the chat model.")
    max_top_k: int = Field(100, gt=0, description="Largest top_k a /search request may ask.")


class ToolSettings(BaseModel):
    """Bounds of one turn's tool loop (``ragtide.tools.ToolLimits``); tools are per tenant."""

    max_steps: int = Field(4, ge=0, le=32, description="Model turns that may call tools.")
    max_calls_per_step: int = Field(4, ge=1, le=32)
    tool_timeout_s: float = Field(5.0, gt=0, description="Time one tool call may take.")
    deadline_s: float = Field(60.0, gt=0, description="The whole loop, model calls included.")


class ChatSettings(BaseModel):
    history_turns: int = Field(10, ge=0, description="Turns of history loaded per request.")
    max_message_chars: int = Field(8000, gt=0)
    grounding: Literal["annotate", "strip", "decline"] = Field(
        "annotate",
        description="What to do with an answer the retrieved text does not support: report "
        "it (annotate), drop its unsupported sentences (strip), or decline (decline).",
    )
    min_support: float = Field(
        0.5, ge=0, le=1, description="Support a sentence needs to count as supported."
    )
    decline_text: str = Field(
        "I could not find this in the documents.", min_length=1, max_length=500
    )
    tools: ToolSettings = ToolSettings()


class LogSettings(BaseModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "console"] = "json"
    access_log: bool = True
    log_content: bool = Field(False, description="Log prompts, documents and answers.")
    blocked_loop_seconds: float = Field(
        1.0,
        ge=0,
        description="Log every thread's stack when the event loop runs nothing for this long"
        " (0: never); its lag is measured either way (ragtide_event_loop_lag_seconds).",
    )


class PluginSettings(BaseModel):
    allow: list[str] | None = Field(
        None, description="Entry-point names that may load; None allows every installed plugin."
    )


class RabbitSettings(BaseModel):
    """Dialogue tasks on RabbitMQ (``POST …/tasks``, ``ragtide worker``); see docs/worker.md."""

    url: str | None = Field(
        None, description="amqp:// URL of RabbitMQ; None disables tasks (POST …/tasks is 501)."
    )
    queue: str = Field(
        "ragtide.tasks",
        min_length=1,
        max_length=250,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="Durable quorum queue of tasks; failed tasks go to '<queue>.dead'.",
    )
    max_attempts: int = Field(3, ge=1, le=100, description="Deliveries before a task fails.")
    prefetch: int = Field(4, ge=1, le=1000, description="Unacknowledged tasks per worker.")
    connect_timeout_s: float = Field(5.0, gt=0)
    publish_timeout_s: float = Field(5.0, gt=0, description="Wait for the broker's confirm.")
    retry_delay_s: float = Field(
        1.0, ge=0, description="Pause before a failed attempt is requeued, times the attempt."
    )


class WorkerSettings(BaseModel):
    host: str = Field("0.0.0.0", description="Bind address of /healthz, /ready and /metrics.")
    port: int = Field(8001, ge=0, le=65535)
    grace_seconds: float = Field(
        25.0, ge=0, description="After SIGTERM: wait this long for in-flight tasks."
    )
    depth_interval_s: float = Field(5.0, gt=0, description="Queue depth gauge refresh period.")
    callback_timeout_s: float = Field(5.0, gt=0, description="Per POST to a callback_url.")


class JWTSettings(BaseModel):
    """OIDC/JWT bearer tokens, verified against the identity provider's JWKS."""

    jwks_url: str | None = Field(None, description="Where the signing keys are published.")
    jwks_file: Path | None = Field(None, description="A JWKS on disk instead of a URL.")
    issuer: str | None = Field(None, description="Required `iss`; None accepts any issuer.")
    audience: str | None = Field(None, description="Required `aud`; None skips the check.")
    algorithms: list[str] = Field(
        default_factory=lambda: ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA"],
        description="Accepted signature algorithms (never 'none', never HMAC with a JWKS).",
    )
    leeway_s: float = Field(30.0, ge=0, le=600, description="Clock skew allowed on exp/nbf/iat.")
    tenant_claim: str = Field("tenant", description="Claim naming the caller's tenant.")
    groups_claim: str = Field("groups", description="Claim listing the caller's groups.")
    scopes_claim: str = Field("scope", description="Claim with scopes (space-separated or list).")
    default_scopes: list[str] = Field(
        default_factory=lambda: ["read"], description="Scopes when the token carries none."
    )
    jwks_cache_s: float = Field(300.0, gt=0, description="How long fetched keys are trusted.")
    jwks_timeout_s: float = Field(5.0, gt=0)

    @property
    def enabled(self) -> bool:
        return self.jwks_url is not None or self.jwks_file is not None


class AuthSettings(BaseModel):
    """Who may call the API (see README, "Tenants and credentials")."""

    enabled: bool = Field(
        False,
        description="Require a credential on every data and admin route. Off: every "
        "caller is tenant 'default' with every scope (loopback only, unless allow_open).",
    )
    admin_key: str | None = Field(
        None, description="Bootstrap admin key (manages tenants and keys); keep it in a Secret."
    )
    admin_key_file: Path | None = Field(
        None, description="A file holding the admin key (a mounted Kubernetes Secret)."
    )
    allow_open: bool = Field(
        False, description="Serve without credentials on a non-loopback address anyway."
    )
    cache_seconds: float = Field(
        2.0, gt=0, le=5, description="How long a replica trusts a key check: revocation delay."
    )
    cache_entries: int = Field(10_000, gt=0, description="Key checks kept per replica.")
    jwt: JWTSettings = JWTSettings()


class QuotaSettings(BaseModel):
    """A tenant's limits; a tenant record may override any of them. 0 means unlimited."""

    # Request rates are unlimited unless set (here for every tenant, or in a tenant's
    # record): a default cap would throttle a one-tenant deployment however far it scales.
    search_per_second: float = Field(0.0, ge=0, description="/search and retrieval tools.")
    chat_per_second: float = Field(0.0, ge=0, description="/chat, completions, chat tasks.")
    write_per_second: float = Field(0.0, ge=0, description="Uploads, deletes, ingest tasks.")
    burst_seconds: float = Field(2.0, gt=0, description="Bucket size, in seconds of rate.")
    chat_turns_per_day: int = Field(0, ge=0)
    llm_tokens_per_day: int = Field(0, ge=0)
    documents: int = Field(0, ge=0, description="Documents across the tenant's namespaces.")
    stored_bytes: int = Field(0, ge=0, description="Text bytes across its documents.")
    namespaces: int = Field(100, ge=0)
    keys: int = Field(100, ge=0)


class TenantSettings(BaseModel):
    quotas: QuotaSettings = QuotaSettings()
    cache_seconds: float = Field(
        2.0, gt=0, description="How long a replica keeps a tenant record before re-reading it."
    )
    metric_tenants: int = Field(
        50, ge=0, description="Tenants with their own metric labels; the rest count as 'other'."
    )
    allowed_plugins: list[str] | None = Field(
        None, description="Plugin names a tenant record may choose; None allows every installed."
    )
    audit_log: Path | None = Field(
        None, description="JSON lines of admin actions and data changes; None: the log stream."
    )


class WebhookSettings(BaseModel):
    """Where task callbacks may go (see docs/worker.md, "Callbacks")."""

    allow_http: bool = Field(False, description="Accept http:// callback URLs (not only https).")
    allow_hosts: list[str] = Field(
        default_factory=list,
        description="Host names or CIDRs that may be called even though they are internal.",
    )
    deny_cidrs: list[str] = Field(
        default_factory=lambda: ["10.96.0.0/12"],
        description="Extra ranges to refuse, such as the cluster's service range.",
    )
    timeout_s: float = Field(5.0, gt=0)


class IngestSettings(BaseModel):
    """Limits on one untrusted upload and the sandbox that parses it (see
    ``ragtide.ingest.sandbox`` and ``ragtide.ingest.limits``). A file over a limit is
    refused with 413 ``document_too_large`` or 422 ``document_too_complex`` naming it."""

    workers: int = Field(2, ge=1, le=64, description="Parse worker processes per server.")
    worker_memory_bytes: int = Field(
        512 * 1_048_576, ge=64 * 1_048_576, description="Address space of a parse worker."
    )
    parse_timeout_s: float = Field(30.0, gt=0, description="Time a worker may spend on a file.")
    inline_max_bytes: int = Field(
        8192, ge=0, description="Text files up to this size are parsed on the event loop."
    )
    max_inflated_bytes: int = Field(
        256 * 1_048_576, gt=0, description="All entries of a .docx, inflated."
    )
    max_entry_bytes: int = Field(
        64 * 1_048_576, gt=0, description="One .docx entry or one PDF stream, inflated."
    )
    max_archive_entries: int = Field(1000, gt=0, description="Entries of a .docx.")
    max_compression_ratio: float = Field(
        100.0, gt=1, description="Inflated/compressed size of a .docx entry over 1 MiB."
    )
    max_xml_depth: int = Field(128, gt=0, description="Element nesting of a .docx XML part.")
    max_html_depth: int = Field(512, gt=0, description="Element nesting of an HTML page.")
    max_pdf_pages: int = Field(2000, gt=0)
    max_document_chars: int = Field(
        5_000_000, gt=0, description="Characters of text of one document (one JSONL record)."
    )
    max_line_chars: int = Field(
        1_000_000, gt=0, description="Characters of one line of .txt, .md or .jsonl."
    )
    max_jsonl_lines: int = Field(100_000, gt=0, description="Lines of one .jsonl file.")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RAGTIDE_", env_nested_delimiter="__", extra="forbid"
    )

    environment: Literal["dev", "test", "prod"] = "dev"
    data_dir: Path = Field(default_factory=default_data_dir)
    http: HttpSettings = HttpSettings()
    grpc: GrpcSettings = GrpcSettings()
    logging: LogSettings = LogSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    chat: ChatSettings = ChatSettings()
    plugins: PluginSettings = PluginSettings()

    redis: RedisSettings = RedisSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    rabbitmq: RabbitSettings = RabbitSettings()
    worker: WorkerSettings = WorkerSettings()
    auth: AuthSettings = AuthSettings()
    tenants: TenantSettings = TenantSettings()
    webhooks: WebhookSettings = WebhookSettings()
    ingest: IngestSettings = IngestSettings()
    answer_cache_enabled: bool = Field(True, description="Reuse answers to repeated questions.")

    store: StoreSpec = StoreSpec()
    embedder: ComponentSpec = ComponentSpec(use="static")
    retriever: ComponentSpec = ComponentSpec(use="hybrid")
    intent: ComponentSpec = ComponentSpec(use="rules")
    chat_model: ComponentSpec = ComponentSpec(use="extractive")
    memory: ComponentSpec = ComponentSpec(use="memory")
    answer_cache: ComponentSpec = ComponentSpec(use="memory")
    rate_limiter: ComponentSpec = ComponentSpec(use="memory")
    result_store: ComponentSpec = ComponentSpec(use="memory")  # task status and results

    @model_validator(mode="after")
    def _shared_state_in_redis(self) -> Settings:
        """With ``redis.url``, keep every piece of shared state in that Redis."""
        url = self.redis.url
        if url is None:
            return self
        for name in ("memory", "answer_cache", "rate_limiter", "result_store"):
            spec: ComponentSpec = getattr(self, name)
            if name not in self.model_fields_set:
                spec = ComponentSpec(use="redis")
            if spec.use == "redis" and "url" not in spec.config:
                spec = ComponentSpec(use="redis", config={**spec.config, "url": url})
            object.__setattr__(self, name, spec)
        return self

    @model_validator(mode="after")
    def _tasks_need_a_shared_result_store(self) -> Settings:
        """The API and the workers are separate processes: task results must be shared."""
        if self.rabbitmq.url is not None and self.result_store.use == "memory":
            raise ValueError(
                "tasks (rabbitmq.url) need a result store every process can read: "
                "set redis.url (RAGTIDE_REDIS__URL) or result_store"
            )
        return self
