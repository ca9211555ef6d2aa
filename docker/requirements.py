"""Print the image's third-party requirements, one per line, from pyproject.toml alone.

Run by the Dockerfile's build stage before the application's source is copied in, so the
dependency layer depends on pyproject.toml (and this file) only:

    python /src/docker/requirements.py /src/pyproject.toml > /tmp/requirements.txt
    python /src/docker/requirements.py --build-tools /src/pyproject.toml > /tmp/build-tools.txt

The runtime dependencies plus the extras a production pod uses (PostgreSQL, Redis,
RabbitMQ, the gRPC service, the MCP server); not the dev or plan extras. ``--build-tools``
prints what the build needs and then uninstalls: grpcio-tools, as the dev extra pins it
(it generates the gRPC stubs).
"""

from __future__ import annotations

import re
import sys
import tomllib
from typing import Any

EXTRAS = ("postgres", "redis", "rabbitmq", "grpc", "mcp")
BUILD_TOOLS = ("grpcio-tools",)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _project(pyproject: str) -> dict[str, Any]:
    with open(pyproject, "rb") as f:
        project: dict[str, Any] = tomllib.load(f)["project"]
    return project


def requirements(pyproject: str) -> list[str]:
    project = _project(pyproject)
    extras = project["optional-dependencies"]
    return [*project["dependencies"], *(r for extra in EXTRAS for r in extras[extra])]


def build_tools(pyproject: str) -> list[str]:
    dev = _project(pyproject)["optional-dependencies"]["dev"]
    found = [r for r in dev if (m := _NAME.match(r)) and m[0].lower() in BUILD_TOOLS]
    assert len(found) == len(BUILD_TOOLS), f"the dev extra does not list {BUILD_TOOLS}"
    return found


if __name__ == "__main__":
    args = sys.argv[1:]
    listing = build_tools if args[:1] == ["--build-tools"] else requirements
    args = args[1:] if listing is build_tools else args
    for requirement in listing(args[0] if args else "/src/pyproject.toml"):
        print(requirement)
