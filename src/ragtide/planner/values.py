"""The chart's ``autoscaling``, ``resources``, ``worker.keda`` and ``modelServer`` values,
as the planner reads them.

Loading follows Helm: the user's file is deep-merged onto the chart defaults
(``DEFAULT_VALUES``), lists replace lists, and a ``null`` removes a key. A removed
``behavior`` renders an HPA without ``spec.behavior`` (the legacy path); a removed
``scaleUp``/``scaleDown`` leaves that direction to the Kubernetes API defaults.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ragtide.errors import ConfigError
from ragtide.planner.behavior_values import (
    BehaviorValues,
    PolicyValues,
    RulesValues,
    behavior_spec,
)
from ragtide.planner.hpa import HPASpec, MetricSpec, check_spec
from ragtide.planner.model_values import DEFAULT_MODEL_SERVER, ModelServerValues

__all__ = [
    "DEFAULT_VALUES",
    "ApiKedaValues",
    "AutoscalingValues",
    "BehaviorValues",
    "ChartValues",
    "KedaValues",
    "MetricValues",
    "PolicyValues",
    "RulesValues",
    "ScheduleValues",
    "behavior_spec",
    "cron_metric_name",
    "first_cron_trigger",
    "hpa_spec",
    "load_values",
    "merge_values",
    "parse_cpu",
    "values_fragment",
]

DEFAULT_VALUES: dict[str, Any] = {
    "autoscaling": {
        "enabled": True,
        "engine": "hpa",
        "minReplicas": 2,
        "maxReplicas": 20,
        "targetCPUUtilizationPercentage": 70,
        "requestRate": {
            "enabled": True,
            "metricName": "http_requests_per_second",
            "averageValue": 100,
        },
        "inflightRequests": {
            "enabled": True,
            "metricName": "http_requests_in_flight",
            "averageValue": 8,
        },
        "behavior": {
            "scaleUp": {
                "stabilizationWindowSeconds": 60,
                "selectPolicy": "Max",
                "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}],
            },
            "scaleDown": {
                "stabilizationWindowSeconds": 300,
                "selectPolicy": "Max",
                "policies": [{"type": "Percent", "value": 10, "periodSeconds": 60}],
            },
        },
        "keda": {
            "prometheusServerAddress": "http://kube-prometheus-stack-prometheus.monitoring.svc:9090",
            "pollingInterval": 15,
            "schedules": [],
        },
    },
    "resources": {
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"cpu": "500m", "memory": "1Gi"},
    },
    "worker": {
        "keda": {
            "enabled": True,
            "minReplicaCount": 0,
            "maxReplicaCount": 20,
            "mode": "QueueLength",
            "queueLength": 100,
            "activationQueueLength": 1,
            "messageRate": 10,
            "activationMessageRate": 0,
            "managementUrlKey": "rabbitmq-management-url",
            "pollingInterval": 30,
            "cooldownPeriod": 300,
        }
    },
    "modelServer": DEFAULT_MODEL_SERVER,
}

_STRICT = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class MetricValues(BaseModel):
    """``requestRate`` / ``inflightRequests``: a Pods metric, ``averageValue`` per pod."""

    model_config = _STRICT
    enabled: bool = False
    metric_name: str = Field("", alias="metricName")
    average_value: float = Field(1.0, alias="averageValue", gt=0)


class ScheduleValues(BaseModel):
    """One ``autoscaling.keda.schedules`` entry: a KEDA ``cron`` trigger (a scheduled minimum)."""

    model_config = _STRICT
    timezone: str = "UTC"
    start: str
    end: str
    desired_replicas: int = Field(alias="desiredReplicas", ge=1)


class ApiKedaValues(BaseModel):
    """``autoscaling.keda``: the API's ScaledObject when ``engine: keda``."""

    model_config = _STRICT
    prometheus_server_address: str = Field("", alias="prometheusServerAddress")
    polling_interval: int = Field(15, alias="pollingInterval", gt=0)
    schedules: tuple[ScheduleValues, ...] = ()


class AutoscalingValues(BaseModel):
    """The chart's ``autoscaling`` block (camelCase aliases are the chart's keys).

    ``engine: hpa`` renders a plain HPA; ``engine: keda`` a KEDA ScaledObject with the
    same triggers and behavior plus one ``cron`` trigger per ``keda.schedules`` entry.
    """

    model_config = _STRICT
    enabled: bool = True
    engine: Literal["hpa", "keda"] = "hpa"
    min_replicas: int = Field(1, alias="minReplicas", ge=1)
    max_replicas: int = Field(alias="maxReplicas", ge=1)
    target_cpu: int | None = Field(None, alias="targetCPUUtilizationPercentage", gt=0)
    request_rate: MetricValues = Field(default_factory=MetricValues, alias="requestRate")
    inflight_requests: MetricValues = Field(default_factory=MetricValues, alias="inflightRequests")
    behavior: BehaviorValues | None = None
    keda: ApiKedaValues = Field(default_factory=ApiKedaValues)


def cron_metric_name(index: int) -> str:
    """The External metric name of trigger ``index`` when it is a cron trigger."""
    return f"s{index}-cron"


def first_cron_trigger(values: AutoscalingValues) -> int:
    """Cron triggers come after the CPU, request-rate and in-flight triggers."""
    return sum(
        (
            values.target_cpu is not None,
            values.request_rate.enabled,
            values.inflight_requests.enabled,
        )
    )


