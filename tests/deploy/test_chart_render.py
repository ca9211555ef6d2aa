"""The chart lints, renders, and every object it renders is valid Kubernetes.

Rendering is Helm v4's own engine (``helm_python``), as ``helm template`` would run it;
core kinds are checked by ``kubernetes-validate --strict`` against Kubernetes 1.29 and the
newest version it knows, custom resources against their projects' published CRD schemas.
"""

from __future__ import annotations

import copy
from typing import Any

import helm_python
import kubernetes_validate
import pytest

from .render import (
    CHART,
    EVERYTHING,
    KEDA_ENGINE,
    VALUES_FILES,
    crd_validator,
    render,
    values_file,
)

KUBERNETES = ("1.29.0", kubernetes_validate.latest_version())
CUSTOM_GROUPS = ("keda.sh/", "monitoring.coreos.com/")
RENDERS: list[str | dict[str, Any]] = [*VALUES_FILES, EVERYTHING, KEDA_ENGINE]
IDS = [*VALUES_FILES, "everything", "keda-engine"]


def _custom(obj: dict[str, Any]) -> bool:
    return str(obj["apiVersion"]).startswith(CUSTOM_GROUPS)


@pytest.mark.parametrize("name", VALUES_FILES)
def test_lint_is_clean(name: str) -> None:
    report = helm_python.lint(
        str(CHART), values=values_file(name), strict=True, kube_version="v1.29.0"
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("name", VALUES_FILES)
def test_values_files_pass_the_schema(name: str) -> None:
    chart = helm_python.Chart.load(str(CHART))
    chart.validate_schema(values_file(name))


@pytest.mark.parametrize("values", RENDERS, ids=IDS)
@pytest.mark.parametrize("version", KUBERNETES)
def test_core_objects_are_valid_kubernetes(values: Any, version: str) -> None:
    objects = [o for o in render(values).objects if not _custom(o)]
    assert {"Deployment", "Service", "ConfigMap", "ServiceAccount", "Pod"} <= {
        o["kind"] for o in objects
    }
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("values", RENDERS, ids=IDS)
def test_custom_resources_match_the_published_crds(values: Any) -> None:
    for obj in render(values).objects:
        if _custom(obj):
            validator = crd_validator(obj["apiVersion"], obj["kind"])
            errors = [e.message for e in validator.iter_errors(obj)]
            assert errors == [], f"{obj['kind']} {obj['metadata']['name']}: {errors}"


def test_production_renders_every_custom_resource_kind() -> None:
    kinds = {o["kind"] for o in render("values-prod.yaml").objects if _custom(o)}
    assert kinds == {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"}


def test_the_validators_reject_what_the_cluster_would() -> None:
    """The checks above can fail: a misspelled field breaks each kind of validation."""
    manifests = render(EVERYTHING)
    scaled = copy.deepcopy(manifests.one("ScaledObject"))
    scaled["spec"]["maxReplicas"] = scaled["spec"].pop("maxReplicaCount")
    errors = list(crd_validator(scaled["apiVersion"], "ScaledObject").iter_errors(scaled))
    assert any("maxReplicas" in e.message for e in errors)

    rule = copy.deepcopy(manifests.one("PrometheusRule"))
    rule["spec"]["groups"][0]["rules"][0]["for"] = 10
    assert list(crd_validator(rule["apiVersion"], "PrometheusRule").iter_errors(rule))

    deployment = copy.deepcopy(manifests.deployment("api"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES[0], strict=True)


def test_every_object_lands_in_the_release_namespace() -> None:
    for obj in render(EVERYTHING, namespace="chat-prod").objects:
        assert obj["metadata"]["namespace"] == "chat-prod", obj["kind"]


def test_rabbitmq_message_rate_mode_renders_a_valid_http_trigger() -> None:
    worker = {"enabled": True, "keda": {"mode": "MessageRate", "messageRate": 25}}
    manifests = render({**EVERYTHING, "worker": worker})
    scaled = manifests.one("ScaledObject")
    assert crd_validator(scaled["apiVersion"], "ScaledObject").is_valid(scaled)
    trigger = scaled["spec"]["triggers"][0]["metadata"]
    assert (trigger["mode"], trigger["protocol"], trigger["value"]) == ("MessageRate", "http", "25")
    auth = manifests.one("TriggerAuthentication")
    assert auth["spec"]["secretTargetRef"][0]["key"] == "rabbitmq-management-url"
