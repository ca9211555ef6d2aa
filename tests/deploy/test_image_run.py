"""The real image: built from the Dockerfile with podman and run as the Helm chart runs it.

No Docker engine runs here and python:3.11-slim-bookworm cannot be pulled, so
``scripts/image-ensure`` installs Debian's podman and makes a stand-in base with mmdebstrap
(``localhost/ragtide-base:bookworm``: Debian bookworm's Python 3.11, venv, apt, passwd);
the Dockerfile is built on it unchanged (``--build-arg PYTHON_IMAGE=...``; podman 4.3's
buildah 1.28 is one of the builders that reject heredocs). Layers are reused between runs,
so only what changed is rebuilt: a source change rebuilds the application layer alone.

The container then gets what the rendered API Deployment gives the pod: its args, env
(values, the ConfigMap, secretKeyRefs), a read-only root filesystem with only the /data and
/tmp volumes writable, the admin key Secret mounted read-only at its mountPath, uid/gid
10001, no capabilities, no privilege escalation; its port is published on 127.0.0.1 only.
It must answer its probes, take an upload and answer a chat with the admin key (auth is on
in the chart), serve /metrics, and exit 0 on SIGTERM within the grace period.

``RAGTIDE_RECORD_IMAGE=1`` writes the image's size and this run's build time to
bench/results/image.json, under this build's cache state: ``cold`` (no layer reused;
``RAGTIDE_IMAGE_NO_CACHE=1`` forces it), ``deps`` (pyproject.toml changed), ``warm`` (the
dependency layer reused, the application rebuilt: a source change) or ``cached``. Timings
are reported, never asserted. The tests skip, saying why, only where podman cannot run a container.
"""

from __future__ import annotations

import base64
import json
import os
import platform
import re
import resource
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ragtide.bench.server import free_port
from tests.polling import until

from .dockerfile import parse
from .render import REPO, Manifests, containers, render

pytestmark = pytest.mark.integration

BASE = os.environ.get("RAGTIDE_BASE_IMAGE", "localhost/ragtide-base:bookworm")
IMAGE = "localhost/ragtide:test"
IMAGE_BUILD = "localhost/ragtide:test-build"  # the build stage, tagged to keep its cache
LABEL = "org.ragtide.test-image=1"
RESULTS = REPO / "bench" / "results" / "image.json"
RUNTIME = parse(REPO / "Dockerfile").final
# No systemd here (cgroupfs) and no journald (events to a file); see scripts/image-ensure.
PODMAN = ["podman", "--cgroup-manager=cgroupfs", "--events-backend=file"]
BUILD_TIMEOUT_S = 1200  # a cold build downloads build-essential and every wheel


def ulimits() -> list[str]:
    """Explicit limits at or below this process's: on this machine a container may not
    raise them, and podman would otherwise ask for its own defaults (and fail with EPERM)."""
    flags = []
    for name, limit, cap in (
        ("nofile", resource.RLIMIT_NOFILE, 65536),
        ("nproc", resource.RLIMIT_NPROC, 32768),
    ):
        hard = resource.getrlimit(limit)[1]
        value = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
        flags.append(f"--ulimit={name}={value}:{value}")
    return flags


def podman(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args[:2])} exited {result.returncode}:\n{result.stderr[-4000:]}"
        )
    return result


@dataclass(frozen=True)
class Built:
    image_id: str
    size_bytes: int
    build_seconds: float
    cache: str  # cold, deps, warm or cached: see _cache_state
    steps: int
    cached_steps: int


