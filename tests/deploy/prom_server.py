"""A real Prometheus server for a test: own config, storage, port; scrapes like the operator.

Each target is a Ragtide replica on loopback. Kubernetes service discovery is not
available here, so every target carries the ``__meta_kubernetes_*`` labels that
discovery would attach, and the job relabels them exactly as the relabelling that
prometheus-operator generates for a ServiceMonitor does (``namespace``, ``service``,
``job`` = the service, ``pod``, ``container``, ``endpoint``): the series the adapter
sees have the labels they would have in the cluster.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from ragtide.bench.server import free_port
from tests.polling import until

__all__ = ["Prometheus", "Target"]


@dataclass(frozen=True, slots=True)
class Target:
    """One replica as Kubernetes would describe it."""

    port: int
    namespace: str
    pod: str
    service: str = "ragtide"
    container: str = "ragtide"


def _config(targets: list[Target], interval: str) -> dict[str, Any]:
    relabel = [
        {"source_labels": [f"__meta_kubernetes_{meta}"], "target_label": label}
        for meta, label in (
            ("namespace", "namespace"),
            ("service_name", "service"),
            ("service_name", "job"),
            ("pod_name", "pod"),
            ("pod_container_name", "container"),
            ("endpoint_port_name", "endpoint"),
        )
    ]
    groups = [
        {
            "targets": [f"127.0.0.1:{t.port}"],
            "labels": {
                "__meta_kubernetes_namespace": t.namespace,
                "__meta_kubernetes_service_name": t.service,
                "__meta_kubernetes_pod_name": t.pod,
                "__meta_kubernetes_pod_container_name": t.container,
                "__meta_kubernetes_endpoint_port_name": "http",
            },
        }
        for t in targets
    ]
    return {
        "global": {"scrape_interval": interval, "scrape_timeout": interval},
        "scrape_configs": [
            {
                "job_name": "serviceMonitor/ragtide/ragtide/0",
                "metrics_path": "/metrics",
                "static_configs": groups,
                "relabel_configs": relabel,
            }
        ],
    }


class Prometheus:
    """``prometheus`` as a child process; ``query`` is its HTTP API's instant query."""

    def __init__(self, root: Path, targets: list[Target], scrape_interval: str = "1s") -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed: run scripts/prometheus-ensure")
        self.binary = binary
        self.root = root
        self.targets = targets
        self.scrape_interval = scrape_interval
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "prometheus.yml"
        config.write_text(yaml.safe_dump(_config(self.targets, self.scrape_interval)))
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.root / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        until(self._ready, f"prometheus ready on {self.url}\n{self.log_tail()}", timeout)

    def _ready(self) -> bool | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"prometheus exited with {self.proc.returncode}\n{self.log_tail()}"
            )
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200 or None
        except httpx.HTTPError:
            return None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _api(self, path: str, params: Mapping[str, Any]) -> Any:
        r = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = r.json()
        if r.status_code != 200 or body.get("status") != "success":
            raise AssertionError(f"{path} {dict(params)} failed: HTTP {r.status_code} {body}")
        return body["data"]

    def query(self, promql: str, at: float | None = None) -> dict[str, float]:
        """An instant query (``/api/v1/query``); the vector's values by their ``pod`` label."""
        params: dict[str, Any] = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._api("query", params)
        if data["resultType"] != "vector":
            raise AssertionError(f"{promql} gave a {data['resultType']}, not a vector")
        values: dict[str, float] = {}
        for sample in data["result"]:
            pod = sample["metric"].get("pod")
            assert pod is not None and pod not in values, f"{promql}: {data['result']}"
            values[pod] = float(sample["value"][1])
        return values

    def series(self, match: str) -> list[dict[str, str]]:
        """``/api/v1/series`` for one selector, the call the adapter makes to discover."""
        result: list[dict[str, str]] = self._api("series", {"match[]": match})
        return result

    def scraped_after(self, moment: float) -> bool | None:
        """True once every target has a successful scrape that started after ``moment``."""
        # timestamp() of a plain selector is the sample's (scrape start) time; of any other
        # expression it would be the evaluation time.
        stamps = self.query("timestamp(up) and up == 1")
        pods = {t.pod for t in self.targets}
        if set(stamps) == pods and min(stamps.values()) > moment:
            return True
        return None
