"""Bad values fail at install time, naming the key and what is wrong.

Type and range errors come from ``values.schema.json`` (Helm checks it before rendering);
what a schema cannot say (one value against another) fails in the templates. Either way
``helm install`` (and ``helm template``) stops with the message below.
"""

from __future__ import annotations

from typing import Any

import helm_python
import pytest

from .render import CHART, render, render_error

SCHEMA_ERRORS: list[tuple[dict[str, Any], str]] = [
    ({"autoscalng": {"enabled": True}}, "additional properties 'autoscalng' not allowed"),
    ({"autoscaling": {"minReplicas": 0}}, "/autoscaling/minReplicas': minimum: got 0, want 1"),
    ({"autoscaling": {"maxReplicas": "20"}}, "/autoscaling/maxReplicas': got string, want integer"),
    (
        {"autoscaling": {"requestRate": {"averageValue": 0}}},
        "/autoscaling/requestRate/averageValue",
    ),
    (
        {"autoscaling": {"inflightRequests": {"metricName": "in flight"}}},
        "/autoscaling/inflightRequests/metricName",
    ),
    (
        {
            "autoscaling": {
                "behavior": {
                    "scaleUp": {"policies": [{"type": "Replicas", "value": 1, "periodSeconds": 60}]}
                }
            }
        },
        "/autoscaling/behavior/scaleUp/policies/0/type",
    ),
    ({"resources": {"requests": {"cpu": "lots"}}}, "/resources/requests/cpu"),
    ({"resources": {"limits": {"memory": None}}}, "/resources/limits': missing property 'memory'"),
    (
        {"securityContext": {"runAsNonRoot": False}},
        "/securityContext/runAsNonRoot': value must be true",
    ),
    (
        {"securityContext": {"allowPrivilegeEscalation": True}},
        "/securityContext/allowPrivilegeEscalation",
    ),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"image": {"digest": "latest"}}, "/image/digest"),
    ({"fullnameOverride": "Chat_Prod"}, "/fullnameOverride"),
    ({"store": {"url": "mysql://db/ragtide"}}, "/store/url"),
    ({"redis": {"url": "localhost:6379"}}, "/redis/url"),
    ({"service": {"type": "ExternalName"}}, "/service/type"),
    (
        {
            "ingress": {
                "hosts": [
                    {"host": "a.example.com", "paths": [{"path": "api", "pathType": "Prefix"}]}
                ]
            }
        },
        "/ingress/hosts/0/paths/0/path",
    ),
    ({"drain": {"graceSeconds": -1}}, "/drain/graceSeconds"),
    ({"worker": {"keda": {"queueLength": 0}}}, "/worker/keda/queueLength"),
    ({"worker": {"keda": {"minReplicaCount": -1}}}, "/worker/keda/minReplicaCount"),
    ({"metrics": {"serviceMonitor": {"interval": "often"}}}, "/metrics/serviceMonitor/interval"),
    ({"metrics": {"prometheusRule": {"errorRatio": 5}}}, "/metrics/prometheusRule/errorRatio"),
    ({"rabbitmq": {"queue": "tasks with spaces"}}, "/rabbitmq/queue"),
    ({"autoscaling": {"engine": "both"}}, "/autoscaling/engine"),
    ({"auth": {"enabled": "yes"}}, "/auth/enabled"),
    ({"tenants": {"Acme Corp": {"name": "Acme"}}}, "invalid propertyName 'Acme Corp'"),
    ({"worker": {"keda": {"mode": "Ratio"}}}, "/worker/keda/mode"),
    (
        {"autoscaling": {"keda": {"schedules": [{"start": "0 8 * * *", "end": "0 18 * * *"}]}}},
        "/autoscaling/keda/schedules/0",
    ),
    ({"grpc": {"port": 0}}, "/grpc/port': minimum: got 0, want 1"),
    ({"grpc": {"port": "9090"}}, "/grpc/port': got string, want integer"),
    ({"grpc": {"enabled": "true"}}, "/grpc/enabled"),
    ({"grpc": {"probes": "yes"}}, "/grpc/probes"),
    ({"grpc": {"headles": True}}, "additional properties 'headles' not allowed"),
    ({"grpc": {"appProtocol": "gRPC over h2"}}, "/grpc/appProtocol"),
    ({"grpc": {"ingress": {"tls": [{"hosts": ["g.example.com"]}]}}}, "/grpc/ingress/tls/0"),
    (
        {"grpc": {"ingress": {"hosts": [{"host": "g.example.com", "paths": []}]}}},
        "/grpc/ingress/hosts/0/paths",
    ),
]

