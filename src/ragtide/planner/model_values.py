"""The chart's ``modelServer`` values, as the planner reads them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ragtide.planner.behavior_values import BehaviorValues

__all__ = [
    "DEFAULT_MODEL_SERVER",
    "LlamaCppValues",
    "ModelAutoscalingValues",
    "ModelServerValues",
    "model_values_fragment",
]

#: The keys of the chart's ``modelServer`` the planner reads, with the chart's defaults
#: (the chart has more: image, volume, probes, ...).
DEFAULT_MODEL_SERVER: dict[str, Any] = {
    "enabled": False,
    "engine": "llamacpp",
    "replicaCount": 1,
    "chatModelConfig": {"timeout_s": 60},
    "llamacpp": {"parallel": 4, "threads": 4},
    "autoscaling": {
        "enabled": True,
        "minReplicas": 1,
        "maxReplicas": 4,
        "targetRequestsPerReplica": 4,
        "prometheusServerAddress": "",
        "pollingInterval": 15,
        "behavior": {
            "scaleUp": {
                "stabilizationWindowSeconds": 0,
                "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}],
            },
            "scaleDown": {
                "stabilizationWindowSeconds": 600,
                "policies": [{"type": "Pods", "value": 1, "periodSeconds": 300}],
            },
        },
    },
}

_STRICT = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class ModelAutoscalingValues(BaseModel):
    """``modelServer.autoscaling``: KEDA's ScaledObject on the model server's saturation.

    One Prometheus trigger, AverageValue: requests being decoded plus requests waiting,
    summed over the model pods, ``targetRequestsPerReplica`` per replica; ``behavior``
    goes to KEDA's HPA through ``advanced.horizontalPodAutoscalerConfig``.
    """

    model_config = _STRICT
    enabled: bool = True
    min_replicas: int = Field(1, alias="minReplicas", ge=1)
    max_replicas: int = Field(4, alias="maxReplicas", ge=1)
    target_requests_per_replica: float = Field(4, alias="targetRequestsPerReplica", gt=0)
    prometheus_server_address: str = Field("", alias="prometheusServerAddress")
    polling_interval: int = Field(15, alias="pollingInterval", ge=1)
    behavior: BehaviorValues | None = None


class LlamaCppValues(BaseModel):
    """``modelServer.llamacpp``: the slots and threads of one llama.cpp replica."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)
    parallel: int = Field(4, ge=1, le=256)
    threads: int | None = Field(None, ge=1)


class ModelServerValues(BaseModel):
    """``modelServer``: the keys the planner reads (image, volume, probes are ignored)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)
    enabled: bool = False
    engine: Literal["llamacpp", "vllm"] = "llamacpp"
    replica_count: int = Field(1, alias="replicaCount", ge=0)
    chat_model_config: dict[str, Any] = Field(default_factory=dict, alias="chatModelConfig")
    llamacpp: LlamaCppValues = Field(default_factory=LlamaCppValues)
    autoscaling: ModelAutoscalingValues = Field(default_factory=ModelAutoscalingValues)

    @property
    def timeout_seconds(self) -> float:
        """The API's timeout for a model call (``chatModelConfig.timeout_s``; the openai
        chat model's own default, 30 s, when unset)."""
        value = self.chat_model_config.get("timeout_s", 30.0)
        return float(value) if isinstance(value, int | float) and value > 0 else 30.0


def model_values_fragment(values: ModelAutoscalingValues) -> dict[str, Any]:
    """``modelServer.autoscaling`` in the chart's own keys, ready for ``yaml.safe_dump``."""
    dumped = values.model_dump(by_alias=True, exclude_none=True)
    dumped.pop("prometheusServerAddress", None)  # a cluster setting, not the plan's
    target = float(dumped["targetRequestsPerReplica"])
    dumped["targetRequestsPerReplica"] = int(target) if target.is_integer() else target
    return {"modelServer": {"autoscaling": dumped}}