class KedaValues(BaseModel):
    """``worker.keda``: the ScaledObject of the RabbitMQ worker.

    ``mode: QueueLength`` targets ``queueLength`` messages per replica and activates
    above ``activationQueueLength``; ``mode: MessageRate`` targets ``messageRate``
    published messages per second per replica and activates above
    ``activationMessageRate``.
    """

    model_config = _STRICT
    enabled: bool = False
    min_replica_count: int = Field(0, alias="minReplicaCount", ge=0)
    max_replica_count: int = Field(100, alias="maxReplicaCount", ge=1)
    mode: Literal["QueueLength", "MessageRate"] = "QueueLength"
    queue_length: float = Field(20, alias="queueLength", gt=0)
    activation_queue_length: float = Field(0, alias="activationQueueLength", ge=0)
    message_rate: float = Field(10, alias="messageRate", gt=0)
    activation_message_rate: float = Field(0, alias="activationMessageRate", ge=0)
    management_url_key: str = Field("rabbitmq-management-url", alias="managementUrlKey")
    polling_interval: int = Field(30, alias="pollingInterval", gt=0)
    cooldown_period: int = Field(300, alias="cooldownPeriod", ge=0)

    @property
    def target_value(self) -> float:
        """The trigger's ``value``: messages per replica, or publish rate per replica."""
        return self.message_rate if self.mode == "MessageRate" else self.queue_length

    @property
    def activation_value(self) -> float:
        """The trigger's ``activationValue`` for the mode."""
        if self.mode == "MessageRate":
            return self.activation_message_rate
        return self.activation_queue_length


class ChartValues(BaseModel):
    """The validated subset of the chart values; CPU quantities already in millicores."""

    model_config = ConfigDict(frozen=True)
    autoscaling: AutoscalingValues
    cpu_request_milli: int
    cpu_limit_milli: int | None
    keda: KedaValues
    model_server: ModelServerValues = Field(default_factory=ModelServerValues)


def parse_cpu(quantity: str | int | float) -> int:
    """A Kubernetes CPU quantity (``250m``, ``0.5``, ``2``) in millicores."""
    text = str(quantity).strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(m?)", text)
    if not match:
        raise ConfigError(f"invalid CPU quantity {quantity!r}: use e.g. 250m or 0.5")
    number = float(match.group(1))
    return round(number if match.group(2) else number * 1000)


def merge_values(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's merge: maps merge recursively, other values replace, ``None`` deletes."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_values(source: Path | str | Mapping[str, Any] | None = None) -> ChartValues:
    """Load a values file (path, YAML text or mapping) over the chart defaults."""
    if source is None:
        user: Any = {}
    elif isinstance(source, Mapping):
        user = source
    else:
        text = source.read_text() if isinstance(source, Path) else source
        try:
            user = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"values are not valid YAML: {exc}") from exc
    if not isinstance(user, Mapping):
        raise ConfigError("values must be a YAML mapping")
    merged = merge_values(DEFAULT_VALUES, user)
    resources = merged.get("resources") or {}
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    if "cpu" not in requests:
        raise ConfigError("resources.requests.cpu is required: CPU utilization is relative to it")
    try:
        values = ChartValues(
            autoscaling=AutoscalingValues.model_validate(merged.get("autoscaling") or {}),
            cpu_request_milli=parse_cpu(requests["cpu"]),
            cpu_limit_milli=parse_cpu(limits["cpu"]) if "cpu" in limits else None,
            keda=KedaValues.model_validate((merged.get("worker") or {}).get("keda") or {}),
            model_server=ModelServerValues.model_validate(merged.get("modelServer") or {}),
        )
    except ValidationError as exc:
        raise ConfigError(f"invalid chart values: {exc}") from exc
    check_spec(hpa_spec(values))  # what the API server would refuse, e.g. min > max
    model = values.model_server.autoscaling
    if values.model_server.enabled and model.enabled and model.min_replicas > model.max_replicas:
        raise ConfigError(  # the chart's own check (ragtide.modelServerValidate)
            f"modelServer.autoscaling.minReplicas ({model.min_replicas}) must not exceed "
            f"modelServer.autoscaling.maxReplicas ({model.max_replicas})"
        )
    return values


def hpa_spec(values: ChartValues) -> HPASpec:
    """The HPA the chart renders for the API Deployment.

    Metric values are in the HPA's milli-units: ``averageValue: 100`` (req/s per pod)
    becomes ``100000``.
    """
    scaling = values.autoscaling
    metrics: list[MetricSpec] = []
    if scaling.target_cpu is not None:
        metrics.append(MetricSpec.cpu_utilization(scaling.target_cpu))
    for metric in (scaling.request_rate, scaling.inflight_requests):
        if metric.enabled:
            metrics.append(
                MetricSpec.pods_average(metric.metric_name, round(metric.average_value * 1000))
            )
    if scaling.engine == "keda":  # KEDA's cron scaler: External AverageValue, target 1
        first = first_cron_trigger(scaling)
        for i in range(len(scaling.keda.schedules)):
            metrics.append(MetricSpec.external_average(cron_metric_name(first + i), 1000))
    if not metrics:
        metrics.append(MetricSpec.cpu_utilization(80))  # the API default
    return HPASpec(
        max_replicas=scaling.max_replicas,
        metrics=tuple(metrics),
        min_replicas=scaling.min_replicas,
        behavior=behavior_spec(scaling.behavior),
    )


def values_fragment(values: AutoscalingValues) -> dict[str, Any]:
    """The ``autoscaling`` block in the chart's own keys, ready for ``yaml.safe_dump``."""
    dumped = values.model_dump(by_alias=True, exclude_none=True)
    for key in ("requestRate", "inflightRequests"):
        if float(dumped[key]["averageValue"]).is_integer():
            dumped[key]["averageValue"] = int(dumped[key]["averageValue"])
    return {"autoscaling": dumped}
