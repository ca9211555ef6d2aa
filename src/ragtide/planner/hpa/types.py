"""Value types of the HPA model: the spec, the observed cluster and the controller memory.

Every quantity is an ``int`` of **milli-units** (``Quantity.MilliValue()`` upstream):
1 CPU is ``1000``, a custom-metric value of ``1.5`` is ``1500``. Every time is a
``float`` of seconds on one clock chosen by the caller (the simulation uses seconds
since the start of the trace). Nothing here does I/O; everything is frozen.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "MAX_INT32",
    "MAX_INT64",
    "ZERO_TIME",
    "Behavior",
    "Condition",
    "ControllerConfig",
    "ControllerState",
    "MetricFailure",
    "MetricKind",
    "MetricSpec",
    "MetricTarget",
    "PodPhase",
    "PodSample",
    "PodSpec",
    "PolicyType",
    "Recommendation",
    "ResourceSample",
    "ScaleEvent",
    "ScalingPolicy",
    "ScalingRules",
    "SelectPolicy",
    "Snapshot",
    "TargetType",
    "Tolerances",
]

MAX_INT32 = 2**31 - 1
MAX_INT64 = 2**63 - 1
#: Go's zero ``time.Time`` (year 1) on a clock whose epoch is 1970, in seconds.
#: Use it for an unset ``lastTransitionTime``: it is far in the past but still
#: precise to microseconds as a float, so ``ZERO_TIME + 10 > ZERO_TIME`` holds.
ZERO_TIME = -62_135_596_800.0


class PodPhase(enum.StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    UNKNOWN = "Unknown"


@dataclass(frozen=True, slots=True)
class PodSpec:
    """One pod as the HPA's pod lister sees it.

    ``ready`` is the status of the ``Ready`` condition, ``None`` when the pod has no
    such condition. ``start_time`` is ``status.startTime`` (``None`` when unset) and
    ``ready_transition`` the condition's ``lastTransitionTime``. ``container_requests``
    maps each regular container and each restartable init container (sidecar) to its
    requests (resource name to milli-units); ``pod_requests`` are pod-level requests,
    honoured only with ``ControllerConfig.pod_level_resources``.
    """

    name: str
    phase: PodPhase = PodPhase.RUNNING
    ready: bool | None = True
    start_time: float | None = ZERO_TIME
    ready_transition: float = ZERO_TIME
    deleted: bool = False
    container_requests: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    pod_requests: Mapping[str, int] | None = None

    @property
    def terminal(self) -> bool:
        return self.phase in (PodPhase.FAILED, PodPhase.SUCCEEDED)


@dataclass(frozen=True, slots=True)
class PodSample:
    """One pod's metric value with the time it was taken and the window it covers."""

    value: int
    timestamp: float = 0.0
    window: float = 60.0


@dataclass(frozen=True, slots=True)
class ResourceSample:
    """One ``PodMetrics`` item of ``metrics.k8s.io`` for one resource.

    ``usage`` maps container name to milli-usage; ``None`` marks a container that
    reported no value for the resource (the whole pod is then dropped, §4.9).
    """

    usage: Mapping[str, int | None]
    timestamp: float = 0.0
    window: float = 60.0


class MetricKind(enum.StrEnum):
    RESOURCE = "Resource"
    CONTAINER_RESOURCE = "ContainerResource"
    PODS = "Pods"
    OBJECT = "Object"
    EXTERNAL = "External"


class TargetType(enum.StrEnum):
    UTILIZATION = "Utilization"
    VALUE = "Value"
    AVERAGE_VALUE = "AverageValue"


