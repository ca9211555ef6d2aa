"""What one replica can do: the ``capacity.json`` schema, its loader and its defaults.

Real numbers come from ``ragtide bench capacity``, which measures one replica of
``/chat`` and ``/search`` (latency percentiles versus offered rate, the saturation
point, CPU per request and the time from start to ready). Without ``--capacity`` the
planner uses ``default_capacity()``: the illustrative numbers of
``capacity.example.json`` shipped next to this module.

Schema (version 1; all rates per replica, latencies in milliseconds)::

    {
      "schema_version": 1,
      "source": "free text: how and when it was measured",
      "replica": {
        "startup_seconds": 25,          # container start -> Ready (readiness probe passes)
        "idle_cpu_millicores": 20,      # CPU of a ready replica with no traffic
        "startup_cpu_millicores": 400   # CPU while starting (model load): "hot CPU"
      },
      "endpoints": {                    # one or more; shares must sum to 1
        "chat": {
          "share": 0.75,                # fraction of requests
          "saturation_rps": 16.0,       # max sustained throughput of one replica
          "concurrency": 16,            # requests served in parallel (for the M/M/c model)
          "cpu_seconds_per_request": 0.010,
          "latency": [                  # optional measured curve, rps ascending and
            {"rps": 2, "p50_ms": 300, "p99_ms": 540}   # below saturation_rps; without
          ]                             # it latency follows an M/M/c queue
        }
      },
      "worker": {"messages_per_second": 5.0, "startup_seconds": 20},
      "database": {                     # optional: the one database every replica shares
        "cores": 4,                     # its CPU
        "target_utilization": 0.7,      # busier than this counts as saturated
        "cpu_seconds_per_request": {"search": 0.0012, "chat": 0.0012}  # per endpoint
      }
    }

With ``database``, ``database_saturation_rps`` is the request rate (any number of
replicas) at which the database reaches its target, and ``max_useful_replicas`` the
replicas past which more pods add nothing: the database, not the pods, saturates.

The optional ``model_server`` section describes the chart's model server (``modelServer``),
a tier of its own that the replay scales beside the API (``model_tier``)::

      "model_server": {
        "share": 0.75,                  # fraction of the API's requests that call the model
        "prompt_tokens": 195,           # per call
        "answer_tokens": 4,
        "prefill_tokens_per_cpu_second": 128.3,   # the replica's CPU work rate, shared by its
        "decode_tokens_per_cpu_second": 54.8,     # parallel slots, times its threads, or:
        "threads": 4,                   # "prefill_tokens_per_second" / "decode_tokens_per_second":
                                        # one request's speed while all slots are busy
        "parallel": 4,                  # requests decoded together (llama.cpp --parallel)
        "startup_seconds": 120          # container start -> Ready: the model loads
      }

With it, ``endpoints`` are the API's own work (measured against a stub model or the
extractive answerer): the model's time is the model tier's.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ragtide.errors import ConfigError

__all__ = [
    "EXAMPLE_PATH",
    "MODEL_SERVER_EXAMPLE_PATH",
    "Capacity",
    "DatabaseCapacity",
    "EndpointCapacity",
    "LatencyPoint",
    "ModelServerCapacity",
    "ReplicaCapacity",
    "WorkerCapacity",
    "default_capacity",
    "load_capacity",
]

EXAMPLE_PATH = Path(__file__).with_name("capacity.example.json")
#: an example with a ``model_server`` section (``ragtide bench llm``'s tiny SmolLM2-135M)
MODEL_SERVER_EXAMPLE_PATH = Path(__file__).with_name("capacity.model-server.example.json")
_STRICT = ConfigDict(frozen=True, extra="forbid")


class LatencyPoint(BaseModel):
    """Latency percentiles measured at one offered rate (one replica, one endpoint)."""

    model_config = _STRICT
    rps: float = Field(gt=0)
    p50_ms: float = Field(gt=0)
    p99_ms: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> LatencyPoint:
        if self.p99_ms < self.p50_ms:
            raise ValueError("p99_ms must be at least p50_ms")
        return self


class EndpointCapacity(BaseModel):
    """One endpoint's share of traffic, saturation, CPU cost and latency curve."""

    model_config = _STRICT
    share: float = Field(gt=0, le=1)
    saturation_rps: float = Field(gt=0)
    concurrency: int = Field(1, ge=1)
    cpu_seconds_per_request: float = Field(ge=0)
    latency: tuple[LatencyPoint, ...] = ()

    @model_validator(mode="after")
    def _curve(self) -> EndpointCapacity:
        rates = [p.rps for p in self.latency]
        if rates != sorted(rates) or len(set(rates)) != len(rates):
            raise ValueError("latency points must have strictly ascending rps")
        if rates and rates[-1] >= self.saturation_rps:
            raise ValueError("latency points must lie below saturation_rps")
        return self


