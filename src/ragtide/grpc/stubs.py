"""The generated message and service modules, or an ImportError that says what to run."""

from __future__ import annotations

from typing import Any

try:
    from ragtide.grpc._gen.ragtide.v1 import ragtide_pb2 as pb
    from ragtide.grpc._gen.ragtide.v1 import ragtide_pb2_grpc as _pb_grpc
except Exception as exc:  # never generated (a bare checkout), or for another grpcio/protobuf
    raise ImportError(
        "the gRPC stubs are missing or were generated for another grpcio "
        f"({exc}): run `python -m ragtide.grpc.codegen` (scripts/install does)"
    ) from exc

__all__ = ["SERVICE_NAME", "pb", "pb_grpc"]

pb_grpc: Any = _pb_grpc  # protoc's service module has no types

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["Ragtide"].full_name