TEMPLATE_ERRORS: list[tuple[dict[str, Any], str]] = [
    (
        {"autoscaling": {"minReplicas": 5, "maxReplicas": 3}},
        "autoscaling.minReplicas (5) must not exceed autoscaling.maxReplicas (3)",
    ),
    (
        {"terminationGracePeriodSeconds": 30, "grpc": {"enabled": False}},
        "terminationGracePeriodSeconds (30) must exceed drain.preStopSeconds + drain.seconds"
        " + drain.graceSeconds = 35",
    ),
    (
        {"terminationGracePeriodSeconds": 45},
        "terminationGracePeriodSeconds (45) must exceed drain.preStopSeconds + drain.seconds"
        " + 2 x drain.graceSeconds (HTTP, then gRPC) = 60",
    ),
    ({"grpc": {"port": 8000}}, "grpc.port (8000) must differ from http.port"),
    ({"grpc": {"enabled": False, "probes": True}}, "grpc.probes needs grpc.enabled"),
    ({"grpc": {"enabled": False, "headless": True}}, "grpc.headless needs grpc.enabled"),
    (
        {"grpc": {"enabled": False, "ingress": {"enabled": True, "tls": [{"secretName": "t"}]}}},
        "grpc.ingress.enabled needs grpc.enabled",
    ),
    ({"grpc": {"ingress": {"enabled": True}}}, "grpc.ingress.enabled needs grpc.ingress.tls"),
    ({"settings": {"grpc": {"port": 50051}}}, "settings.grpc.port is set by the chart"),
    ({"settings": {"grpc": {"host": "127.0.0.1"}}}, "settings.grpc.host is set by the chart"),
    (
        {
            "worker": {"enabled": True, "graceSeconds": 60, "terminationGracePeriodSeconds": 60},
            "rabbitmq": {"url": "amqp://mq/"},
            "redis": {"url": "redis://r"},
        },
        "worker.terminationGracePeriodSeconds (60) must exceed worker.graceSeconds (60)",
    ),
    (
        {"existingSecret": "creds", "store": {"url": "postgresql://a@pg/db"}},
        "set either existingSecret or store.url/redis.url/rabbitmq.url, not both",
    ),
    ({"worker": {"enabled": True}}, "worker.enabled needs RabbitMQ: set rabbitmq.url"),
    ({"rabbitmq": {"url": "amqp://mq/"}}, "RabbitMQ tasks need a result store"),
    ({"settings": {"data_dir": "/var/lib/ragtide"}}, "settings.data_dir is set by the chart"),
    ({"settings": {"http": {"port": 9000}}}, "settings.http.port is set by the chart"),
    ({"settings": {"redis": {"url": "redis://r"}}}, "settings.redis.url is set by the chart"),
    ({"settings": {"auth": {"admin_key": "k"}}}, "settings.auth.admin_key is set by the chart"),
    ({"tenants": {"acme": "id: acme"}}, "tenants.acme: a tenant id takes a mapping"),
    (
        {"podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}},
        "set minAvailable or maxUnavailable, not both",
    ),
]


def _ids(cases: list[tuple[dict[str, Any], str]]) -> list[str]:
    return [next(iter(values)) + ":" + message[:30] for values, message in cases]


@pytest.mark.parametrize(("values", "message"), SCHEMA_ERRORS, ids=_ids(SCHEMA_ERRORS))
def test_schema_rejects_bad_values_by_name(values: dict[str, Any], message: str) -> None:
    error = render_error(values)
    assert "values don't meet the specifications of the schema" in error
    assert message in error, error


@pytest.mark.parametrize(("values", "message"), TEMPLATE_ERRORS, ids=_ids(TEMPLATE_ERRORS))
def test_inconsistent_values_fail_with_a_reason(values: dict[str, Any], message: str) -> None:
    assert message in render_error(values)


def test_lint_reports_schema_errors() -> None:
    """``helm lint`` checks the schema; template ``fail``s only stop an install or a
    render (Helm's lint mode logs them instead)."""
    report = helm_python.lint(str(CHART), values={"autoscaling": {"minReplicas": 0}})
    assert any("/autoscaling/minReplicas" in error for error in report["errors"])


def test_nulls_that_the_chart_allows_render() -> None:
    """Removing optional pieces with null (Helm's way) is not an error."""
    values = {
        "autoscaling": {"targetCPUUtilizationPercentage": None, "behavior": None},
        "terminationGracePeriodSeconds": None,
        "resources": {"limits": {"cpu": None}},
    }
    spec = render(values).one("HorizontalPodAutoscaler")["spec"]
    assert "behavior" not in spec and [m["type"] for m in spec["metrics"]] == ["Pods", "Pods"]
