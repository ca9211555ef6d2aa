"""The chart's optional model server (modelServer.*): llama.cpp on CPU or vLLM on GPUs.

Rendered with Helm's engine like every chart test, validated with kubernetes-validate
--strict and the published KEDA / prometheus-operator CRDs, then held to policy: probes on
the servers' /health, requests and limits (GPUs for vLLM), non-root with a read-only root,
the API's chat model pointed at the model Service, the autoscaler on the server's own
saturation series.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import helm_python
import kubernetes_validate
import pytest

from .render import (
    CHART,
    NAMESPACE,
    Manifests,
    containers,
    crd_validator,
    quantity_milli,
    render,
    render_error,
)
from .test_chart_values import _container_settings

KUBERNETES = ("1.29.0", kubernetes_validate.latest_version())

LLAMACPP: dict[str, Any] = {"modelServer": {"enabled": True}}
VLLM: dict[str, Any] = {
    "modelServer": {
        "enabled": True,
        "engine": "vllm",
        "modelName": "qwen",
        "vllm": {"gpus": 2, "hfTokenSecret": "hf-token"},
        # Helm merges maps: the default emptyDir is nulled to give another volume source.
        "modelVolume": {"emptyDir": None, "persistentVolumeClaim": {"claimName": "models"}},
        "nodeSelector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }
}
# Every optional piece: a download init container, a locked-down network, a ServiceMonitor.
LOCKED_DOWN: dict[str, Any] = {
    "modelServer": {
        "enabled": True,
        "modelName": "smollm2",
        "port": 8088,
        "llamacpp": {"modelFile": "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "threads": 2},
        "download": {
            "enabled": True,
            "url": "https://models.example.com/SmolLM2-135M-Instruct.Q4_1.gguf",
            "sha256": "0" * 64,
        },
        "autoscaling": {"prometheusServerAddress": "http://prometheus.monitoring.svc:9090"},
    },
    "networkPolicy": {
        "ingressFrom": [{"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}],
        "allowExternalEgress": False,
    },
    "metrics": {"serviceMonitor": {"enabled": True}},
}
RENDERS = [LLAMACPP, VLLM, LOCKED_DOWN]
IDS = ["llamacpp", "vllm", "locked-down"]
CUSTOM_GROUPS = ("keda.sh/", "monitoring.coreos.com/")


def _model_objects(manifests: Manifests) -> list[dict[str, Any]]:
    return [
        o
        for o in manifests.objects
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "model"
    ]


def _server(manifests: Manifests) -> dict[str, Any]:
    pod = manifests.deployment("model")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    return dict(container)


# --- off by default ------------------------------------------------------------------------


def test_off_by_default_nothing_renders_and_the_chat_model_is_untouched() -> None:
    manifests = render()
    assert _model_objects(manifests) == []
    data = manifests.one("ConfigMap", "ragtide").get("data", {})
    assert not [k for k in data if k.startswith("RAGTIDE_CHAT_MODEL")]


# --- valid Kubernetes ----------------------------------------------------------------------


@pytest.mark.parametrize("values", RENDERS, ids=IDS)
@pytest.mark.parametrize("version", KUBERNETES)
def test_the_model_objects_are_valid_kubernetes(values: dict[str, Any], version: str) -> None:
    objects = render(values).objects
    core = [o for o in objects if not str(o["apiVersion"]).startswith(CUSTOM_GROUPS)]
    for obj in core:
        kubernetes_validate.validate(obj, version, strict=True)
    kinds = {o["kind"] for o in _model_objects(render(values))}
    assert {"Deployment", "Service", "ScaledObject", "NetworkPolicy"} <= kinds


@pytest.mark.parametrize("values", RENDERS, ids=IDS)
def test_the_custom_resources_match_the_published_crds(values: dict[str, Any]) -> None:
    for obj in _model_objects(render(values)):
        if str(obj["apiVersion"]).startswith(CUSTOM_GROUPS):
            validator = crd_validator(obj["apiVersion"], obj["kind"])
            errors = [e.message for e in validator.iter_errors(obj)]
            assert errors == [], (obj["kind"], errors)


@pytest.mark.parametrize("values", RENDERS, ids=IDS)
def test_lint_is_clean(values: dict[str, Any]) -> None:
    # Lint merges values without dropping nulls, so it would see the default emptyDir
    # beside the PVC: it lints with the default volume.
    values = copy.deepcopy(values)
    values["modelServer"].pop("modelVolume", None)
    report = helm_python.lint(str(CHART), values=values, strict=True, kube_version="v1.29.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


# --- policy: probes, resources, security ---------------------------------------------------


@pytest.mark.parametrize("values", RENDERS, ids=IDS)
def test_every_probe_asks_the_servers_health_route(values: dict[str, Any]) -> None:
    server = _server(render(values))
    port_names = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert port_names == {"http": values["modelServer"].get("port", 8080)}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert server[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    # Loading a model takes minutes: startup allows it, liveness does not restart it meanwhile.
    startup = server["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


@pytest.mark.parametrize("values", RENDERS, ids=IDS)
def test_every_container_has_requests_and_a_memory_limit(values: dict[str, Any]) -> None:
    for container in containers(render(values).deployment("model")):
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), container["name"]
        assert "memory" in resources["limits"], container["name"]
        assert quantity_milli(resources["limits"]["memory"]) >= quantity_milli(
            resources["requests"]["memory"]
        )


def test_vllm_asks_for_its_gpus_and_uses_them_all() -> None:
    server = _server(render(VLLM))
    assert server["resources"]["requests"]["nvidia.com/gpu"] == 2
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 2
    args = server["args"]
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    pod = render(VLLM).deployment("model")["spec"]["template"]["spec"]
    shm = next(v for v in pod["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_llamacpp_runs_on_cpu_only() -> None:
    server = _server(render(LLAMACPP))
    for kind in ("requests", "limits"):
        assert "nvidia.com/gpu" not in server["resources"][kind]
    assert server["image"] == "ghcr.io/ggml-org/llama.cpp:server"
    assert _server(render(VLLM))["image"].startswith("vllm/vllm-openai:")


@pytest.mark.parametrize("values", RENDERS, ids=IDS)
def test_everything_runs_as_non_root_with_a_read_only_root(values: dict[str, Any]) -> None:
    deployment = render(values).deployment("model")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    for container in containers(deployment):
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0, container["name"]
        assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"]["drop"] == ["ALL"]
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts  # the one writable scratch place


def test_vllm_keeps_its_caches_off_the_read_only_root() -> None:
    env = {e["name"]: e for e in _server(render(VLLM))["env"]}
    assert env["HOME"]["value"] == "/tmp" and env["XDG_CACHE_HOME"]["value"].startswith("/tmp")
    assert env["HF_HOME"]["value"].startswith("/models/")  # downloads land on the volume
    assert env["USER"]["value"]  # torch asks for a user name the image's passwd lacks
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token"}
    mounts = {m["mountPath"]: m for m in _server(render(VLLM))["volumeMounts"]}
    assert mounts["/models"].get("readOnly") is False


def test_the_model_file_is_fetched_once_and_checked() -> None:
    deployment = render(LOCKED_DOWN).deployment("model")
    [init] = deployment["spec"]["template"]["spec"]["initContainers"]
    env = {e["name"]: e["value"] for e in init["env"]}
    assert env["MODEL_SHA256"] == "0" * 64
    assert env["MODEL_FILE"] == "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    script = init["command"][-1]
    assert "sha256sum -c" in script and 'mv "$part" "$target"' in script
    server = _server(render(LOCKED_DOWN))
    assert server["args"][server["args"].index("--model") + 1] == (
        "/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
    assert mounts["/models"]["readOnly"] is True  # only the init container writes


# --- the API points at it ------------------------------------------------------------------


@pytest.mark.parametrize("values", RENDERS, ids=IDS)
def test_the_api_chat_model_is_the_model_service(
    values: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = render(values)
    service = next(o for o in _model_objects(manifests) if o["kind"] == "Service")
    [port] = service["spec"]["ports"]
    settings = _container_settings(manifests, "api", monkeypatch)
    name, model = service["metadata"]["name"], values["modelServer"].get("modelName", "model")
    assert settings.chat_model.use == "openai"
    assert settings.chat_model.config["base_url"] == (
        f"http://{name}.{NAMESPACE}.svc:{port['port']}/v1"
    )
    assert settings.chat_model.config["model"] == model
    # The Service reaches the server's pods on the port the server listens on.
    pod_labels = manifests.deployment("model")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    server = _server(manifests)
    assert port["targetPort"] == "http"
    args = server["args"]
    assert args[args.index("--port") + 1] == str(port["port"])
    alias = "--served-model-name" if values is VLLM else "--alias"
    assert args[args.index(alias) + 1] == model


def test_a_chat_model_in_settings_or_point_api_off_is_left_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    own = {"use": "openai", "config": {"base_url": "https://llm.example.com/v1"}}
    given = {**LLAMACPP, "settings": {"chat_model": own}}
    settings = _container_settings(render(given), "api", monkeypatch)
    assert settings.chat_model.config == own["config"]
    off = {"modelServer": {"enabled": True, "pointApi": False}}
    assert _container_settings(render(off), "api", monkeypatch).chat_model.use == "extractive"


def test_a_locked_down_api_may_still_reach_the_model_server() -> None:
    manifests = render(LOCKED_DOWN)
    api = manifests.one("NetworkPolicy", "ragtide")
    model_rules = [r for r in api["spec"]["egress"] if "to" in r]
    [rule] = model_rules
    assert rule["ports"] == [{"port": 8088, "protocol": "TCP"}]
    selector = rule["to"][0]["podSelector"]["matchLabels"]
    pod_labels = manifests.deployment("model")["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    own = manifests.one("NetworkPolicy", "ragtide-model")
    sources = own["spec"]["ingress"][0]["from"]
    api_labels = manifests.deployment("api")["spec"]["template"]["metadata"]["labels"]
    assert any(s.get("podSelector", {}).get("matchLabels", {}).items() <= api_labels.items()
               for s in sources)  # fmt: skip
    assert {"namespaceSelector": {"matchLabels": {"team": "monitoring"}}} in sources


# --- autoscaling on its own saturation -----------------------------------------------------


@pytest.mark.parametrize(
    ("values", "series"),
    [
        (LLAMACPP, {"llamacpp:requests_processing", "llamacpp:requests_deferred"}),
        (VLLM, {"vllm:num_requests_running", "vllm:num_requests_waiting"}),
    ],
    ids=["llamacpp", "vllm"],
)
def test_keda_scales_on_requests_running_plus_waiting(
    values: dict[str, Any], series: set[str]
) -> None:
    manifests = render(values)
    deployment = manifests.deployment("model")
    assert "replicas" not in deployment["spec"]  # KEDA owns the count
    scaled = manifests.one("ScaledObject", "ragtide-model")
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (1, 4)
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    assert trigger["metadata"]["threshold"] == "4"
    query = trigger["metadata"]["query"]
    match = re.fullmatch(
        r'sum\(\{__name__=~"([^"]+)",namespace="([^"]+)",pod=~"([^"]+)"\}\)', query
    )
    assert match, query
    names, namespace, pods = match.groups()
    assert set(names.split("|")) == series
    assert namespace == NAMESPACE
    # PromQL regexes are anchored: the model server's pods, never the API's.
    assert re.fullmatch(pods, "ragtide-model-7d9f8c6b5-x2x9q")
    assert not re.fullmatch(pods, "ragtide-7d9f8c6b5-x2x9q")
    # llama.cpp exports those series only with --metrics.
    if values is LLAMACPP:
        assert "--metrics" in _server(manifests)["args"]


def test_the_trigger_asks_the_prometheus_it_is_given() -> None:
    scaled = render(LOCKED_DOWN).one("ScaledObject", "ragtide-model")
    address = scaled["spec"]["triggers"][0]["metadata"]["serverAddress"]
    assert address == "http://prometheus.monitoring.svc:9090"
    monitor = render(LOCKED_DOWN).one("ServiceMonitor", "ragtide-model")
    endpoint = monitor["spec"]["endpoints"][0]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")


def test_without_autoscaling_the_replica_count_is_fixed() -> None:
    manifests = render({"modelServer": {"enabled": True, "replicaCount": 3,
                                        "autoscaling": {"enabled": False}}})  # fmt: skip
    assert manifests.deployment("model")["spec"]["replicas"] == 3
    assert not [o for o in _model_objects(manifests) if o["kind"] == "ScaledObject"]


# --- bad values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_server", "message"),
    [
        ({"engine": "tgi"}, "/modelServer/engine"),
        ({"download": {"enabled": True, "url": "https://x/m.gguf"}}, "download.sha256"),
        (
            {
                "engine": "vllm",
                "download": {"enabled": True, "url": "https://x", "sha256": "a" * 64},
            },
            "vLLM downloads",
        ),
        ({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}, "minReplicas (5)"),
        ({"vllm": {"gpus": 0}}, "/modelServer/vllm/gpus"),
        ({"download": {"sha256": "not-hex"}}, "/modelServer/download/sha256"),
    ],
)
def test_bad_values_fail_with_a_reason(model_server: dict[str, Any], message: str) -> None:
    error = render_error({"modelServer": {"enabled": True, **model_server}})
    assert message in error, error
