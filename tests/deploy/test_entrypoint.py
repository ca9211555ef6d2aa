"""The pod's process, run outside a container: the image's ENTRYPOINT with the rendered
Deployment's arguments and environment, on real PostgreSQL and Redis.

What a kubelet would start is assembled from the Dockerfile (ENTRYPOINT, CMD, ENV) and the
rendered objects (args, env, envFrom ConfigMap, secretKeyRef from the rendered Secret);
volume mount paths become temporary directories and the image's /opt/venv is this venv.
Then the probes are asked on the probe ports, the ``helm test`` pod's command checks
/ready, and SIGTERM (what the kubelet sends PID 1 after preStop) drains the server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest

from ragtide.bench.server import free_port
from ragtide.worker.broker import dead_letter_queue
from tests.polling import until

from .dockerfile import parse
from .render import REPO, Manifests, containers, render

pytestmark = pytest.mark.integration

RUNTIME = parse(REPO / "Dockerfile").final
VENV_BIN = Path(sys.executable).parent
PG_URL = os.environ.get("RAGTIDE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5433/ragtide")
REDIS_URL = "redis://127.0.0.1:6379/15"


def pod_command(manifests: Manifests, component: str) -> list[str]:
    """ENTRYPOINT + CMD, with the container's command/args replacing them as Kubernetes does."""
    container = containers(manifests.deployment(component))[0]
    entrypoint = RUNTIME.last("ENTRYPOINT")
    cmd = RUNTIME.last("CMD")
    assert entrypoint is not None and cmd is not None
    if "command" in container:
        return [*container["command"], *container.get("args", [])]
    return [*(entrypoint.exec_form() or []), *container.get("args", cmd.exec_form() or [])]


