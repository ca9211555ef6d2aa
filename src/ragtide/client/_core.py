"""What the sync and async clients share: requests, retry decisions, uploads, SSE parsing."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import httpx

from ragtide.client._errors import RagtideAPIError, error_from_status, parse_retry_after
from ragtide.client._types import ChatAnswer, ChatToken

__all__ = [
    "DEFAULT_URL",
    "Progress",
    "Req",
    "Retry",
    "SSEDecoder",
    "SSEEvent",
    "Upload",
    "document_path",
    "namespace_path",
    "stream_item",
]

DEFAULT_URL = "http://127.0.0.1:8000"
CHUNK = 64 * 1024

Progress = Callable[[int, int], None]
"""``progress(sent_bytes, total_bytes)``, called as an upload's body is sent."""

FileLike = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes]


def namespace_path(namespace: str) -> str:
    return f"/v1/namespaces/{quote(namespace, safe='')}"


def document_path(namespace: str, document_id: str) -> str:
    return f"{namespace_path(namespace)}/documents/{quote(document_id, safe='/')}"


@dataclass(frozen=True, slots=True)
class Retry:
    """When to try a request again.

    ``attempts`` counts every try (1 = never retry). A 429 or 503 is retried after its
    ``Retry-After`` (or, without one, an exponential backoff with jitter), unless the
    server asks for more than ``max_retry_after`` seconds (a daily quota, say): then the
    error is raised at once. A connection that could not be made is retried for any
    request (nothing was sent); one that broke after sending only for idempotent ones.
    """

    attempts: int = 3
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_retry_after: float = 60.0
    statuses: frozenset[int] = frozenset({429, 503})
    jitter: bool = True

    def _backoff(self, attempt: int) -> float:
        delay: float = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return delay * random.uniform(0.5, 1.0) if self.jitter else delay

    def after_status(self, attempt: int, status: int, retry_after: float | None) -> float | None:
        """Seconds to wait before try ``attempt + 1`` after an error status; None: give up."""
        if attempt >= self.attempts or status not in self.statuses:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after else None
        return self._backoff(attempt)

    def after_error(
        self, attempt: int, exc: httpx.TransportError, idempotent: bool
    ) -> float | None:
        """Seconds to wait after a transport error; None: give up."""
        if attempt >= self.attempts:
            return None
        unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
        if unsent or idempotent:
            return self._backoff(attempt)
        return None


@dataclass(frozen=True, slots=True)
class Upload:
    """A multipart/form-data body built by hand so that it can be sent in chunks
    (for ``progress``) and rebuilt for a retry."""

    filename: str
    fields: Mapping[str, str]
    data: bytes | None = None
    path: Path | None = None
    boundary: str = field(default_factory=lambda: uuid.uuid4().hex)

    @classmethod
    def of(cls, file: FileLike, filename: str | None, fields: Mapping[str, str]) -> Upload:
        if isinstance(file, bytes | bytearray | memoryview):
            return cls(filename or "upload.txt", fields, data=bytes(file))
        if isinstance(file, str | os.PathLike):
            path = Path(file)
            return cls(filename or path.name, fields, path=path)
        name = filename or Path(str(getattr(file, "name", "") or "upload.txt")).name
        return cls(name, fields, data=file.read())

    def _head(self) -> bytes:
        parts = []
        for name, value in self.fields.items():
            parts.append(
                f"--{self.boundary}\r\n"
                f'Content-Disposition: form-data; name="{_escape(name)}"\r\n\r\n'
                f"{value}\r\n"
            )
        parts.append(
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{_escape(self.filename)}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        return "".join(parts).encode()

    def _tail(self) -> bytes:
        return f"\r\n--{self.boundary}--\r\n".encode()

    @property
    def size(self) -> int:
        """The file's size in bytes."""
        if self.data is not None:
            return len(self.data)
        assert self.path is not None
        return self.path.stat().st_size

    @property
    def total(self) -> int:
        """The whole body's length."""
        return len(self._head()) + self.size + len(self._tail())

    @property
    def headers(self) -> dict[str, str]:
        return {
            "Content-Type": f"multipart/form-data; boundary={self.boundary}",
            "Content-Length": str(self.total),
        }

    def _pieces(self) -> Iterator[bytes]:
        yield self._head()
        if self.data is not None:
            view = memoryview(self.data)
            for start in range(0, len(view), CHUNK):
                yield bytes(view[start : start + CHUNK])
        else:
            assert self.path is not None
            with self.path.open("rb") as f:
                while piece := f.read(CHUNK):
                    yield piece
        yield self._tail()

    def iter(self, progress: Progress | None) -> Iterator[bytes]:
        total, sent = self.total, 0
        if progress is not None:
            progress(0, total)
        for piece in self._pieces():
            yield piece
            sent += len(piece)
            if progress is not None:
                progress(sent, total)

    async def aiter(self, progress: Progress | None) -> AsyncIterator[bytes]:
        for piece in self.iter(progress):
            yield piece


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


@dataclass(frozen=True, slots=True)
class Req:
    """One API call, as both clients send it."""

    method: str
    path: str
    params: Mapping[str, Any] | None = None
    json: Any = None
    idempotent: bool = False
    upload: Upload | None = None
    progress: Progress | None = None


# --- server-sent events --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str
    data: str


class SSEDecoder:
    """Server-sent events from lines (the WHATWG rules: ``event:``, multi-line ``data:``,
    comments, a blank line dispatches; an event without data is not dispatched)."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> SSEEvent | None:
        line = line.rstrip("\r\n")
        if not line:
            return self.flush()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None  # id, retry and unknown fields do not matter here

    def flush(self) -> SSEEvent | None:
        event, data = self._event or "message", self._data
        self._event, self._data = "", []
        if not data:
            return None
        return SSEEvent(event, "\n".join(data))


def stream_item(event: SSEEvent) -> ChatToken | ChatAnswer | None:
    """A chat stream's event as the client yields it; raises on an in-band ``error``."""
    import json

    if event.event == "token":
        return ChatToken(str(json.loads(event.data).get("text", "")))
    if event.event == "done":
        return ChatAnswer.parse(json.loads(event.data))
    if event.event == "error":
        body = json.loads(event.data)
        raise error_from_status(
            int(body.get("status") or 500),
            str(body.get("code") or "internal"),
            str(body.get("message") or "the stream failed"),
            retry_after=parse_retry_after(str(body["retry_after"]))
            if body.get("retry_after") is not None
            else None,
        )
    return None  # citations (the done event carries them too), comments, unknown events


def incomplete_stream() -> RagtideAPIError:
    return error_from_status(502, "incomplete_stream", "the chat stream ended without an answer")