class ReplicaCapacity(BaseModel):
    """Start-up time and the CPU a replica burns idle and while starting."""

    model_config = _STRICT
    startup_seconds: float = Field(ge=0)
    idle_cpu_millicores: float = Field(0, ge=0)
    startup_cpu_millicores: float = Field(0, ge=0)


class WorkerCapacity(BaseModel):
    """Throughput and start-up of one RabbitMQ worker replica."""

    model_config = _STRICT
    messages_per_second: float = Field(gt=0)
    startup_seconds: float = Field(20, ge=0)


class DatabaseCapacity(BaseModel):
    """The shared database tier: its cores and its CPU per request of each endpoint
    (``python -m ragtide.bench.scale_postgres`` measures the database backend's CPU time
    per search)."""

    model_config = _STRICT
    cores: float = Field(gt=0)
    target_utilization: float = Field(0.7, gt=0, le=1)
    cpu_seconds_per_request: dict[str, float] = Field(min_length=1)

    @field_validator("cpu_seconds_per_request")
    @classmethod
    def _non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        if any(v < 0 for v in value.values()):
            raise ValueError("database CPU per request cannot be negative")
        return value


class ModelServerCapacity(BaseModel):
    """The model server tier: what one call costs and what one replica can do.

    Speeds are given either per request (``*_tokens_per_second``: one request's speed
    while the replica's ``parallel`` slots are all busy, what llama.cpp's
    ``llamacpp:prompt_tokens_seconds`` and ``llamacpp:predicted_tokens_seconds`` report)
    or per CPU second (``*_tokens_per_cpu_second``, what ``ragtide bench llm`` measures)
    with the replica's ``threads``: the threads' work is then shared by the busy slots.
    """

    model_config = _STRICT
    share: float = Field(gt=0, le=1)
    prompt_tokens: float = Field(ge=0)
    answer_tokens: float = Field(ge=0)
    prefill_tokens_per_second: float | None = Field(None, gt=0)
    decode_tokens_per_second: float | None = Field(None, gt=0)
    prefill_tokens_per_cpu_second: float | None = Field(None, gt=0)
    decode_tokens_per_cpu_second: float | None = Field(None, gt=0)
    threads: float | None = Field(None, gt=0)
    parallel: int = Field(ge=1, le=256)
    startup_seconds: float = Field(ge=0)

    @model_validator(mode="after")
    def _speeds(self) -> ModelServerCapacity:
        for phase in ("prefill", "decode"):
            per_request = getattr(self, f"{phase}_tokens_per_second")
            per_cpu = getattr(self, f"{phase}_tokens_per_cpu_second")
            if (per_request is None) == (per_cpu is None):
                raise ValueError(
                    f"model_server needs exactly one of {phase}_tokens_per_second and "
                    f"{phase}_tokens_per_cpu_second"
                )
            if per_cpu is not None and self.threads is None:
                raise ValueError(
                    f"model_server {phase}_tokens_per_cpu_second needs threads "
                    "(the CPU seconds one replica has per second)"
                )
        if self.prompt_tokens + self.answer_tokens <= 0:
            raise ValueError("model_server prompt_tokens and answer_tokens cannot both be 0")
        return self

    def _rate(self, phase: str) -> float:
        """One request's tokens per second in ``phase`` with every slot busy."""
        per_request: float | None = getattr(self, f"{phase}_tokens_per_second")
        if per_request is not None:
            return per_request
        per_cpu: float = getattr(self, f"{phase}_tokens_per_cpu_second")
        return per_cpu * (self.threads or 1.0) / self.parallel

    @property
    def seconds_per_call(self) -> float:
        """Prefill plus decode of one call in a slot: ``prompt / prefill + answer / decode``."""
        return self.prompt_tokens / self._rate("prefill") + self.answer_tokens / self._rate(
            "decode"
        )

    @property
    def calls_per_second(self) -> float:
        """Calls one replica completes per second with every slot busy (Little's law)."""
        return self.parallel / self.seconds_per_call


