"""The chart's values agree with the planner and with the app's settings.

``ragtide plan`` reads and writes the chart's ``autoscaling``, ``resources`` and
``worker.keda`` blocks (``ragtide.planner.values``): its defaults must be the chart's, it
must accept every values file, and the HPA it models must be the HPA Helm renders. The
settings the chart hands a container (ConfigMap plus env) must be valid ``Settings``.
"""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest
import yaml

from ragtide.planner.hpa import Behavior, HPASpec, MetricSpec, ScalingPolicy, ScalingRules
from ragtide.planner.hpa.types import PolicyType, SelectPolicy
from ragtide.planner.values import (
    DEFAULT_VALUES,
    AutoscalingValues,
    hpa_spec,
    load_values,
    values_fragment,
)
from ragtide.settings import Settings

from .render import CHART, EVERYTHING, VALUES_FILES, containers, quantity_milli, render


def _rules(rendered: dict[str, Any] | None) -> ScalingRules | None:
    if rendered is None:
        return None
    policies = rendered.get("policies")
    return ScalingRules(
        stabilization_window_seconds=rendered.get("stabilizationWindowSeconds"),
        select_policy=SelectPolicy(rendered["selectPolicy"])
        if "selectPolicy" in rendered
        else None,
        policies=None
        if policies is None
        else tuple(
            ScalingPolicy(PolicyType(p["type"]), p["value"], p["periodSeconds"]) for p in policies
        ),
    )


def hpa_from_manifest(hpa: dict[str, Any]) -> HPASpec:
    """The planner's model of a rendered HorizontalPodAutoscaler."""
    spec = hpa["spec"]
    metrics: list[MetricSpec] = []
    for metric in spec.get("metrics", []):
        if metric["type"] == "Resource":
            target = metric["resource"]["target"]
            assert target["type"] == "Utilization"
            metrics.append(MetricSpec.cpu_utilization(target["averageUtilization"]))
        else:
            assert metric["type"] == "Pods"
            target = metric["pods"]["target"]
            name = metric["pods"]["metric"]["name"]
            metrics.append(MetricSpec.pods_average(name, quantity_milli(target["averageValue"])))
    if not metrics:  # the API server's default for an HPA without metrics
        metrics.append(MetricSpec.cpu_utilization(80))
    behavior = spec.get("behavior")
    return HPASpec(
        max_replicas=spec["maxReplicas"],
        metrics=tuple(metrics),
        min_replicas=spec.get("minReplicas", 1),
        behavior=None
        if behavior is None
        else Behavior(_rules(behavior.get("scaleUp")), _rules(behavior.get("scaleDown"))),
    )


def test_chart_defaults_are_the_planners_defaults() -> None:
    chart = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart["autoscaling"] == DEFAULT_VALUES["autoscaling"]
    assert chart["resources"] == DEFAULT_VALUES["resources"]
    assert chart["worker"]["keda"] == DEFAULT_VALUES["worker"]["keda"]


@pytest.mark.parametrize("name", VALUES_FILES)
def test_planner_reads_every_values_file(name: str) -> None:
    loaded = load_values(CHART / name)
    chart = yaml.safe_load((CHART / name).read_text())
    requests = chart.get("resources", {}).get("requests", {})
    if "cpu" in requests:
        assert loaded.cpu_request_milli == quantity_milli(requests["cpu"])
    minimum = chart.get("autoscaling", {}).get("minReplicas")
    if minimum is not None:
        assert loaded.autoscaling.min_replicas == minimum


@pytest.mark.parametrize("name", VALUES_FILES)
def test_planner_models_the_hpa_helm_renders(name: str) -> None:
    loaded = load_values(CHART / name)
    rendered = render(name).of("HorizontalPodAutoscaler")
    assert len(rendered) == (1 if loaded.autoscaling.enabled else 0)
    if rendered:
        assert hpa_from_manifest(rendered[0]) == hpa_spec(loaded)


RECOMMENDATIONS = [
    {"minReplicas": 3, "maxReplicas": 30, "inflightRequests": {"averageValue": 12.5}},
    {"targetCPUUtilizationPercentage": None, "requestRate": {"enabled": False}},
    {"behavior": None},
    {"behavior": {"scaleUp": None}},
    {"behavior": {"scaleDown": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 30}]}}},
]


