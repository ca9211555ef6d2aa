"""Policy: what every production chart must guarantee, checked on the rendered objects."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

import ragtide
from ragtide.api.routes.health import READY_TIMEOUT_S

from .render import (
    CHART,
    EVERYTHING,
    KEDA_ENGINE,
    REPO,
    VALUES_FILES,
    Manifests,
    containers,
    merged,
    render,
    render_error,
    values_file,
)

RENDERS: list[Any] = [*VALUES_FILES, EVERYTHING, KEDA_ENGINE]
IDS = [*VALUES_FILES, "everything", "keda-engine"]
ADAPTER_VALUES = REPO / "deploy" / "prometheus-adapter" / "values.yaml"
RECOMMENDED = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)


def _pod(owner: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = owner["spec"]
    return spec["template"]["spec"] if "template" in spec else spec


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _workloads(manifests: Manifests) -> list[dict[str, Any]]:
    return [*manifests.of("Deployment"), *manifests.of("Pod")]


GRPC_SERVICE = "ragtide.v1.Ragtide"


def _readiness_ok(container: dict[str, Any]) -> bool:
    """Readiness is HTTP /ready, or (grpc.probes) the native gRPC probe of the Ragtide service."""
    probe = container["readinessProbe"]
    if "grpc" in probe:
        return probe["grpc"]["service"] == GRPC_SERVICE and "httpGet" not in probe
    return bool(probe["httpGet"]["path"] == "/ready")


# --- containers: resources, probes, security -------------------------------------------------


@pytest.mark.parametrize("values", RENDERS, ids=IDS)
def test_every_container_has_requests_and_limits(values: Any) -> None:
    for owner in _workloads(render(values)):
        for container in containers(owner):
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), owner["metadata"]["name"]
            assert {"cpu", "memory"} <= set(resources["limits"]), owner["metadata"]["name"]


def test_default_resources_are_the_issue_floor() -> None:
    api = containers(render().deployment("api"))[0]
    assert api["resources"] == {
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"cpu": "500m", "memory": "1Gi"},
    }


@pytest.mark.parametrize("values", RENDERS, ids=IDS)
def test_every_long_running_container_has_three_probes(values: Any) -> None:
    for deployment in render(values).of("Deployment"):
        for container in containers(deployment):
            for probe in ("startupProbe", "livenessProbe"):
                assert container[probe]["httpGet"]["path"] == "/healthz", (container["name"], probe)
            assert _readiness_ok(container), container["readinessProbe"]


@pytest.mark.parametrize("values", RENDERS, ids=IDS)
def test_every_pod_runs_locked_down(values: Any) -> None:
    for owner in _workloads(render(values)):
        pod = _pod(owner)
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in containers(owner):
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["privileged"] is False
            assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]


@pytest.mark.parametrize("values", RENDERS, ids=IDS)
def test_writable_paths_are_volumes(values: Any) -> None:
    """A read-only root: the data dir and /tmp are mounted volumes."""
    for deployment in render(values).of("Deployment"):
        container = containers(deployment)[0]
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/data", "/tmp"} <= mounts
        assert _env(container)["RAGTIDE_DATA_DIR"] == "/data"


def test_service_account_mounts_no_token() -> None:
    account = render().one("ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    assert _pod(render().deployment("api"))["serviceAccountName"] == account["metadata"]["name"]


# --- probes and ports are the app's ------------------------------------------------------------


def _status(path: str) -> int:
    """What the app answers on ``path`` (no lifespan: components not loaded yet)."""
    import asyncio

    import httpx

    from ragtide.api.app import create_app
    from ragtide.settings import Settings

    app = create_app(Settings(_env_file=None))

    async def get() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://pod") as client:
            return (await client.get(path)).status_code

    return asyncio.run(get())


def test_probe_paths_are_routes_the_app_serves() -> None:
    manifests = render({**EVERYTHING, "grpc": {"probes": False}})
    api = containers(manifests.deployment("api"))[0]
    paths = {api[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe", "readinessProbe")}
    paths |= {m["spec"]["endpoints"][0]["path"] for m in manifests.of("ServiceMonitor")}
    assert paths == {"/healthz", "/ready", "/metrics"}
    assert _status("/healthz") == 200
    assert _status("/metrics") == 200
    assert _status("/ready") == 503  # served, and not ready before the models load
    assert _status("/readyz") == 404  # the check can tell a missing route


@pytest.mark.parametrize("values", RENDERS, ids=IDS)
def test_probe_ports_are_the_port_the_process_listens_on(values: Any) -> None:
    manifests = render(values)
    listen_var = {"api": "RAGTIDE_HTTP__PORT", "worker": "RAGTIDE_WORKER__PORT"}
    for deployment in manifests.of("Deployment"):
        component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        container = containers(deployment)[0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        listen = int(_env(container)[listen_var[component]])
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if "grpc" in container[probe]:  # a gRPC probe takes a number, never a name
                port = container[probe]["grpc"]["port"]
                assert isinstance(port, int) and probe == "readinessProbe"
                assert port == ports["grpc"] == int(_env(container)["RAGTIDE_GRPC__PORT"])
                continue
            port = container[probe]["httpGet"]["port"]
            assert ports.get(port, port) == listen, (component, probe)
        if component == "api":
            assert _env(container)["RAGTIDE_HTTP__HOST"] == "0.0.0.0"
    service = manifests.one("Service", manifests.deployment("api")["metadata"]["name"])
    api_ports = {p["name"] for p in containers(manifests.deployment("api"))[0]["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= api_ports


def test_the_contract_port_is_8000() -> None:
    api = containers(render().deployment("api"))[0]
    assert _env(api)["RAGTIDE_HTTP__PORT"] == "8000"
    worker = containers(render(EVERYTHING).deployment("worker"))[0]
    assert _env(worker)["RAGTIDE_WORKER__PORT"] == "8001"


def test_readiness_probe_outlasts_the_apps_own_dependency_timeout() -> None:
    for name in VALUES_FILES:
        api = containers(render(name).deployment("api"))[0]
        assert api["readinessProbe"]["timeoutSeconds"] > READY_TIMEOUT_S


# --- shutdown ----------------------------------------------------------------------------------


@pytest.mark.parametrize("values", RENDERS, ids=IDS)
def test_grace_period_covers_prestop_drain_and_grace(values: Any) -> None:
    manifests = render(values)
    api = manifests.deployment("api")
    container = containers(api)[0]
    env = _env(container)
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    budget = float(command[1]) + float(env["RAGTIDE_HTTP__DRAIN_SECONDS"])
    budget += float(env["RAGTIDE_HTTP__GRACE_SECONDS"])
    if int(env.get("RAGTIDE_GRPC__PORT", 0)):  # gRPC stops after HTTP, with its own grace
        budget += float(env["RAGTIDE_HTTP__GRACE_SECONDS"])
    assert _pod(api)["terminationGracePeriodSeconds"] > budget
    for worker in [d for d in manifests.of("Deployment") if d is not api]:
        grace = float(_env(containers(worker)[0])["RAGTIDE_WORKER__GRACE_SECONDS"])
        assert _pod(worker)["terminationGracePeriodSeconds"] > grace


def _grace(values: dict[str, Any]) -> int:
    return int(_pod(render(values).deployment("api"))["terminationGracePeriodSeconds"])


def test_an_explicit_grace_period_follows_the_drain() -> None:
    drain = {"preStopSeconds": 3, "seconds": 7, "graceSeconds": 50}
    http_only = {"drain": drain, "grpc": {"enabled": False}}
    assert _grace(http_only) == 3 + 7 + 50 + 10
    assert _grace({**http_only, "terminationGracePeriodSeconds": 90}) == 90


def test_grace_period_arithmetic_with_grpc() -> None:
    """gRPC stops after HTTP (the lifespan's exit) and gives its calls in flight another
    drain.graceSeconds: the default covers preStop + drain + two grace periods + 10 s."""
    assert _grace({}) == 5 + 5 + 25 + 25 + 10
    assert _grace({"grpc": {"enabled": False}}) == 5 + 5 + 25 + 10
    drain = {"preStopSeconds": 3, "seconds": 7, "graceSeconds": 50}
    assert _grace({"drain": drain}) == 3 + 7 + 2 * 50 + 10
    fractional = {"preStopSeconds": 1, "seconds": 0.5, "graceSeconds": 2.2}
    assert _grace({"drain": fractional}) == 6 + 10  # ceil(1 + 0.5 + 2 x 2.2)
    assert _grace({"drain": drain, "terminationGracePeriodSeconds": 111}) == 111
    error = render_error({"drain": drain, "terminationGracePeriodSeconds": 110})
    assert "must exceed drain.preStopSeconds + drain.seconds + 2 x drain.graceSeconds" in error
    assert "= 110" in error
    # explicit values that covered HTTP alone no longer do once gRPC is on
    assert _grace({"drain": drain, "grpc": {"enabled": False}, "terminationGracePeriodSeconds": 61})
    assert "(61)" in render_error({"drain": drain, "terminationGracePeriodSeconds": 61})


# --- autoscaling ---------------------------------------------------------------------------------


def _adapter_names() -> set[str]:
    """The custom metric names prometheus-adapter serves, as its values configure them."""
    assert ADAPTER_VALUES.is_file(), f"{ADAPTER_VALUES} is missing"
    rules = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]
    names = set()
    for rule in rules.get("custom", []):
        naming = rule.get("name", {})
        assert naming.get("as"), f"this check reads explicit names: {rule}"
        names.add(naming["as"])
    return names


@pytest.mark.parametrize("values", RENDERS, ids=IDS)
def test_hpa_metric_names_are_served_by_the_adapter(values: Any) -> None:
    hpa = render(values).of("HorizontalPodAutoscaler")
    for autoscaler in hpa:
        pods = [m["pods"]["metric"]["name"] for m in autoscaler["spec"]["metrics"] if "pods" in m]
        assert pods and set(pods) <= _adapter_names()


@pytest.mark.parametrize("values", RENDERS, ids=IDS)
def test_hpa_and_keda_each_own_one_deployment(values: Any) -> None:
    manifests = render(values)
    api = manifests.deployment("api")["metadata"]["name"]
    owners: dict[str, str] = {}
    for hpa in manifests.of("HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        assert (ref["apiVersion"], ref["kind"], ref["name"]) == ("apps/v1", "Deployment", api)
        owners[ref["name"]] = "hpa"
    for scaled in manifests.of("ScaledObject"):
        target = scaled["spec"]["scaleTargetRef"]["name"]
        assert target not in owners, f"{target} is scaled by both an HPA and KEDA"
        owners[target] = "keda"
    for deployment in manifests.of("Deployment"):
        owned = deployment["metadata"]["name"] in owners
        assert ("replicas" in deployment["spec"]) is not owned, deployment["metadata"]["name"]


def test_keda_engine_replaces_the_hpa_with_the_same_triggers_and_behavior() -> None:
    manifests = render(KEDA_ENGINE)
    api = manifests.deployment("api")["metadata"]["name"]
    assert manifests.of("HorizontalPodAutoscaler") == []
    (scaled,) = [
        s for s in manifests.of("ScaledObject") if s["spec"]["scaleTargetRef"]["name"] == api
    ]
    spec = scaled["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 20)
    assert [t["type"] for t in spec["triggers"]] == ["cpu", "prometheus", "prometheus", "cron"]
    cpu, rate, inflight, cron = spec["triggers"]
    assert (cpu["metricType"], cpu["metadata"]["value"]) == ("Utilization", "70")
    assert (rate["metricType"], rate["metadata"]["threshold"]) == ("AverageValue", "100")
    assert 'route!~"/healthz|/ready|/metrics"' in rate["metadata"]["query"]
    assert rate["metadata"]["query"].startswith("sum(rate(ragtide_http_requests_total{")
    assert f'pod=~"{api}-[a-z0-9]+-[a-z0-9]+"' in inflight["metadata"]["query"]
    assert inflight["metadata"]["threshold"] == "8"
    assert cron["metadata"] == {
        "timezone": "Europe/Berlin",
        "start": "30 8 * * 1-5",
        "end": "0 18 * * 1-5",
        "desiredReplicas": "12",
    }
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    hpa = render().one("HorizontalPodAutoscaler")["spec"]["behavior"]
    assert behavior == hpa


def test_hpa_defaults() -> None:
    hpa = render().one("HorizontalPodAutoscaler")
    spec = hpa["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 20)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert spec["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 70},
            },
        },
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "http_requests_per_second"},
                "target": {"type": "AverageValue", "averageValue": "100"},
            },
        },
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "http_requests_in_flight"},
                "target": {"type": "AverageValue", "averageValue": "8"},
            },
        },
    ]
    up, down = spec["behavior"]["scaleUp"], spec["behavior"]["scaleDown"]
    assert up["stabilizationWindowSeconds"] == 60
    assert up["policies"] == [{"type": "Pods", "value": 2, "periodSeconds": 60}]
    assert down["stabilizationWindowSeconds"] == 300
    assert down["policies"] == [{"type": "Percent", "value": 10, "periodSeconds": 60}]


def test_hpa_values_are_overridable() -> None:
    values = {
        "autoscaling": {
            "minReplicas": 4,
            "maxReplicas": 40,
            "targetCPUUtilizationPercentage": None,
            "requestRate": {"enabled": False},
            "inflightRequests": {"averageValue": 12.5},
            "behavior": {"scaleUp": None, "scaleDown": {"stabilizationWindowSeconds": 600}},
        }
    }
    spec = render(values).one("HorizontalPodAutoscaler")["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (4, 40)
    assert [m["type"] for m in spec["metrics"]] == ["Pods"]
    assert spec["metrics"][0]["pods"]["target"]["averageValue"] == "12.5"
    assert "scaleUp" not in spec["behavior"]
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 600


def test_keda_defaults_and_secret() -> None:
    manifests = render(EVERYTHING)
    scaled = manifests.one("ScaledObject")["spec"]
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (0, 20)
    assert scaled["cooldownPeriod"] == 300 and scaled["pollingInterval"] == 30
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"]["queueName"] == "ragtide.tasks"
    assert trigger["metadata"]["mode"] == "QueueLength"
    assert (trigger["metadata"]["value"], trigger["metadata"]["activationValue"]) == ("100", "1")
    auth = manifests.one("TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    (ref,) = auth["spec"]["secretTargetRef"]
    secret = manifests.one("Secret", ref["name"])
    assert ref["parameter"] == "host" and ref["key"] in secret["data"]


# --- labels, names, image ---------------------------------------------------------------------


@pytest.mark.parametrize("values", RENDERS, ids=IDS)
def test_recommended_labels_on_every_object_and_pod(values: Any) -> None:
    for obj in render(values).objects:
        labels = obj["metadata"]["labels"]
        assert all(labels.get(k) for k in RECOMMENDED), (obj["kind"], obj["metadata"]["name"])
        assert labels["app.kubernetes.io/name"] == "ragtide"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
    for deployment in render(values).of("Deployment"):
        selector = deployment["spec"]["selector"]["matchLabels"]
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= pod_labels.items()
        assert all(pod_labels.get(k) for k in RECOMMENDED)


def test_services_select_only_their_own_pods() -> None:
    manifests = render(EVERYTHING)
    by_component = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d["spec"]["template"]["metadata"][
            "labels"
        ]
        for d in manifests.of("Deployment")
    }
    for service in manifests.of("Service"):
        selected = [
            c
            for c, labels in by_component.items()
            if service["spec"]["selector"].items() <= labels.items()
        ]
        assert selected == [service["metadata"]["labels"]["app.kubernetes.io/component"]]


def test_fullname_override_names_everything() -> None:
    for obj in render({**EVERYTHING, "fullnameOverride": "chat"}).objects:
        assert obj["metadata"]["name"].startswith("chat"), (obj["kind"], obj["metadata"]["name"])


def test_name_override_and_release_names() -> None:
    manifests = render({"nameOverride": "rag"}, release="prod")
    api = manifests.deployment("api")
    assert api["metadata"]["name"] == "prod-rag"
    assert api["metadata"]["labels"]["app.kubernetes.io/name"] == "rag"
    assert api["metadata"]["labels"]["app.kubernetes.io/instance"] == "prod"
    # A release that already contains the chart name is not repeated.
    assert render(release="ragtide-eu").deployment("api")["metadata"]["name"] == "ragtide-eu"
    long = render(release="r" * 53).deployment("api")["metadata"]["name"]
    assert len(long) <= 63


def test_image_tag_defaults_to_app_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == ragtide.__version__
    for owner in _workloads(render(EVERYTHING)):
        for container in containers(owner):
            assert container["image"] == f"ghcr.io/ragtide/ragtide:{chart['appVersion']}"
    api = containers(render({"image": {"tag": "1.2.3"}}).deployment("api"))[0]
    assert api["image"].endswith(":1.2.3")
    digest = "sha256:" + "a" * 64
    pinned = containers(render({"image": {"digest": digest}}).deployment("api"))[0]
    assert pinned["image"] == f"ghcr.io/ragtide/ragtide@{digest}"


def test_pod_conventions_reach_both_deployments() -> None:
    values = {
        **EVERYTHING,
        "imagePullSecrets": [{"name": "registry"}],
        "podAnnotations": {"team": "chat"},
        "podLabels": {"cost-center": "rag"},
        "extraEnv": [{"name": "EXTRA", "value": "1"}],
        "extraEnvFrom": [{"secretRef": {"name": "llm-key"}}],
        "extraVolumes": [{"name": "certs", "secret": {"secretName": "ca"}}],
        "extraVolumeMounts": [{"name": "certs", "mountPath": "/etc/certs", "readOnly": True}],
        "nodeSelector": {"pool": "cpu"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {}},
        "priorityClassName": "high",
    }
    manifests = render(values)
    for deployment in manifests.of("Deployment"):
        template = deployment["spec"]["template"]
        pod = template["spec"]
        container = pod["containers"][0]
        assert pod["imagePullSecrets"] == [{"name": "registry"}]
        assert template["metadata"]["annotations"]["team"] == "chat"
        assert template["metadata"]["labels"]["cost-center"] == "rag"
        assert _env(container)["EXTRA"] == "1"
        assert {"secretRef": {"name": "llm-key"}} in container["envFrom"]
        assert {"name": "certs", "secret": {"secretName": "ca"}} in pod["volumes"]
        assert any(m["mountPath"] == "/etc/certs" for m in container["volumeMounts"])
        assert pod["nodeSelector"] == {"pool": "cpu"}
        assert pod["tolerations"][0]["key"] == "dedicated"
        assert pod["affinity"] == {"nodeAffinity": {}}
        assert pod["priorityClassName"] == "high"


def test_service_account_can_be_brought() -> None:
    manifests = render({"serviceAccount": {"create": False, "name": "ragtide-irsa"}})
    assert "ServiceAccount" not in manifests.kinds()
    assert _pod(manifests.deployment("api"))["serviceAccountName"] == "ragtide-irsa"


def test_topology_spread_selects_the_pods_it_spreads() -> None:
    api = render().deployment("api")
    labels = api["spec"]["template"]["metadata"]["labels"]
    constraints = _pod(api)["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in constraints} == {
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    }
    for constraint in constraints:
        assert constraint["labelSelector"]["matchLabels"].items() <= labels.items()
        assert constraint["matchLabelKeys"] == ["pod-template-hash"]


# --- config and secrets ---------------------------------------------------------------------


def test_config_comes_from_a_configmap_and_credentials_from_a_secret() -> None:
    manifests = render(EVERYTHING)
    config = manifests.one("ConfigMap", "ragtide")
    secret = manifests.one("Secret", "ragtide")
    assert config["data"]["RAGTIDE_LOGGING__LEVEL"] == "INFO"
    assert not any("://" in v for v in config["data"].values())
    for deployment in manifests.of("Deployment"):
        container = containers(deployment)[0]
        assert {"configMapRef": {"name": "ragtide"}} in container["envFrom"]
        env = _env(container)
        for var in ("RAGTIDE_STORE__URL", "RAGTIDE_REDIS__URL", "RAGTIDE_RABBITMQ__URL"):
            ref = env[var]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["data"]
    tenants = manifests.one("ConfigMap", "ragtide-tenants")
    assert yaml.safe_load(tenants["data"]["acme.yaml"]) == {
        "id": "acme",
        "name": "Acme Corp",
        "quotas": {"documents": 50000},
    }
    api = containers(manifests.deployment("api"))[0]
    assert not any(m["mountPath"] == "/etc/ragtide/tenants" for m in api["volumeMounts"])


# --- authentication and tenants -------------------------------------------------------------


def _volume(pod_owner: dict[str, Any], name: str) -> dict[str, Any]:
    volumes: list[dict[str, Any]] = _pod(pod_owner)["volumes"]
    (volume,) = [v for v in volumes if v["name"] == name]
    return volume


@pytest.mark.parametrize("values", RENDERS, ids=IDS)
def test_auth_is_on_and_the_admin_key_is_only_ever_a_file_from_a_secret(values: Any) -> None:
    manifests = render(values)
    api = manifests.deployment("api")
    env = _env(containers(api)[0])
    assert env["RAGTIDE_AUTH__ENABLED"] == "true"
    assert env["RAGTIDE_AUTH__ADMIN_KEY_FILE"] == "/etc/ragtide/auth/admin-key"
    assert {"name": "admin-key", "mountPath": "/etc/ragtide/auth", "readOnly": True} in (
        containers(api)[0]["volumeMounts"]
    )
    source = _volume(api, "admin-key")["secret"]
    assert source["items"] == [{"key": source["items"][0]["key"], "path": "admin-key"}]
    for obj in manifests.objects:  # never a plain value: not in any env, ConfigMap or args
        text = yaml.safe_dump(obj)
        assert "RAGTIDE_AUTH__ADMIN_KEY:" not in text and "RAGTIDE_AUTH__ADMIN_KEY\n" not in text
        if obj["kind"] == "ConfigMap":
            assert not any(k.startswith("RAGTIDE_AUTH") for k in obj.get("data", {}))
    for owner in _workloads(manifests):
        for container in containers(owner):
            assert "RAGTIDE_AUTH__ADMIN_KEY" not in _env(container)


def test_admin_key_sources() -> None:
    own = render()
    secret = own.one("Secret", "ragtide-auth")
    assert len(base64.b64decode(secret["data"]["admin-key"])) == 48  # generated
    source = _volume(own.deployment("api"), "admin-key")["secret"]
    assert (source["secretName"], source["items"][0]["key"]) == ("ragtide-auth", "admin-key")
    dev = render({"auth": {"adminKey": "dev-admin-key"}}).one("Secret", "ragtide-auth")
    assert base64.b64decode(dev["data"]["admin-key"]) == b"dev-admin-key"
    prod = render("values-prod.yaml")
    assert "ragtide-auth" not in {s["metadata"]["name"] for s in prod.of("Secret")}
    source = _volume(prod.deployment("api"), "admin-key")["secret"]
    assert (source["secretName"], source["items"][0]["key"]) == ("ragtide-credentials", "admin-key")
    mine = render({"auth": {"existingSecret": "admin", "existingSecretKey": "key"}})
    assert "ragtide-auth" not in {s["metadata"]["name"] for s in mine.of("Secret")}
    source = _volume(mine.deployment("api"), "admin-key")["secret"]
    assert (source["secretName"], source["items"][0]["key"]) == ("admin", "key")


def test_auth_off_mounts_no_key() -> None:
    manifests = render({"auth": {"enabled": False}})
    api = manifests.deployment("api")
    assert _env(containers(api)[0])["RAGTIDE_AUTH__ENABLED"] == "false"
    assert "RAGTIDE_AUTH__ADMIN_KEY_FILE" not in _env(containers(api)[0])
    assert all(v["name"] != "admin-key" for v in _pod(api)["volumes"])
    assert "Secret" not in manifests.kinds()
    assert "checksum/admin-key" not in api["spec"]["template"]["metadata"]["annotations"]


def test_tenants_are_applied_by_a_hook_job_like_the_api() -> None:
    manifests = render(
        {**EVERYTHING, "tenants": {"acme": {"name": "Acme"}, "beta.yaml": "id: beta\n"}}
    )
    files = manifests.one("ConfigMap", "ragtide-tenants")["data"]
    assert sorted(files) == ["acme.yaml", "beta.yaml"]
    job = manifests.one("Job", "ragtide-tenants")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-install,post-upgrade"
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["tenants", "apply", "-f", "/etc/ragtide/tenants"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    api = manifests.deployment("api")
    api_container = containers(api)[0]
    assert pod["securityContext"] == _pod(api)["securityContext"]
    assert container["securityContext"] == api_container["securityContext"]
    assert container["resources"] == api_container["resources"]
    assert container["envFrom"] == api_container["envFrom"]
    job_env, api_env = _env(container), _env(api_container)
    for var in (
        "RAGTIDE_STORE__URL",
        "RAGTIDE_REDIS__URL",
        "RAGTIDE_AUTH__ENABLED",
        "RAGTIDE_AUTH__ADMIN_KEY_FILE",
    ):
        assert job_env[var] == api_env[var], var
    assert _volume(job, "tenants")["configMap"]["name"] == "ragtide-tenants"
    assert _volume(job, "admin-key") == _volume(api, "admin-key")
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/etc/ragtide/tenants", "/etc/ragtide/auth", "/tmp"} <= mounts
    assert "Job" not in render().kinds()  # no tenants, no hook


def test_migrations_run_once_in_a_pre_upgrade_hook_job_like_the_api() -> None:
    manifests = render(EVERYTHING)
    job = manifests.one("Job", "ragtide-migrate")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-upgrade"  # not pre-install: no Secret yet
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    spec = job["spec"]
    assert spec["backoffLimit"] == 0 and spec["activeDeadlineSeconds"] > 7200
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["migrate", "--timeout-s", "7200"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    api = manifests.deployment("api")
    api_container = containers(api)[0]
    assert container["image"] == api_container["image"]
    assert pod["securityContext"] == _pod(api)["securityContext"]
    assert container["securityContext"] == api_container["securityContext"]
    assert container["envFrom"] == api_container["envFrom"]
    assert _env(container)["RAGTIDE_STORE__URL"] == _env(api_container)["RAGTIDE_STORE__URL"]
    # Nothing to migrate without a shared store (the embedded one migrates as it opens).
    assert ("Job", "ragtide-migrate") not in _inventory(render())
    values = {**EVERYTHING, "migrateJob": {"statementTimeoutSeconds": 60}}
    (container,) = render(values).one("Job", "ragtide-migrate")["spec"]["template"]["spec"][
        "containers"
    ]
    assert container["args"] == ["migrate", "--timeout-s", "60"]


def test_existing_secret_replaces_the_charts_secret() -> None:
    values = {
        "existingSecret": "vault-synced",
        "existingSecretKeys": {"storeUrl": "pg", "redisUrl": "cache", "rabbitmqUrl": ""},
    }
    manifests = render(values)
    assert "Secret" not in manifests.kinds()
    api = containers(manifests.deployment("api"))[0]
    env = _env(api)
    assert env["RAGTIDE_STORE__URL"] == {"secretKeyRef": {"name": "vault-synced", "key": "pg"}}
    assert env["RAGTIDE_REDIS__URL"] == {"secretKeyRef": {"name": "vault-synced", "key": "cache"}}
    assert "RAGTIDE_RABBITMQ__URL" not in env  # an empty key name leaves it unset
    annotations = manifests.deployment("api")["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/secret" not in annotations
    prod = render("values-prod.yaml")
    auth = prod.one("TriggerAuthentication")["spec"]["secretTargetRef"][0]
    assert (auth["name"], auth["key"]) == ("ragtide-credentials", "rabbitmq-url")


def _checksums(values: dict[str, Any]) -> dict[str, str]:
    annotations = render(values).deployment("api")["spec"]["template"]["metadata"]["annotations"]
    return {k: v for k, v in annotations.items() if k.startswith("checksum/")}


def test_config_and_secret_changes_roll_the_pods() -> None:
    base = {"store": {"url": "postgresql://a@pg/db"}}
    before = _checksums(base)
    assert set(before) == {"checksum/config", "checksum/secret", "checksum/admin-key"}
    settings = _checksums({**base, "settings": {"logging": {"level": "DEBUG"}}})
    assert settings["checksum/config"] != before["checksum/config"]
    assert settings["checksum/secret"] == before["checksum/secret"]
    # tenants are applied by the hook Job: a change does not roll the API
    assert _checksums({**base, "tenants": {"acme": {"name": "Acme"}}}) == before
    secret = _checksums({"store": {"url": "postgresql://b@pg/db"}})
    assert secret["checksum/secret"] != before["checksum/secret"]
    assert _checksums({**base, "service": {"port": 8080}}) == before
    # a changed admin key rolls the pods; a generated one is stable across renders
    key = _checksums({**base, "auth": {"adminKey": "rotated"}})
    assert key["checksum/admin-key"] != before["checksum/admin-key"]
    assert key["checksum/secret"] == before["checksum/secret"]


# --- network, ingress, test hook, notes ------------------------------------------------------


def test_network_policy_admits_the_port_the_ingress_and_the_test_pod() -> None:
    manifests = render(EVERYTHING)
    api = manifests.deployment("api")
    policy = manifests.one("NetworkPolicy", api["metadata"]["name"])
    pod_labels = api["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [
        {"port": "http", "protocol": "TCP"},
        {"port": "grpc", "protocol": "TCP"},
    ]
    worker = manifests.one("NetworkPolicy", manifests.deployment("worker")["metadata"]["name"])
    assert worker["spec"]["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]
    test_pod = manifests.one("Pod")["metadata"]["labels"]
    peers = rule["from"]
    assert {"namespaceSelector": {"matchLabels": {"team": "edge"}}} in peers
    assert any(
        p.get("podSelector", {}).get("matchLabels", {}).items() <= test_pod.items() for p in peers
    )
    egress = policy["spec"]["egress"]
    assert {} not in egress and any(53 in [p["port"] for p in e["ports"]] for e in egress)
    open_egress = render().one("NetworkPolicy")["spec"]["egress"]
    assert open_egress == [{}]


def test_ingress_class_tls_and_annotations_are_values() -> None:
    manifests = render(EVERYTHING)
    ingress = manifests.one("Ingress", "ragtide")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [
        {"hosts": ["ragtide.example.com"], "secretName": "ragtide-tls"}
    ]
    assert ingress["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/proxy-buffering": "off"
    }
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    service = manifests.one("Service", backend["name"])
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}


def test_helm_test_pod_checks_ready_through_the_service() -> None:
    manifests = render()
    pod = manifests.one("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    service = manifests.one("Service")
    url = _env(pod["spec"]["containers"][0])["READY_URL"]
    port = service["spec"]["ports"][0]["port"]
    assert url == f"http://{service['metadata']['name']}.ragtide.svc:{port}/ready"


def test_notes_tell_where_the_admin_key_is_and_how_tenants_are_applied() -> None:
    notes = render("values-prod.yaml").notes
    assert "Authentication is on" in notes
    assert "get secret ragtide-credentials -o jsonpath='{.data.admin-key}'" in notes
    everything = render(EVERYTHING).notes
    assert "hook Job ragtide-tenants (ragtide tenants apply)" in everything
    assert "WARNING: without store.url" in render({"tenants": {"acme": {"name": "A"}}}).notes
    assert "WARNING: authentication is off" in render({"auth": {"enabled": False}}).notes
    assert "KEDA (ScaledObject ragtide)" in render(KEDA_ENGINE).notes


def test_notes_warn_when_replicas_would_not_share_state() -> None:
    assert "WARNING: no PostgreSQL" in render().notes
    assert "WARNING" not in render("values-prod.yaml").notes
    assert "helm test ragtide" in render("values-prod.yaml").notes


# --- toggles -------------------------------------------------------------------------------------

TOGGLES: dict[str, tuple[dict[str, Any], set[str]]] = {
    "ingress": ({"ingress": {"enabled": False}}, {"Ingress"}),
    "autoscaling": ({"autoscaling": {"enabled": False}}, {"HorizontalPodAutoscaler"}),
    "podDisruptionBudget": (
        {
            "podDisruptionBudget": {"enabled": False},
            "worker": {"podDisruptionBudget": {"enabled": False}},
        },
        {"PodDisruptionBudget"},
    ),
    "networkPolicy": ({"networkPolicy": {"enabled": False}}, {"NetworkPolicy"}),
    "serviceMonitor": ({"metrics": {"serviceMonitor": {"enabled": False}}}, {"ServiceMonitor"}),
    "prometheusRule": ({"metrics": {"prometheusRule": {"enabled": False}}}, {"PrometheusRule"}),
    "keda": ({"worker": {"keda": {"enabled": False}}}, {"ScaledObject", "TriggerAuthentication"}),
    "tests": ({"tests": {"enabled": False}}, {"Pod"}),
    "tenants": ({"tenants": None}, {"ConfigMap", "Job"}),
    "migrateJob": ({"migrateJob": {"enabled": False}}, {"Job"}),
    "auth": ({"auth": {"enabled": False}}, {"Secret"}),
    "serviceAccount": ({"serviceAccount": {"create": False}}, {"ServiceAccount"}),
    "grpc.headless": ({"grpc": {"headless": False}}, {"Service"}),
    "grpc.ingress": ({"grpc": {"ingress": {"enabled": False}}}, {"Ingress"}),
    "grpc": (
        {
            "grpc": {
                "enabled": False,
                "probes": False,
                "headless": False,
                "ingress": {"enabled": False},
            }
        },
        {"Service", "Ingress"},
    ),
}


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _inventory(manifests: Manifests) -> set[tuple[str, str]]:
    return {(o["kind"], o["metadata"]["name"]) for o in manifests.objects}


@pytest.mark.parametrize("toggle", sorted(TOGGLES))
def test_toggle_removes_exactly_its_objects(toggle: str) -> None:
    off, kinds = TOGGLES[toggle]
    everything = _inventory(render(EVERYTHING))
    without = _inventory(render(_deep_merge(EVERYTHING, off)))
    removed = everything - without
    assert removed and {kind for kind, _ in removed} == kinds
    assert without <= everything


def test_worker_toggle_removes_the_worker_and_what_serves_it() -> None:
    everything = _inventory(render(EVERYTHING))
    without = _inventory(render(_deep_merge(EVERYTHING, {"worker": {"enabled": False}})))
    removed = everything - without
    assert removed == {
        (kind, "ragtide-worker")
        for kind in (
            "Deployment",
            "Service",
            "ScaledObject",
            "TriggerAuthentication",
            "PodDisruptionBudget",
            "NetworkPolicy",
            "ServiceMonitor",
        )
    }


def test_dashboard_toggle_and_content() -> None:
    dashboard = render(EVERYTHING).one("ConfigMap", "ragtide-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = (CHART / "dashboards" / "ragtide.json").read_text()
    assert dashboard["data"]["ragtide.json"].strip() == shipped.strip()
    off = _deep_merge(EVERYTHING, {"metrics": {"dashboard": {"enabled": False}}})
    assert ("ConfigMap", "ragtide-dashboard") not in _inventory(render(off))


def test_defaults_install_without_any_crd() -> None:
    """Out of the box the chart needs no operator: only core kinds."""
    assert all(
        not o["apiVersion"].startswith(("keda.sh/", "monitoring.coreos.com/"))
        for o in render().objects
    )
    assert merged()["worker"]["keda"]["enabled"] is True  # the planner's default shape


def test_argo_cd_application_points_at_this_chart() -> None:
    path = REPO / "deploy" / "argocd" / "ragtide-prod.yaml"
    app = yaml.safe_load(path.read_text())
    assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application")
    source = app["spec"]["source"]
    assert (REPO / source["path"] / "Chart.yaml").is_file()
    for values in source["helm"]["valueFiles"]:
        assert (REPO / source["path"] / values).is_file()
    assert Path(source["path"]) == CHART.relative_to(REPO)


# --- gRPC ------------------------------------------------------------------------------------


def _ports(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container["ports"]}


@pytest.mark.parametrize("values", RENDERS, ids=IDS)
def test_grpc_port_names_match_from_env_to_ingress(values: Any) -> None:
    """One port, four names for it: the env the server binds, the container port `grpc`,
    the Service port `grpc` (appProtocol grpc), the NetworkPolicy and the Ingress backend."""
    manifests = render(values)
    api = manifests.deployment("api")
    container = containers(api)[0]
    listen = int(_env(container)["RAGTIDE_GRPC__PORT"])  # on by default in every values file
    given = values_file(values) if isinstance(values, str) else values
    assert listen == _ports(container)["grpc"] == merged(given)["grpc"]["port"]
    service = manifests.one("Service", api["metadata"]["name"])
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
    assert (port["targetPort"], port["appProtocol"], port["protocol"]) == ("grpc", "grpc", "TCP")
    for headless in [s for s in manifests.of("Service") if s["spec"].get("clusterIP") == "None"]:
        for p in headless["spec"]["ports"]:
            assert p["targetPort"] in _ports(containers(_owner(manifests, headless))[0])
    policy = manifests.of("NetworkPolicy")
    if policy:
        (rule,) = manifests.one("NetworkPolicy", api["metadata"]["name"])["spec"]["ingress"]
        assert {"port": "grpc", "protocol": "TCP"} in rule["ports"]
        assert {p["port"] for p in rule["ports"]} <= set(_ports(container))
    services = {s["metadata"]["name"]: s for s in manifests.of("Service")}
    for ingress in manifests.of("Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                names = {p["name"] for p in services[backend["name"]]["spec"]["ports"]}
                assert backend["port"]["name"] in names


def _owner(manifests: Manifests, service: dict[str, Any]) -> dict[str, Any]:
    selector = service["spec"]["selector"].items()
    (owner,) = [
        d
        for d in manifests.of("Deployment")
        if selector <= d["spec"]["template"]["metadata"]["labels"].items()
    ]
    return owner


def test_grpc_off_leaves_no_trace() -> None:
    manifests = render({"grpc": {"enabled": False}})
    container = containers(manifests.deployment("api"))[0]
    assert "RAGTIDE_GRPC__PORT" not in _env(container)
    assert set(_ports(container)) == {"http"}
    assert [p["name"] for p in manifests.one("Service")["spec"]["ports"]] == ["http"]
    (rule,) = manifests.one("NetworkPolicy")["spec"]["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert "gRPC" not in manifests.notes
    assert "/mcp" in manifests.notes  # MCP rides on HTTP either way


def test_grpc_readiness_probe_only_when_asked() -> None:
    """Default: HTTP /ready. grpc.probes: the kubelet's gRPC probe on the Ragtide service's
    health, same timings. Startup and liveness stay on HTTP /healthz either way: gRPC
    health follows readiness, which includes the stores."""
    from ragtide.grpc.stubs import SERVICE_NAME

    assert SERVICE_NAME == GRPC_SERVICE
    http = containers(render().deployment("api"))[0]
    assert http["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    for values in ({"grpc": {"probes": True}}, {"grpc": {"probes": True, "port": 50051}}):
        api = containers(render(values).deployment("api"))[0]
        probe = api["readinessProbe"]
        port = values["grpc"].get("port", 9090)
        assert probe["grpc"] == {"port": port, "service": SERVICE_NAME}
        assert {k: v for k, v in probe.items() if k != "grpc"} == {
            k: v for k, v in http["readinessProbe"].items() if k != "httpGet"
        }
        for kept in ("startupProbe", "livenessProbe"):
            assert api[kept] == http[kept] and api[kept]["httpGet"]["path"] == "/healthz"
        assert _env(api)["RAGTIDE_GRPC__PORT"] == str(port) and _ports(api)["grpc"] == port
    template = (CHART / "templates" / "deployment.yaml").read_text()
    assert "includes the stores" in template  # the reason liveness stays on HTTP
    worker = render(EVERYTHING).deployment("worker")
    assert "grpc" not in _ports(containers(worker)[0])
    assert "RAGTIDE_GRPC__PORT" not in _env(containers(worker)[0])


def test_headless_service_for_client_side_balancing() -> None:
    assert [s["metadata"]["name"] for s in render().of("Service")] == ["ragtide"]
    manifests = render({"grpc": {"headless": True}})
    main = manifests.one("Service", "ragtide")
    headless = manifests.one("Service", "ragtide-grpc")
    spec = headless["spec"]
    assert spec["clusterIP"] == "None" and spec["type"] == "ClusterIP"
    assert spec["selector"] == main["spec"]["selector"]
    assert "publishNotReadyAddresses" not in spec  # DNS names only ready replicas
    assert spec["ports"] == [
        {
            "name": "grpc",
            "port": 9090,
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "grpc",
        }
    ]
    # No `http` port: the ServiceMonitor (port http) never scrapes a pod twice through it.
    assert headless["metadata"]["labels"]["app.kubernetes.io/component"] == "api"
    notes = manifests.notes
    assert "dns:///ragtide-grpc.ragtide.svc:9090 with the round_robin policy" in notes
    assert "set grpc.headless=true" in render().notes  # the advice when it is off
    long = render({"grpc": {"headless": True}}, release="r" * 70)
    assert all(len(s["metadata"]["name"]) <= 63 for s in long.of("Service"))
    assert len({s["metadata"]["name"] for s in long.of("Service")}) == 2


def test_grpc_ingress_is_separate_tls_and_grpc() -> None:
    assert [i["metadata"]["name"] for i in render(EVERYTHING).of("Ingress")] == [
        "ragtide",
        "ragtide-grpc",
    ]
    ingress = render(EVERYTHING).one("Ingress", "ragtide-grpc")
    assert ingress["metadata"]["annotations"] == {
        "cert-manager.io/cluster-issuer": "letsencrypt",
        "nginx.ingress.kubernetes.io/backend-protocol": "GRPC",
    }
    assert ingress["spec"]["ingressClassName"] == "nginx"  # ingress.className by default
    assert ingress["spec"]["tls"] == [
        {"hosts": ["grpc.ragtide.example.com"], "secretName": "ragtide-grpc-tls"}
    ]
    (path,) = ingress["spec"]["rules"][0]["http"]["paths"]
    assert path["backend"]["service"] == {"name": "ragtide", "port": {"name": "grpc"}}
    # The HTTP Ingress keeps its own annotations and is not needed for the gRPC one.
    alone = {
        "grpc": {
            "ingress": {
                "enabled": True,
                "className": "nginx-internal",
                "annotations": {"nginx.ingress.kubernetes.io/backend-protocol": "HTTP"},
                "tls": [{"secretName": "t"}],
            }
        }
    }
    manifests = render(alone)
    (only,) = manifests.of("Ingress")
    assert only["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/backend-protocol": "GRPC"
    }
    assert only["spec"]["ingressClassName"] == "nginx-internal"
    assert 'grpcurl -H "authorization: Bearer $KEY" grpc.ragtide.example.com:443 list' in (
        manifests.notes
    )
    prod = render("values-prod.yaml")
    assert prod.one("Ingress", "ragtide-grpc")["spec"]["tls"]
    assert prod.one("Service", "ragtide-grpc")["spec"]["clusterIP"] == "None"


def test_notes_say_how_to_reach_grpc_and_mcp() -> None:
    notes = render().notes
    assert "MCP (streamable HTTP) is served at /mcp" in notes
    assert "port-forward service/ragtide 9090:9090" in notes
    assert "grpcurl -plaintext" in notes
    assert "Readiness is the native gRPC probe" in render({"grpc": {"probes": True}}).notes
    assert "Readiness is the native gRPC probe" not in notes