@dataclass(frozen=True, slots=True)
class MetricTarget:
    """``type`` plus the one field it reads: a percent for Utilization, else milli-units."""

    type: TargetType
    average_utilization: int | None = None
    value: int | None = None
    average_value: int | None = None


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One entry of ``spec.metrics``: ``name`` is the resource (``cpu``) or the metric name.

    ``kind`` is a ``MetricKind`` or, for a type this model does not know (a newer API's
    source type, a typo), the raw string: the controller then counts the metric as
    invalid with reason ``InvalidMetricSourceType``, as upstream does.
    """

    kind: MetricKind | str
    name: str
    target: MetricTarget
    container: str = ""

    @classmethod
    def cpu_utilization(cls, percent: int) -> MetricSpec:
        return cls(MetricKind.RESOURCE, "cpu", MetricTarget(TargetType.UTILIZATION, percent))

    @classmethod
    def pods_average(cls, name: str, average_milli: int) -> MetricSpec:
        target = MetricTarget(TargetType.AVERAGE_VALUE, average_value=average_milli)
        return cls(MetricKind.PODS, name, target)

    @classmethod
    def external_average(cls, name: str, average_milli: int) -> MetricSpec:
        target = MetricTarget(TargetType.AVERAGE_VALUE, average_value=average_milli)
        return cls(MetricKind.EXTERNAL, name, target)


class PolicyType(enum.StrEnum):
    PODS = "Pods"
    PERCENT = "Percent"


class SelectPolicy(enum.StrEnum):
    MAX = "Max"
    MIN = "Min"
    DISABLED = "Disabled"


@dataclass(frozen=True, slots=True)
class ScalingPolicy:
    type: PolicyType
    value: int
    period_seconds: int


@dataclass(frozen=True, slots=True)
class ScalingRules:
    """``behavior.scaleUp`` or ``scaleDown``; ``None`` fields take the API defaults (§1.3)."""

    stabilization_window_seconds: int | None = None
    select_policy: SelectPolicy | None = None
    policies: tuple[ScalingPolicy, ...] | None = None
    tolerance: float | None = None


@dataclass(frozen=True, slots=True)
class Behavior:
    """``spec.behavior``. An HPA whose behavior is ``None`` runs the legacy path (§5)."""

    scale_up: ScalingRules | None = None
    scale_down: ScalingRules | None = None


@dataclass(frozen=True, slots=True)
class Tolerances:
    """Usage-ratio tolerances: no change while ``1 - down <= ratio <= 1 + up`` (§4.1)."""

    scale_down: float = 0.1
    scale_up: float = 0.1

    def is_within(self, ratio: float) -> bool:
        return (1.0 - self.scale_down) <= ratio <= (1.0 + self.scale_up)


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    """kube-controller-manager flags and package constants; defaults are production (§1.1).

    ``scale_up_limit_factor`` is 2.0 in production; upstream's ``horizontal_test.go`` sets
    it to 8. ``configurable_tolerance`` is the ``HPAConfigurableTolerance`` feature gate.
    """

    sync_period: float = 15.0
    downscale_stabilization: float = 300.0
    tolerance: float = 0.1
    cpu_initialization_period: float = 300.0
    initial_readiness_delay: float = 30.0
    scale_up_limit_factor: float = 2.0
    scale_up_limit_minimum: float = 4.0
    configurable_tolerance: bool = True
    pod_level_resources: bool = False


@dataclass(frozen=True, slots=True)
class Recommendation:
    replicas: int
    timestamp: float


@dataclass(frozen=True, slots=True)
class ScaleEvent:
    replica_change: int
    timestamp: float
    outdated: bool = False


@dataclass(frozen=True, slots=True)
class ControllerState:
    """The controller's in-memory history for one HPA (lost on a controller restart).

    ``recommendations`` is ``None`` until the first reconcile records the initial one.
    """

    recommendations: tuple[Recommendation, ...] | None = None
    scale_up_events: tuple[ScaleEvent, ...] = ()
    scale_down_events: tuple[ScaleEvent, ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one reconcile observes: the scale subresource, pods and metric APIs.

    A metric absent from its mapping means the metrics API returned an error for it.
    ``resource_metrics`` maps a resource name to ``PodMetrics`` by pod name (an empty
    mapping is "no metrics returned"); ``pods_metrics`` maps a custom metric name to
    per-pod values; ``object_metrics`` to one value; ``external_metrics`` to every
    series' value (they are summed).
    """

    now: float
    spec_replicas: int
    status_replicas: int
    pods: tuple[PodSpec, ...] = ()
    resource_metrics: Mapping[str, Mapping[str, ResourceSample]] = field(default_factory=dict)
    pods_metrics: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    object_metrics: Mapping[str, int] = field(default_factory=dict)
    external_metrics: Mapping[str, tuple[int, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Condition:
    """One HPA status condition (``AbleToScale``, ``ScalingActive``, ``ScalingLimited``)."""

    status: bool
    reason: str


@dataclass(frozen=True, slots=True)
class MetricFailure:
    """A metric that produced no proposal; ``message`` follows upstream's error text.

    ``reason`` overrides the condition reason the metric's kind implies
    (``FailedGet<Kind>Metric``), e.g. ``InvalidMetricSourceType``.
    """

    message: str
    reason: str | None = None