@pytest.mark.parametrize("change", RECOMMENDATIONS)
def test_a_planner_recommendation_installs_as_helm_values(change: dict[str, Any]) -> None:
    """What ``ragtide plan`` writes is a values file ``helm install -f`` takes as is."""
    recommended = load_values({"autoscaling": change})
    fragment = values_fragment(recommended.autoscaling)
    text = yaml.safe_dump(fragment)  # the file a user passes with -f
    rendered = render(yaml.safe_load(text)).of("HorizontalPodAutoscaler")
    assert hpa_from_manifest(rendered[0]) == hpa_spec(load_values(text))
    assert AutoscalingValues.model_validate(fragment["autoscaling"]) == recommended.autoscaling


def _container_settings(
    manifests: Any, component: str, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """``Settings()`` built from exactly the environment the container would get."""
    container = containers(manifests.deployment(component))[0]
    secrets = {s["metadata"]["name"]: s for s in manifests.of("Secret")}
    env: dict[str, str] = {}
    for source in container["envFrom"]:
        if "configMapRef" in source:
            env.update(manifests.one("ConfigMap", source["configMapRef"]["name"])["data"])
    for entry in container["env"]:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            secret = secrets.get(ref["name"])
            if secret is None:  # existingSecret: a stand-in of the right scheme
                env[entry["name"]] = {
                    "RAGTIDE_STORE__URL": "postgresql://u:p@pg:5432/ragtide",
                    "RAGTIDE_REDIS__URL": "redis://:p@redis:6379/0",
                    "RAGTIDE_RABBITMQ__URL": "amqp://u:p@rabbitmq:5672/",
                }[entry["name"]]
            else:
                env[entry["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
    for key in [k for k in os.environ if k.startswith("RAGTIDE_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings(_env_file=None)


@pytest.mark.parametrize("values", [*VALUES_FILES, EVERYTHING], ids=[*VALUES_FILES, "everything"])
def test_containers_get_valid_settings(values: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    manifests = render(values)
    settings = _container_settings(manifests, "api", monkeypatch)
    assert settings.http.host == "0.0.0.0" and settings.http.port == 8000
    assert str(settings.data_dir) == "/data"
    api_env = {e["name"]: e.get("value") for e in containers(manifests.deployment("api"))[0]["env"]}
    assert settings.http.drain_seconds == float(api_env["RAGTIDE_HTTP__DRAIN_SECONDS"])
    assert settings.http.grace_seconds == float(api_env["RAGTIDE_HTTP__GRACE_SECONDS"])
    ports = {
        p["name"]: p["containerPort"] for p in containers(manifests.deployment("api"))[0]["ports"]
    }
    assert settings.grpc.port == ports["grpc"] == 9090  # gRPC on, on the port the pod exposes
    assert settings.grpc.host is None  # binds http.host (0.0.0.0), reachable through the Service
    assert settings.logging.format in ("json", "console")
    components = {
        d["metadata"]["labels"]["app.kubernetes.io/component"] for d in manifests.of("Deployment")
    }
    if "worker" in components:
        worker = _container_settings(manifests, "worker", monkeypatch)
        assert worker.rabbitmq.url is not None and worker.redis.url is not None
        assert worker.rabbitmq.queue == "ragtide.tasks"
        assert (worker.worker.host, worker.worker.port) == ("0.0.0.0", 8001)


def test_grpc_off_is_port_zero_and_settings_reach_the_grpc_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    off = _container_settings(render({"grpc": {"enabled": False}}), "api", monkeypatch)
    assert off.grpc.port == 0  # the app's "off"
    tuned = {"grpc": {"port": 50051}, "settings": {"grpc": {"max_concurrent_rpcs": 64}}}
    on = _container_settings(render(tuned), "api", monkeypatch)
    assert (on.grpc.port, on.grpc.max_concurrent_rpcs) == (50051, 64)


def test_production_replicas_share_their_state(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _container_settings(render("values-prod.yaml"), "api", monkeypatch)
    assert settings.store.use == "postgres"
    assert settings.memory.use == "redis" and settings.answer_cache.use == "redis"
    assert settings.rate_limit.enabled is True


def test_settings_values_reach_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "settings": {
            "retrieval": {"top_k": 7},
            "plugins": {"allow": ["static", "hybrid"]},
            "answer_cache_enabled": False,
        }
    }
    settings = _container_settings(render(values), "api", monkeypatch)
    assert settings.retrieval.top_k == 7
    assert settings.plugins.allow == ["static", "hybrid"]
    assert settings.answer_cache_enabled is False
