"""The audit log: one JSON line per admin action and per change to a tenant's data.

Each line names the action, the tenant, the acting credential (its key id or JWT
subject, never the key) and the request id. Lines go to ``tenants.audit_log`` when set
(a file opened for appending, one ``write`` per line so concurrent writers never
interleave) and otherwise to the ``ragtide.audit`` logger, which the log stream carries.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import orjson

from ragtide.observability import request_id_var
from ragtide.types import Principal

__all__ = ["audit", "configure_audit"]

logger = logging.getLogger("ragtide.audit")

_fd: int | None = None


def configure_audit(path: Path | None) -> None:
    """Send audit lines to ``path`` (created if missing) or, with None, to the log."""
    global _fd
    if _fd is not None:
        os.close(_fd)
        _fd = None
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


def audit(action: str, principal: Principal, **fields: Any) -> None:
    entry = {
        "ts": round(time.time(), 3),
        "action": action,
        "tenant": principal.tenant,
        "actor": principal.subject,
        "actor_kind": principal.kind,
        "request_id": request_id_var.get(),
        **fields,
    }
    if _fd is None:
        logger.info("audit", extra={"audit": entry})
        return
    try:
        os.write(_fd, orjson.dumps(entry, default=str) + b"\n")
    except OSError:
        logger.error("audit log not written", extra={"audit": entry})