@pytest.fixture(scope="module")
def base() -> str:
    """scripts/image-ensure: podman installed, the stand-in base built (cached)."""
    ensure = subprocess.run(
        [str(REPO / "scripts" / "image-ensure")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = ensure.stdout + ensure.stderr
    cannot = re.search(r"podman cannot run here: .*", output)
    if cannot:
        pytest.skip(f"no container runtime on this machine: {cannot[0]}")
    assert ensure.returncode == 0, f"scripts/image-ensure failed:\n{output[-4000:]}"
    return BASE


@pytest.fixture(scope="module")
def built(base: str) -> Built:
    """The Dockerfile built with podman on the stand-in base (layers cached between runs).

    The build stage is built and tagged first (IMAGE_BUILD), then the image: with both
    tagged, every untagged image of this test's label is a replaced one, pruned afterwards,
    so repeated runs keep one cached chain instead of piling up images."""
    no_cache = os.environ.get("RAGTIDE_IMAGE_NO_CACHE") == "1"
    common = [
        "build",
        "--layers",
        *ulimits(),
        f"--label={LABEL}",
        f"--build-arg=PYTHON_IMAGE={base}",
        f"--file={REPO / 'Dockerfile'}",
    ]
    started = time.monotonic()
    logs = []
    for target, tag, flags in (
        ("build", IMAGE_BUILD, ["--no-cache"] if no_cache else []),
        (None, IMAGE, []),
    ):
        target_flag = [f"--target={target}"] if target else []
        result = podman(
            *common,
            *flags,
            *target_flag,
            f"--tag={tag}",
            str(REPO),
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
        log = result.stdout + result.stderr
        assert result.returncode == 0, f"podman build {tag} failed:\n{log[-6000:]}"
        logs.append(log)
    seconds = time.monotonic() - started
    # The model check runs in the build: a build that passes has loaded both models.
    ran = _steps(*logs)
    podman("image", "prune", "--force", f"--filter=label={LABEL}", check=False)
    image_id = podman("image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip()
    size = int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout.strip())
    state = "cold" if no_cache else _cache_state(ran)  # (the runtime stage's useradd may be cached)
    return Built(image_id, size, seconds, state, len(ran), sum(ran.values()))


_STEP = re.compile(r"^(?:\[\d+/\d+\] )?STEP (\d+/\d+): (.*)$")


def _steps(*logs: str) -> dict[str, bool]:
    """Each build step (``[stage] STEP n/m: INSTRUCTION ...``) and whether its layer came
    from the cache (buildah prints ``--> Using cache``) in every build that ran it; FROM
    steps are not counted."""
    found: dict[str, bool] = {}
    for log in logs:
        seen: dict[str, bool] = {}
        current = None
        for line in log.splitlines():
            match = _STEP.match(line)
            if match:
                current = None if match[2].startswith("FROM ") else f"{match[1]}: {match[2]}"
                if current:
                    seen[current] = False
            elif current and line.startswith("--> Using cache"):
                seen[current] = True
        for step, cached in seen.items():
            found[step] = found.get(step, True) and cached
    assert found, f"no build steps in podman's output:\n{logs[-1][-2000:]}"
    return found


def _cache_state(steps: dict[str, bool]) -> str:
    """``cold``: nothing reused; ``deps``: the dependency layer rebuilt (pyproject.toml
    changed); ``warm``: dependencies reused, the application rebuilt (a source change);
    ``cached``: nothing rebuilt."""
    if not any(steps.values()):
        return "cold"
    if all(steps.values()):
        return "cached"
    (deps,) = [cached for step, cached in steps.items() if "pip install -r" in step]
    return "warm" if deps else "deps"


def test_the_image_builds_and_reports_its_size(built: Built) -> None:
    config = json.loads(podman("image", "inspect", IMAGE).stdout)[0]["Config"]
    entrypoint = RUNTIME.last("ENTRYPOINT")
    cmd = RUNTIME.last("CMD")
    assert entrypoint is not None and cmd is not None
    assert config["Entrypoint"] == entrypoint.exec_form()
    assert config["Cmd"] == cmd.exec_form()
    assert config["User"] == "10001:10001"
    assert set(config["Volumes"]) == {"/data", "/tmp"}
    assert built.size_bytes > 0
    print(
        f"\nimage {IMAGE}: {built.size_bytes / 1e6:.0f} MB, built in {built.build_seconds:.0f} s"
        f" ({built.cache}: {built.cached_steps} of {built.steps} steps cached) on {BASE}"
    )
    if os.environ.get("RAGTIDE_RECORD_IMAGE") == "1":
        _record(built)


def _record(built: Built) -> None:
    """bench/results/image.json: the size, and the build time per cache state (each run
    replaces its own state's entry and keeps the others)."""
    previous: dict[str, Any] = {}
    if RESULTS.exists():
        previous = json.loads(RESULTS.read_text())
    builds = dict(previous.get("builds", {}))
    builds[built.cache] = {
        "seconds": round(built.build_seconds, 1),
        "steps": built.steps,
        "cached_steps": built.cached_steps,
        "recorded": time.strftime("%Y-%m-%d"),
    }
    podman_version = podman("--version").stdout.split()[-1]
    result = {
        "image": IMAGE,
        "base": BASE,
        "base_note": "python:3.11-slim-bookworm stand-in made by scripts/image-ensure "
        "(mmdebstrap, Debian bookworm python3.11)",
        "size_bytes": built.size_bytes,
        "size_mb": round(built.size_bytes / 1e6, 1),
        "builds": builds,
        "builder": f"podman {podman_version} (buildah, runc, overlay)",
        "flags": [*PODMAN[1:], *ulimits()],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}",
        "note": "sizes are podman's uncompressed image size; timings are reported, never asserted",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


# --------------------------------------------------------------------------- run it


def chart_env(manifests: Manifests, component: str) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom ConfigMaps, then env
    (plain values and secretKeyRefs from the rendered Secret). The image's ENV is the image's."""
    container = containers(manifests.deployment(component))[0]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(manifests.one("ConfigMap", source["configMapRef"]["name"]).get("data", {}))
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            secret = manifests.one("Secret", ref["name"])
            env[entry["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
    return env


def chart_mounts(
    manifests: Manifests, component: str, scratch: Path, volume: str
) -> tuple[list[str], dict[str, Path]]:
    """podman flags for the pod's volumes: emptyDirs become a tmpfs (/tmp, with its
    sizeLimit) or the named volume (/data); Secret volumes become read-only bind mounts of
    their items, written as the kubelet projects them (mode, group fsGroup)."""
    deployment = manifests.deployment(component)
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    fs_group = pod["securityContext"].get("fsGroup", 0)
    flags: list[str] = []
    files: dict[str, Path] = {}
    for mount in containers(deployment)[0]["volumeMounts"]:
        spec = volumes[mount["name"]]
        path = mount["mountPath"]
        if "emptyDir" in spec and path == "/tmp":
            size = spec["emptyDir"].get("sizeLimit", "64Mi").replace("Mi", "m").replace("Gi", "g")
            flags.append(f"--tmpfs=/tmp:rw,nosuid,nodev,size={size},mode=1777")
        elif "emptyDir" in spec:
            flags.append(f"--volume={volume}:{path}:rw")
        elif "secret" in spec:
            secret = manifests.one("Secret", spec["secret"]["secretName"])
            local = scratch / mount["name"]
            local.mkdir(parents=True, exist_ok=True)
            for item in spec["secret"]["items"]:
                target = local / item["path"]
                target.write_bytes(base64.b64decode(secret["data"][item["key"]]))
                os.chown(target, 0, fs_group)
                target.chmod(spec["secret"].get("defaultMode", 0o644))
                files[f"{path}/{item['path']}"] = target
            os.chmod(local, 0o755)
            flags.append(f"--volume={local}:{path}:ro")
        else:
            raise AssertionError(f"volume {mount['name']}: not modelled here")
    return flags, files


@dataclass
class Pod:
    name: str
    port: int
    http_port: int
    admin_key: str
    grace_seconds: int
    prestop_seconds: float

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return (result.stdout + result.stderr)[-4000:]

    def get(self, path: str, **kwargs: Any) -> httpx.Response | None:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=10, **kwargs)
        except httpx.TransportError:
            return None

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(
            podman("inspect", "--format", "{{json .State}}", self.name).stdout
        )
        return state


@pytest.fixture
def pod(built: Built, tmp_path: Path) -> Iterator[Pod]:
    manifests = render()
    deployment = manifests.deployment("api")
    spec = deployment["spec"]["template"]["spec"]
    container = containers(deployment)[0]
    security = container["securityContext"]
    name = f"ragtide-test-{uuid.uuid4().hex[:8]}"
    volume = f"{name}-data"
    port = free_port()
    mounts, files = chart_mounts(manifests, "api", tmp_path, volume)
    env = chart_env(manifests, "api")
    key_file = files[env["RAGTIDE_AUTH__ADMIN_KEY_FILE"]]
    (http_port,) = [p["containerPort"] for p in container["ports"] if p["name"] == "http"]
    env_file = tmp_path / "pod.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    flags = [
        f"--name={name}",
        "--detach",
        "--read-only",
        "--read-only-tmpfs=false",  # only the pod's volumes are writable, as in the chart
        f"--user={security['runAsUser']}:{security['runAsGroup']}",
        f"--group-add={spec['securityContext']['fsGroup']}",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        f"--env-file={env_file}",
        *mounts,
        f"--publish=127.0.0.1:{port}:{http_port}",
        *ulimits(),
        f"--stop-timeout={spec['terminationGracePeriodSeconds']}",
    ]
    assert security["readOnlyRootFilesystem"] is True and security["capabilities"]["drop"] == [
        "ALL"
    ]
    podman("volume", "create", volume)
    try:
        podman("run", *flags, IMAGE, *container["args"])
        yield Pod(
            name,
            port,
            http_port,
            key_file.read_text(),
            spec["terminationGracePeriodSeconds"],
            float(container["lifecycle"]["preStop"]["exec"]["command"][1]),
        )
    finally:
        podman("rm", "--force", "--time=0", name, check=False)
        podman("volume", "rm", "--force", volume, check=False)


def test_the_image_runs_as_the_chart_runs_it(pod: Pod) -> None:
    manifests = render()
    container = containers(manifests.deployment("api"))[0]
    startup = container["startupProbe"]
    budget = float(startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3))

    def ready() -> bool:
        state = pod.state()
        assert state["Running"], f"the container exited {state['ExitCode']}:\n{pod.logs()}"
        response = pod.get("/ready")
        return response is not None and response.status_code == 200

    until(ready, "the image's /ready answers 200", budget)
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        response = pod.get(container[kind]["httpGet"]["path"])
        assert response is not None and response.status_code == 200, (kind, pod.logs())

    # Published on loopback only; inside, dumb-init is PID 1 and everything runs as
    # 10001:10001; the root filesystem is read-only, the /data and /tmp volumes writable.
    published = podman("port", pod.name).stdout.split()
    assert published == [f"{pod.http_port}/tcp", "->", f"127.0.0.1:{pod.port}"], published

    def inside(*command: str) -> subprocess.CompletedProcess[str]:
        return podman("exec", pod.name, *command, check=False)

    assert inside("cat", "/proc/1/comm").stdout.strip() == "dumb-init"
    assert inside("id", "-u").stdout.strip() == inside("id", "-g").stdout.strip() == "10001"
    owners = inside("sh", "-c", "stat -c %u:%g /proc/[0-9]*/status | sort -u").stdout.split()
    assert owners == ["10001:10001"], owners  # dumb-init, the server, its parse workers
    for path in ("/opt/venv/x", "/etc/x", "/x"):
        denied = inside("touch", path)
        assert denied.returncode != 0 and "Read-only file system" in denied.stderr, path
    assert inside("touch", "/data/x", "/tmp/x").returncode == 0

    # Auth is on: data routes want the admin key (it acts as tenant `default`).
    headers = {"Authorization": f"Bearer {pod.admin_key}"}
    url = f"http://127.0.0.1:{pod.port}/v1/namespaces/handbook"
    text = (
        "Ragtide drains on SIGTERM: the readiness probe turns 503, in-flight chat turns "
        "finish, then the process exits 0 before the grace period ends.\n"
    )
    with httpx.Client(timeout=60) as client:
        refused = client.post(f"{url}/documents", files={"file": ("drain.md", text.encode())})
        assert refused.status_code == 401, refused.text
        upload = client.post(
            f"{url}/documents", files={"file": ("drain.md", text.encode())}, headers=headers
        )
        assert upload.status_code == 201, (upload.text, pod.logs())
        assert [d["status"] for d in upload.json()["documents"]] == ["created"]
        chat = client.post(
            f"{url}/chat", json={"message": "What happens on SIGTERM?"}, headers=headers
        )
        assert chat.status_code == 200, (chat.text, pod.logs())
        answer = chat.json()
        assert answer["answer"].strip()
        assert any(c["document_id"] == "drain.md" for c in answer["citations"]), answer
    metrics = pod.get("/metrics")
    assert metrics is not None and metrics.status_code == 200
    assert "ragtide_http_requests_in_flight" in metrics.text
    assert "ragtide_ready 1.0" in metrics.text

    # What the kubelet does after preStop: SIGTERM to PID 1 (dumb-init forwards it).
    podman("kill", "--signal=TERM", pod.name)

    def draining() -> bool:
        response = pod.get("/ready")
        return response is None or response.status_code == 503

    until(draining, "/ready turns 503 once SIGTERM reached the server", 10)
    waited = podman("wait", pod.name, timeout=pod.grace_seconds - pod.prestop_seconds + 10)
    assert waited.stdout.strip() == "0", pod.logs()
    state = pod.state()
    assert not state["OOMKilled"] and state["ExitCode"] == 0, pod.logs()