class Capacity(BaseModel):
    """One replica's measured capacity (see the module docstring for the file format)."""

    model_config = _STRICT
    schema_version: int = 1
    source: str = ""
    replica: ReplicaCapacity
    endpoints: dict[str, EndpointCapacity] = Field(min_length=1)
    worker: WorkerCapacity | None = None
    database: DatabaseCapacity | None = None
    model_server: ModelServerCapacity | None = None

    @field_validator("schema_version")
    @classmethod
    def _version(cls, value: int) -> int:
        if value != 1:
            raise ValueError(f"unsupported schema_version {value}; this planner reads 1")
        return value

    @model_validator(mode="after")
    def _shares(self) -> Capacity:
        total = sum(e.share for e in self.endpoints.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"endpoint shares must sum to 1, not {total:g}")
        if self.database is not None:
            unknown = set(self.database.cpu_seconds_per_request) - set(self.endpoints)
            if unknown:
                raise ValueError(f"database costs for unknown endpoints: {sorted(unknown)}")
        return self

    @property
    def database_cpu_seconds_per_request(self) -> float:
        """Database CPU of the request mix (0 without a database tier)."""
        if self.database is None:
            return 0.0
        costs = self.database.cpu_seconds_per_request
        return sum(e.share * costs.get(name, 0.0) for name, e in self.endpoints.items())

    @property
    def database_saturation_rps(self) -> float | None:
        """Requests per second, across all replicas, that bring the database to its target
        utilization; None when there is no database tier or it costs nothing."""
        cost = self.database_cpu_seconds_per_request
        if self.database is None or cost <= 0:
            return None
        return self.database.cores * self.database.target_utilization / cost

    def max_useful_replicas(self, cpu_limit_milli: float | None = None) -> int | None:
        """Replicas past which the database saturates before the pods do (None: no
        database bound). Each replica serves ``saturation_rps`` at ``cpu_limit_milli``;
        at least one replica is always useful."""
        limit = self.database_saturation_rps
        if limit is None:
            return None
        per_replica = self.at_cpu_limit(cpu_limit_milli).saturation_rps
        return max(1, int(limit // per_replica))

    @property
    def saturation_rps(self) -> float:
        """Throughput of one replica for the request mix (harmonic mean of the endpoints)."""
        return 1.0 / sum(e.share / e.saturation_rps for e in self.endpoints.values())

    @property
    def cpu_seconds_per_request(self) -> float:
        return sum(e.share * e.cpu_seconds_per_request for e in self.endpoints.values())

    @property
    def saturation_cpu_millicores(self) -> float:
        """CPU the measured replica burned at saturation: ``idle + rps x cpu/request``."""
        idle = self.replica.idle_cpu_millicores
        return idle + self.saturation_rps * self.cpu_seconds_per_request * 1000

    def at_cpu_limit(self, cpu_limit_milli: float | None) -> Capacity:
        """This capacity for a replica whose CPU is limited to ``cpu_limit_milli``.

        ``ragtide bench capacity`` measures an unthrottled process; a container limited
        below the CPU that process burned at saturation is throttled by CFS. So:

        * throughput (every endpoint's ``saturation_rps`` and its latency curve's rates)
          scales by ``(limit - idle) / (saturation CPU - idle)``: 500m serves about half
          of what an unthrottled core does; latency is kept per utilization;
        * start-up that burns more than the limit (model loading) takes longer in
          proportion, and its CPU is capped at the limit.

        A replica that never used the limit (an LLM-bound one) is unchanged; so is any
        replica without a limit. Applying it twice changes nothing more.
        """
        if cpu_limit_milli is None:
            return self
        idle = self.replica.idle_cpu_millicores
        factor = 1.0
        busy = self.saturation_cpu_millicores - idle
        if busy > 0 and self.saturation_cpu_millicores > cpu_limit_milli:
            factor = max(cpu_limit_milli - idle, 0.0) / busy
        replica = self.replica
        if replica.startup_cpu_millicores > cpu_limit_milli > 0:
            slowdown = replica.startup_cpu_millicores / cpu_limit_milli
            replica = replica.model_copy(
                update={
                    "startup_seconds": replica.startup_seconds * slowdown,
                    "startup_cpu_millicores": float(cpu_limit_milli),
                }
            )
        if factor >= 1.0 and replica is self.replica:
            return self
        factor = max(factor, 1e-9)
        endpoints = {
            name: e.model_copy(
                update={
                    "saturation_rps": e.saturation_rps * factor,
                    "latency": tuple(
                        p.model_copy(update={"rps": p.rps * factor}) for p in e.latency
                    ),
                }
            )
            for name, e in self.endpoints.items()
        }
        return self.model_copy(update={"replica": replica, "endpoints": endpoints})


def load_capacity(path: Path) -> Capacity:
    """Read and validate ``capacity.json``; raise ``ConfigError`` naming the problem."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read capacity file {path}: {exc}") from exc
    try:
        return Capacity.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"invalid capacity file {path}: {exc}") from exc


def default_capacity() -> Capacity:
    """The illustrative capacity shipped as ``capacity.example.json``."""
    return load_capacity(EXAMPLE_PATH)