def pod_environment(manifests: Manifests, component: str, root: Path) -> dict[str, str]:
    """The image's ENV, then envFrom, then env, with mount paths moved under ``root``."""
    pod = manifests.deployment(component)
    container = containers(pod)[0]
    mounts = {m["mountPath"]: root / m["name"] for m in container["volumeMounts"]}
    for path in mounts.values():
        path.mkdir(parents=True, exist_ok=True)
    _write_secret_volumes(manifests, pod, root)

    def relocate(value: str) -> str:
        # Per PATH-like entry: a path under a mount moves under ``root``; the image's venv
        # becomes ours (which may itself live under /tmp, so it is not relocated again).
        parts = []
        for part in value.split(":"):
            for mount, local in mounts.items():
                if part == mount or part.startswith(mount + "/"):
                    part = str(local) + part[len(mount) :]
                    break
            else:
                part = part.replace("/opt/venv/bin", str(VENV_BIN))
            parts.append(part)
        return ":".join(parts)

    image_env = RUNTIME.env({"PATH": os.environ["PATH"]})
    env = {key: relocate(value) for key, value in image_env.items()}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            config = manifests.one("ConfigMap", source["configMapRef"]["name"])
            env.update(config.get("data", {}))
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = relocate(entry["value"])
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            secret = manifests.one("Secret", ref["name"])
            env[entry["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
    return env


def _write_secret_volumes(manifests: Manifests, pod_owner: dict[str, Any], root: Path) -> None:
    """A Secret volume's items as files (the kubelet's projection), from the rendered Secret."""
    for volume in pod_owner["spec"]["template"]["spec"].get("volumes", []):
        if "secret" not in volume:
            continue
        secret = manifests.one("Secret", volume["secret"]["secretName"])
        for item in volume["secret"].get("items", []):
            target = root / volume["name"] / item["path"]
            target.unlink(missing_ok=True)
            target.write_bytes(base64.b64decode(secret["data"][item["key"]]))
            target.chmod(0o440)


def admin_key(manifests: Manifests) -> str:
    """The admin key the API pod reads (from the rendered, chart-managed Secret)."""
    volume = next(
        v
        for v in manifests.deployment("api")["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "admin-key"
    )
    secret = manifests.one("Secret", volume["secret"]["secretName"])
    key = volume["secret"]["items"][0]["key"]
    return base64.b64decode(secret["data"][key]).decode()


@contextmanager
def running_pod(
    manifests: Manifests, component: str, root: Path
) -> Iterator[subprocess.Popen[bytes]]:
    command = pod_command(manifests, component)
    env = pod_environment(manifests, component, root)
    assert shutil.which(command[0], path=env["PATH"]), f"{command[0]} is not installed"
    proc = subprocess.Popen(
        command, env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            # SIGKILL is not forwarded: kill the server (dumb-init's child) first, as the
            # end of the container's PID namespace would.
            for child in _children(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            proc.kill()
            proc.wait(timeout=30)
        assert proc.stderr is not None
        proc.stderr.close()


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _probe(port: int, path: str) -> httpx.Response | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)
    except httpx.TransportError:
        return None


def _probes(container: dict[str, Any]) -> dict[str, tuple[int, str]]:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    found = {}
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[kind]["httpGet"]
        found[kind] = (ports.get(get["port"], get["port"]), get["path"])
    return found


def _budget(container: dict[str, Any], probe: str) -> float:
    """How long the kubelet would wait on this probe before giving up on the pod."""
    spec = container[probe]
    return float(spec.get("periodSeconds", 10) * spec.get("failureThreshold", 3))


def _hook_command(
    manifests: Manifests, ready_url: str, timeout_s: str
) -> tuple[list[str], dict[str, str]]:
    """The ``helm test`` pod's command and env, pointed at this machine."""
    pod = manifests.one("Pod")
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["READY_URL"].endswith("/ready")
    env.update(
        READY_URL=ready_url,
        READY_TIMEOUT_SECONDS=timeout_s,
        PATH=f"{VENV_BIN}:{os.environ['PATH']}",
    )
    return container["command"], env


def _api_values(port: int, redis_url: str) -> dict[str, Any]:
    return {
        "http": {"port": port},
        "grpc": {"port": free_port()},  # the chart serves gRPC too: never a fixed host port
        "drain": {"preStopSeconds": 1, "seconds": 1, "graceSeconds": 5},
        "store": {"url": PG_URL},
        "redis": {"url": redis_url},
    }


def test_api_pod_answers_its_probes_and_drains_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    manifests = render(_api_values(port, REDIS_URL))
    container = containers(manifests.deployment("api"))[0]
    probes = _probes(container)
    assert {p for p, _ in probes.values()} == {port}
    with running_pod(manifests, "api", tmp_path) as proc:
        ready_port, ready_path = probes["readinessProbe"]

        def ready() -> bool:
            assert proc.poll() is None, "the pod's process exited"
            response = _probe(ready_port, ready_path)
            return response is not None and response.status_code == 200

        until(ready, "the readiness probe answers 200", _budget(container, "startupProbe"))
        for kind, (probe_port, path) in probes.items():
            response = _probe(probe_port, path)
            assert response is not None and response.status_code == 200, kind
        metrics = _probe(port, "/metrics")
        assert metrics is not None and "ragtide_http_requests_in_flight" in metrics.text
        assert "ragtide_ready 1.0" in metrics.text
        # auth is on: the key reaches the pod as a file from the Secret, never as env
        env = pod_environment(manifests, "api", tmp_path)
        assert "RAGTIDE_AUTH__ADMIN_KEY" not in env and env["RAGTIDE_AUTH__ENABLED"] == "true"
        assert Path(env["RAGTIDE_AUTH__ADMIN_KEY_FILE"]).read_text() == admin_key(manifests)
        # dumb-init is PID 1 of the pod; the server runs as its child.
        assert Path(f"/proc/{proc.pid}/comm").read_text().strip() == "dumb-init"

        command, env = _hook_command(manifests, f"http://127.0.0.1:{port}/ready", "30")
        hook = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert hook.returncode == 0, hook.stderr
        assert hook.stdout.startswith("ready:")

        proc.send_signal(signal.SIGTERM)  # what the kubelet sends PID 1 after preStop

        def draining() -> bool:
            response = _probe(ready_port, ready_path)
            return response is not None and response.status_code == 503

        until(draining, "/ready turns 503 once SIGTERM reached the server", 10)
        response = _probe(ready_port, ready_path)
        assert response is not None and response.json()["reason"] == "draining"
        alive = _probe(*probes["livenessProbe"])
        assert alive is not None and alive.status_code == 200  # still serving while draining
        pod = manifests.deployment("api")["spec"]["template"]["spec"]
        prestop = float(container["lifecycle"]["preStop"]["exec"]["command"][1])
        # Correctness bound, not a measurement: the kubelet SIGKILLs the pod once the
        # termination grace period (preStop included) is over, so a clean exit (0, streams
        # finished, nothing cut) must come within it; how long the drain takes is not timed.
        assert proc.wait(timeout=pod["terminationGracePeriodSeconds"] - prestop) == 0


def test_credentials_from_the_secret_reach_the_app(tmp_path: Path) -> None:
    """With the Redis URL in the chart's Secret pointing nowhere, /ready says so."""
    port, dead = free_port(), free_port()
    manifests = render(_api_values(port, f"redis://127.0.0.1:{dead}/0"))
    container = containers(manifests.deployment("api"))[0]
    with running_pod(manifests, "api", tmp_path) as proc:
        reasons: list[str] = []

        def answered() -> bool:
            assert proc.poll() is None, "the pod's process exited"
            response = _probe(port, "/ready")
            if response is not None and response.status_code == 503:
                reasons.append(response.json()["reason"])
            return bool(reasons) and "starting" not in reasons[-1]

        until(answered, "/ready names the missing store", _budget(container, "startupProbe"))
        assert "redis" in reasons[-1].lower()
        alive = _probe(port, "/healthz")
        assert alive is not None and alive.status_code == 200  # liveness never waits on a store

        command, env = _hook_command(manifests, f"http://127.0.0.1:{port}/ready", "0")
        hook = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert hook.returncode == 1
        assert "not ready" in hook.stderr and "503" in hook.stderr


def _delete_queues(url: str, queue: str) -> None:
    async def delete() -> None:
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            for name in (queue, dead_letter_queue(queue)):
                await channel.queue_delete(name)

    asyncio.run(delete())


def test_worker_pod_answers_its_probes_and_drains_on_sigterm(tmp_path: Path) -> None:
    rabbitmq = "amqp://guest:guest@127.0.0.1:5672/"
    queue = f"test.deploy.{uuid.uuid4().hex[:12]}"
    port = free_port()
    values = {
        **_api_values(free_port(), REDIS_URL),
        "rabbitmq": {"url": rabbitmq, "queue": queue},
        "worker": {"enabled": True, "port": port, "graceSeconds": 5},
    }
    manifests = render(values)
    container = containers(manifests.deployment("worker"))[0]
    probes = _probes(container)
    assert {p for p, _ in probes.values()} == {port}
    try:
        with running_pod(manifests, "worker", tmp_path) as proc:

            def ready() -> bool:
                assert proc.poll() is None, "the worker exited"
                response = _probe(*probes["readinessProbe"])
                return response is not None and response.status_code == 200

            until(ready, "the worker's /ready answers 200", _budget(container, "startupProbe"))
            for kind, (probe_port, path) in probes.items():
                response = _probe(probe_port, path)
                assert response is not None and response.status_code == 200, kind
            metrics = _probe(port, "/metrics")
            assert metrics is not None
            assert f'ragtide_tasks_queue_depth{{queue="{queue}"}}' in metrics.text
            assert Path(f"/proc/{proc.pid}/comm").read_text().strip() == "dumb-init"
            proc.send_signal(signal.SIGTERM)
            grace = manifests.deployment("worker")["spec"]["template"]["spec"]
            # Correctness bound: exit 0 before the kubelet's SIGKILL at the grace period.
            assert proc.wait(timeout=grace["terminationGracePeriodSeconds"]) == 0
    finally:
        _delete_queues(rabbitmq, queue)
