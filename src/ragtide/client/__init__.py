"""A Python client for the Ragtide API, sync (``Client``) and async (``AsyncClient``), on httpx.

    from ragtide.client import Client

    with Client("https://ragtide.example.com", api_key="rt_…") as rt:
        rt.upload("handbook", "guide.pdf", progress=lambda sent, total: ...)
        for hit in rt.search("readiness probe", namespace="handbook"):
            print(hit.score, hit.title)
        for item in rt.chat_stream("How does it scale?", namespace="handbook"):
            ...  # ChatToken(text) as generated, then the ChatAnswer

Results are frozen dataclasses; list calls iterate over every page. An error response is
raised as a ``RagtideAPIError`` subclass (``Unauthenticated``, ``NotFound``,
``RateLimited`` with ``retry_after``, …) carrying ``status``, the stable ``code`` and the
``message``. 429 and 503 are retried after their ``Retry-After`` within ``Retry``'s
bounds; a connection error is retried when nothing was sent or the call is idempotent.
"""

from __future__ import annotations

from ragtide.client._async import AsyncClient
from ragtide.client._core import Progress, Retry, SSEDecoder, SSEEvent
from ragtide.client._errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    RagtideAPIError,
    RagtideClientError,
    RagtideConnectionError,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    Unauthenticated,
    UnsupportedMediaType,
    UpstreamError,
)
from ragtide.client._sync import Client
from ragtide.client._types import (
    ApiKey,
    ChatAnswer,
    ChatToken,
    Citation,
    CreatedKey,
    Document,
    Intent,
    Namespace,
    SearchHit,
    Session,
    Tenant,
    Turn,
    UploadedDocument,
    UploadResult,
)

__all__ = [
    "ApiKey",
    "AsyncClient",
    "BadRequest",
    "ChatAnswer",
    "ChatToken",
    "Citation",
    "Client",
    "Conflict",
    "CreatedKey",
    "Document",
    "Forbidden",
    "Intent",
    "Namespace",
    "NotFound",
    "PayloadTooLarge",
    "Progress",
    "QuotaExceeded",
    "RagtideAPIError",
    "RagtideClientError",
    "RagtideConnectionError",
    "RateLimited",
    "Retry",
    "SSEDecoder",
    "SSEEvent",
    "SearchHit",
    "ServerError",
    "ServiceUnavailable",
    "Session",
    "Tenant",
    "Turn",
    "Unauthenticated",
    "UnsupportedMediaType",
    "UploadResult",
    "UploadedDocument",
    "UpstreamError",
]
