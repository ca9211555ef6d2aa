from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ragtide.api.app import create_app
from ragtide.settings import Settings


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    base: dict[str, object] = {
        "data_dir": tmp_path,
        "logging": {"format": "console", "access_log": False},
        "embedder": {"use": "hashing"},
    }
    base.update(overrides)
    return Settings(**base)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, configure_logs=False)) as c:
        yield c


def upload(client: TestClient, ns: str, name: str, data: bytes, **form: str) -> object:
    return client.post(f"/v1/namespaces/{ns}/documents", files={"file": (name, data)}, data=form)


KUBE = b"""# Pods

A Pod is the smallest deployable unit of computing that you can create and manage in
Kubernetes. A Pod runs one or more containers that share storage and network resources.

## Resource limits

Each container in a Pod can declare resource requests and limits for CPU and memory. The
kubelet enforces the memory limit and throttles CPU above the limit.
"""

COOKING = b"""# Bread

Bread is baked from flour, water, salt and yeast. The dough rises while the yeast ferments
the sugars and releases carbon dioxide.
"""
