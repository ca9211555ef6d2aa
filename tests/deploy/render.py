"""Render the Helm chart with Helm's own engine and look at the result.

``render(values)`` runs Helm v4's Go SDK (``helm_python``) the way ``helm template`` does,
offline, and parses the manifests; results are cached per values file (and per distinct
override), so each is rendered once per session. ``crd_validator(kind)`` reads the
published CRD schemas from ``../shared/schemas/crds`` (relative to the repository root).
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import yaml

__all__ = [
    "CHART",
    "CRD_DIR",
    "EVERYTHING",
    "KEDA_ENGINE",
    "RELEASE",
    "REPO",
    "VALUES_FILES",
    "Manifests",
    "containers",
    "crd_validator",
    "merged",
    "quantity_milli",
    "render",
    "render_error",
    "values_file",
]

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "ragtide"


def _crd_dir() -> Path:
    """``$RAGTIDE_SHARED_DIR/schemas/crds``, else ``shared/schemas/crds`` beside the checkout
    or any folder above it, else this workplace's ``/work/shared``."""
    roots = [os.environ.get("RAGTIDE_SHARED_DIR")]
    roots += [str(p / "shared") for p in REPO.parents] + ["/work/shared"]
    for root in filter(None, roots):
        if (Path(root) / "schemas" / "crds").is_dir():
            return Path(root) / "schemas" / "crds"
    return REPO.parent / "shared" / "schemas" / "crds"  # the tests then say what is missing


CRD_DIR = _crd_dir()
VALUES_FILES = ("values.yaml", "values-dev.yaml", "values-prod.yaml")
RELEASE = "ragtide"
NAMESPACE = "ragtide"

# Every optional piece switched on, with credentials in the chart's own Secret.
EVERYTHING: dict[str, Any] = {
    "store": {"url": "postgresql://ragtide:pw@pg:5432/ragtide"},
    "redis": {"url": "redis://:pw@redis:6379/0"},
    "rabbitmq": {"url": "amqp://ragtide:pw@rabbitmq:5672/"},
    "tenants": {"acme": {"name": "Acme Corp", "quotas": {"documents": 50000}}},
    "ingress": {
        "enabled": True,
        "className": "nginx",
        "annotations": {"nginx.ingress.kubernetes.io/proxy-buffering": "off"},
        "tls": [{"secretName": "ragtide-tls", "hosts": ["ragtide.example.com"]}],
    },
    "networkPolicy": {
        "ingressFrom": [{"namespaceSelector": {"matchLabels": {"team": "edge"}}}],
        "allowExternalEgress": False,
        "extraEgress": [{"ports": [{"port": 5432, "protocol": "TCP"}]}],
    },
    "metrics": {
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "dashboard": {"enabled": True},
    },
    "worker": {"enabled": True},
    # gRPC is on by default; here also its readiness probe, headless Service and Ingress.
    "grpc": {
        "probes": True,
        "headless": True,
        "ingress": {
            "enabled": True,
            "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
            "tls": [{"secretName": "ragtide-grpc-tls", "hosts": ["grpc.ragtide.example.com"]}],
        },
    },
}

# The API scaled by KEDA (engine: keda) with a scheduled minimum, beside the KEDA worker.
KEDA_ENGINE: dict[str, Any] = {
    **EVERYTHING,
    "autoscaling": {
        "engine": "keda",
        "keda": {
            "schedules": [
                {
                    "timezone": "Europe/Berlin",
                    "start": "30 8 * * 1-5",
                    "end": "0 18 * * 1-5",
                    "desiredReplicas": 12,
                }
            ]
        },
    },
}


@dataclass(frozen=True)
class Manifests:
    """Every object a render produced, plus the NOTES.txt text."""

    objects: tuple[dict[str, Any], ...]
    notes: str
    sources: Mapping[str, str] = field(default_factory=dict)  # template path -> raw output

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [o for o in self.of(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
        return found[0]

    def kinds(self) -> set[str]:
        return {o["kind"] for o in self.objects}

    def deployment(self, component: str) -> dict[str, Any]:
        found = [
            d
            for d in self.of("Deployment")
            if d["metadata"]["labels"].get("app.kubernetes.io/component") == component
        ]
        assert len(found) == 1, f"expected one {component} Deployment, got {len(found)}"
        return found[0]


@functools.cache
def _chart() -> helm_python.Chart:
    return helm_python.Chart.load(str(CHART))


def values_file(name: str) -> dict[str, Any]:
    """A values file next to the chart, parsed the way ``helm -f`` parses it."""
    loaded = helm_python.values_from_yaml((CHART / name).read_text())
    return loaded


def merged(values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The chart defaults with ``values`` coalesced on top (what an install would use)."""
    return _chart().merge_values(dict(values or {}))


def _key(values: Mapping[str, Any] | None) -> str:
    return json.dumps(values or {}, sort_keys=True)


@functools.cache
def _render_cached(key: str, release: str, namespace: str) -> Manifests:
    raw = _chart().render(json.loads(key), name=release, namespace=namespace, is_install=True)
    objects: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(raw.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return Manifests(tuple(objects), notes, raw)


def render(
    values: Mapping[str, Any] | str | None = None,
    *,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> Manifests:
    """Render with a values mapping, or the name of a values file beside the chart."""
    if isinstance(values, str):
        values = values_file(values)
    return _render_cached(_key(values), release, namespace)


def render_error(values: Mapping[str, Any]) -> str:
    """The message Helm fails with for these values (an AssertionError if it renders)."""
    try:
        _chart().render(dict(values), name=RELEASE, namespace=NAMESPACE, is_install=True)
    except helm_python.HelmError as exc:
        return str(exc)
    raise AssertionError(f"values rendered, but should have failed: {values}")


def containers(pod_owner: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The containers (init containers too) of a Deployment or a Pod."""
    spec = pod_owner["spec"]
    pod = spec["template"]["spec"] if "template" in spec else spec
    return [*pod.get("initContainers", []), *pod["containers"]]


def iter_env(container: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for entry in container.get("env", []):
        yield entry["name"], entry


@functools.cache
def _crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema, from every published CRD file."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = version["schema"]["openAPIV3Schema"]
                schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def crd_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    """A validator for one custom resource, from its project's published CRD.

    CRD schemas are OpenAPI v3 structural schemas; ``x-kubernetes-*`` keys are
    annotations jsonschema ignores. Unknown fields are an error, as the API server's
    pruning with ``--validate=strict`` makes them: every object schema without
    ``additionalProperties`` or ``x-kubernetes-preserve-unknown-fields`` is closed.
    """
    schema = _crd_schemas().get((api_version, kind))
    assert schema is not None, f"no published CRD for {api_version} {kind} in {CRD_DIR}"
    closed = _closed(schema)
    return jsonschema.Draft7Validator(closed)


def _closed(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _closed(v) for k, v in schema.items()}
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|Ki|Mi|Gi)?$")
_FACTORS = {None: 1000, "m": 1, "k": 10**6, "M": 10**9, "G": 10**12}
_FACTORS.update({"Ki": 1024 * 1000, "Mi": 1024**2 * 1000, "Gi": 1024**3 * 1000})


def quantity_milli(quantity: str | int | float) -> int:
    """A Kubernetes quantity in milli-units (``"100"`` -> 100000, ``"250m"`` -> 250)."""
    match = _QUANTITY.match(str(quantity))
    assert match, f"not a quantity this helper reads: {quantity!r}"
    return round(float(match.group(1)) * _FACTORS[match.group(2)])
