from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
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


# --- tenants and credentials (tests/api/test_tenants.py, test_isolation.py, ...) -----

ADMIN_KEY = "adm-" + "k" * 28  # the bootstrap admin key (at least 24 characters)


def auth_settings(tmp_path: Path, **overrides: object) -> Settings:
    """``make_settings`` with authentication on and the bootstrap admin key set."""
    auth: dict[str, object] = {"enabled": True, "admin_key": ADMIN_KEY}
    extra = overrides.pop("auth", None)
    if isinstance(extra, dict):
        auth.update(extra)
    return make_settings(tmp_path, auth=auth, **overrides)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ADMIN = bearer(ADMIN_KEY)


def put_tenant(client: TestClient, tenant: str, **config: object) -> dict[str, object]:
    r = client.put(f"/v1/tenants/{tenant}", json=config, headers=ADMIN)
    assert r.status_code in (200, 201), r.text
    body: dict[str, object] = r.json()
    return body


def new_key(
    client: TestClient,
    tenant: str,
    scopes: list[str],
    *,
    as_: dict[str, str] = ADMIN,
    **fields: object,
) -> tuple[str, dict[str, str]]:
    """Create a key of ``tenant``: (its id, the ``Authorization`` headers that use it)."""
    r = client.post(f"/v1/tenants/{tenant}/keys", json={"scopes": scopes, **fields}, headers=as_)
    assert r.status_code == 201, r.text
    body = r.json()
    return body["id"], bearer(body["key"])


def upload_as(
    client: TestClient, headers: dict[str, str], ns: str, name: str, data: bytes, **form: str
) -> httpx.Response:
    return client.post(
        f"/v1/namespaces/{ns}/documents",
        files={"file": (name, data)},
        data=form,
        headers=headers,
    )


def metric_value(client: TestClient, name: str, **labels: str) -> float:
    """The value of one Prometheus sample on ``/metrics`` (0 when it is not there)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        sample, value = line.rsplit(" ", 1)
        metric, _, rest = sample.partition("{")
        got = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if metric == name and got == want:
            return float(value)
    return 0.0


class JWTIssuer:
    """An RSA identity provider for tests: a JWKS file on disk and RS256 tokens."""

    ISSUER = "https://idp.test"
    AUDIENCE = "ragtide"

    def __init__(self, directory: Path) -> None:
        import json

        import jwt
        from cryptography.hazmat.primitives.asymmetric import rsa

        self._private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = jwt.algorithms.RSAAlgorithm.to_jwk(self._private.public_key(), as_dict=True)
        public.update({"kid": "test-key", "alg": "RS256", "use": "sig"})
        self.jwks_file = directory / "jwks.json"
        self.jwks_file.write_text(json.dumps({"keys": [public]}), encoding="utf-8")

    def settings(self) -> dict[str, object]:
        """The ``auth.jwt`` settings that trust this issuer."""
        return {"jwks_file": self.jwks_file, "issuer": self.ISSUER, "audience": self.AUDIENCE}

    def token(self, tenant: str, sub: str = "user-1", **claims: object) -> str:
        import time

        import jwt

        now = int(time.time())
        payload: dict[str, object] = {
            "iss": self.ISSUER,
            "aud": self.AUDIENCE,
            "sub": sub,
            "tenant": tenant,
            "iat": now,
            "exp": now + 3600,
            **claims,
        }
        return jwt.encode(payload, self._private, algorithm="RS256", headers={"kid": "test-key"})

    def headers(self, tenant: str, sub: str = "user-1", **claims: object) -> dict[str, str]:
        return bearer(self.token(tenant, sub, **claims))
