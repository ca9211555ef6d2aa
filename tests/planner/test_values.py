"""Chart values: Helm-style merge onto the chart defaults, validation, HPA rendering."""

from __future__ import annotations

import pytest
import yaml

from ragtide.errors import ConfigError
from ragtide.planner.hpa import MetricKind, PolicyType, SelectPolicy
from ragtide.planner.values import (
    DEFAULT_VALUES,
    hpa_spec,
    load_values,
    merge_values,
    parse_cpu,
    values_fragment,
)


def test_missing_keys_take_the_chart_defaults() -> None:
    values = load_values("autoscaling: {maxReplicas: 30}")
    assert values.autoscaling.max_replicas == 30
    assert values.autoscaling.min_replicas == 2
    assert values.autoscaling.target_cpu == 70
    assert (values.cpu_request_milli, values.cpu_limit_milli) == (250, 500)
    assert values.keda.queue_length == 100


def test_default_values_render_three_metrics_and_the_chart_behavior() -> None:
    spec = hpa_spec(load_values())
    assert [(m.kind, m.name) for m in spec.metrics] == [
        (MetricKind.RESOURCE, "cpu"),
        (MetricKind.PODS, "http_requests_per_second"),
        (MetricKind.PODS, "http_requests_in_flight"),
    ]
    assert spec.metrics[1].target.average_value == 100_000  # milli
    assert spec.behavior is not None and spec.behavior.scale_up is not None
    up = spec.behavior.scale_up
    assert (up.stabilization_window_seconds, up.select_policy) == (60, SelectPolicy.MAX)
    assert up.policies is not None and up.policies[0].type == PolicyType.PODS


def test_null_behavior_removes_it_and_selects_the_legacy_path() -> None:
    assert hpa_spec(load_values({"autoscaling": {"behavior": None}})).behavior is None


def test_null_scale_up_leaves_the_api_defaults() -> None:
    spec = hpa_spec(load_values({"autoscaling": {"behavior": {"scaleUp": None}}}))
    assert spec.behavior is not None and spec.behavior.scale_up is None


def test_lists_replace_lists() -> None:
    merged = merge_values(
        DEFAULT_VALUES,
        {
            "autoscaling": {
                "behavior": {
                    "scaleUp": {"policies": [{"type": "Percent", "value": 50, "periodSeconds": 15}]}
                }
            }
        },
    )
    policies = merged["autoscaling"]["behavior"]["scaleUp"]["policies"]
    assert policies == [{"type": "Percent", "value": 50, "periodSeconds": 15}]
    assert merged["autoscaling"]["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 60


@pytest.mark.parametrize(
    ("quantity", "milli"), [("250m", 250), ("0.5", 500), ("2", 2000), (1, 1000)]
)
def test_parse_cpu(quantity: str | int, milli: int) -> None:
    assert parse_cpu(quantity) == milli


@pytest.mark.parametrize(
    "text",
    [
        "autoscaling: {minReplicas: 0}",
        "autoscaling: {targetCPUUtilizationPercent: 70}",
        "autoscaling: {behavior: {scaleUp: {selectPolicy: Fastest}}}",
        "resources: {requests: {cpu: lots}}",
        "- a list",
        "autoscaling: [",
    ],
)
def test_invalid_values_raise_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        load_values(text)


def test_fragment_uses_the_chart_keys_and_loads_back() -> None:
    values = load_values("autoscaling: {minReplicas: 3, requestRate: {averageValue: 12.5}}")
    fragment = values_fragment(values.autoscaling)
    text = yaml.safe_dump(fragment)
    assert "targetCPUUtilizationPercentage" in text and "stabilizationWindowSeconds" in text
    again = load_values(text)
    assert again.autoscaling == values.autoscaling
