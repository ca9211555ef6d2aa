"""``Client``: the synchronous Ragtide client."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import httpx

from ragtide.client._core import (
    DEFAULT_URL,
    FileLike,
    Progress,
    Req,
    Retry,
    SSEDecoder,
    Upload,
    document_path,
    incomplete_stream,
    namespace_path,
    stream_item,
)
from ragtide.client._errors import (
    RagtideConnectionError,
    error_from_response,
    parse_retry_after,
)
from ragtide.client._types import (
    ApiKey,
    ChatAnswer,
    ChatToken,
    CreatedKey,
    Document,
    Namespace,
    SearchHit,
    Session,
    Tenant,
    UploadResult,
)

__all__ = ["Client"]

DEFAULT_NAMESPACE = "default"


def _headers(api_key: str | None, extra: Mapping[str, str] | None) -> dict[str, str]:
    from ragtide import __version__

    out = {"User-Agent": f"ragtide-client/{__version__}", "Accept": "application/json"}
    if api_key:
        out["Authorization"] = f"Bearer {api_key}"
    out.update(extra or {})
    return out


class Client:
    """A Ragtide API client on ``httpx``.

    ``base_url`` defaults to ``$RAGTIDE_URL`` (else ``http://127.0.0.1:8000``) and
    ``api_key`` to ``$RAGTIDE_API_KEY``. Errors are ``RagtideAPIError`` subclasses carrying
    the status and the API's stable ``code``; 429 and 503 are retried after their
    ``Retry-After`` as ``retry`` allows (``sleep`` is injectable for tests).
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = 30.0,
        retry: Retry | None = None,
        sleep: Callable[[float], None] = time.sleep,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = (base_url or os.environ.get("RAGTIDE_URL") or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("RAGTIDE_API_KEY")
        self.retry = retry or Retry()
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            headers=_headers(key, headers),
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the retry loop ----------------------------------------------------------------

    def _build(self, req: Req) -> httpx.Request:
        if req.upload is not None:
            return self._http.build_request(
                req.method,
                req.path,
                params=req.params,
                content=req.upload.iter(req.progress),
                headers=req.upload.headers,
            )
        return self._http.build_request(req.method, req.path, params=req.params, json=req.json)

    @contextmanager
    def _open(self, req: Req, *, stream: bool = False) -> Iterator[httpx.Response]:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.send(self._build(req), stream=stream)
            except httpx.TransportError as exc:
                delay = self.retry.after_error(attempt, exc, req.idempotent)
                if delay is None:
                    raise RagtideConnectionError(f"{req.method} {req.path}: {exc!r}") from exc
                self._sleep(delay)
                continue
            if response.status_code < 400:
                try:
                    yield response
                finally:
                    response.close()
                return
            try:
                response.read()
            finally:
                response.close()
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            delay = self.retry.after_status(attempt, response.status_code, retry_after)
            if delay is None:
                raise error_from_response(response)
            self._sleep(delay)

    def _json(self, req: Req) -> Any:
        with self._open(req) as response:
            return response.json() if response.content else None

    # --- retrieval and chat ------------------------------------------------------------

    def search(
        self, query: str, *, namespace: str = DEFAULT_NAMESPACE, top_k: int = 5
    ) -> list[SearchHit]:
        """The chunks best matching ``query``, best first."""
        body = self._json(
            Req(
                "POST",
                f"{namespace_path(namespace)}/search",
                json={"query": query, "top_k": top_k},
                idempotent=True,
            )
        )
        return [SearchHit.parse(h) for h in body["results"]]

    def chat(
        self, message: str, *, namespace: str = DEFAULT_NAMESPACE, session_id: str | None = None
    ) -> ChatAnswer:
        """One chat turn; pass the answer's ``session_id`` to continue the conversation."""
        payload: dict[str, Any] = {"message": message}
        if session_id is not None:
            payload["session_id"] = session_id
        return ChatAnswer.parse(
            self._json(Req("POST", f"{namespace_path(namespace)}/chat", json=payload))
        )

    def chat_stream(
        self, message: str, *, namespace: str = DEFAULT_NAMESPACE, session_id: str | None = None
    ) -> Iterator[ChatToken | ChatAnswer]:
        """One chat turn as it is generated: ``ChatToken``s, then the ``ChatAnswer``."""
        payload: dict[str, Any] = {"message": message, "stream": True}
        if session_id is not None:
            payload["session_id"] = session_id
        req = Req("POST", f"{namespace_path(namespace)}/chat", json=payload)
        with self._open(req, stream=True) as response:
            decoder = SSEDecoder()
            try:
                for line in response.iter_lines():
                    event = decoder.feed(line)
                    item = stream_item(event) if event is not None else None
                    if item is not None:
                        yield item
                        if isinstance(item, ChatAnswer):
                            return
                last = decoder.flush()
                item = stream_item(last) if last is not None else None
            except httpx.TransportError as exc:
                raise RagtideConnectionError(f"the chat stream broke: {exc!r}") from exc
            if isinstance(item, ChatAnswer):
                yield item
                return
            raise incomplete_stream()

    # --- namespaces and documents ------------------------------------------------------

    def list_namespaces(self, *, page_size: int = 100) -> Iterator[Namespace]:
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": page_size}
            if after is not None:
                params["after"] = after
            body = self._json(Req("GET", "/v1/namespaces", params=params, idempotent=True))
            yield from (Namespace.parse(n) for n in body["namespaces"])
            after = body.get("next")
            if not after:
                return

    def get_namespace(self, namespace: str) -> Namespace:
        return Namespace.parse(self._json(Req("GET", namespace_path(namespace), idempotent=True)))

    def create_namespace(self, namespace: str) -> bool:
        """Create ``namespace``; True if it was created, False if it existed."""
        body = self._json(Req("PUT", namespace_path(namespace), idempotent=True))
        return bool(body["created"])

    def delete_namespace(self, namespace: str) -> None:
        """Remove it with every document, chunk, vector, session and cached answer."""
        self._json(Req("DELETE", namespace_path(namespace), idempotent=True))

    def upload(
        self,
        namespace: str,
        file: FileLike,
        *,
        filename: str | None = None,
        document_id: str | None = None,
        groups: Sequence[str] | None = None,
        progress: Progress | None = None,
    ) -> UploadResult:
        """Ingest a file (a path, bytes or a binary file object) into ``namespace``.

        ``progress(sent, total)`` is called as the body is sent; ``groups`` become the
        documents' ``acl_groups``. A file the server refuses raises its error
        (``unsupported_media_type``, ``empty_document``, …).
        """
        fields: dict[str, str] = {}
        if document_id is not None:
            fields["document_id"] = document_id
        if groups is not None:
            fields["groups"] = ",".join(groups)
        req = Req(
            "POST",
            f"{namespace_path(namespace)}/documents",
            upload=Upload.of(file, filename, fields),
            progress=progress,
        )
        with self._open(req) as response:
            return UploadResult.parse(response.json(), response.status_code)

    def list_documents(self, namespace: str, *, page_size: int = 100) -> Iterator[Document]:
        """Every document of ``namespace`` in id order, fetched a page at a time."""
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": page_size}
            if after is not None:
                params["after"] = after
            body = self._json(
                Req("GET", f"{namespace_path(namespace)}/documents", params=params, idempotent=True)
            )
            yield from (Document.parse(d) for d in body["documents"])
            after = body.get("next")
            if not after:
                return

    def get_document(self, namespace: str, document_id: str) -> Document:
        return Document.parse(
            self._json(Req("GET", document_path(namespace, document_id), idempotent=True))
        )

    def delete_document(self, namespace: str, document_id: str) -> None:
        self._json(Req("DELETE", document_path(namespace, document_id), idempotent=True))

    # --- sessions ----------------------------------------------------------------------

    def get_session(self, namespace: str, session_id: str) -> Session:
        path = f"{namespace_path(namespace)}/sessions/{session_id}"
        return Session.parse(self._json(Req("GET", path, idempotent=True)))

    def delete_session(self, namespace: str, session_id: str) -> None:
        path = f"{namespace_path(namespace)}/sessions/{session_id}"
        self._json(Req("DELETE", path, idempotent=True))

    # --- administration (the admin key, or a tenant's admin key for its own tenant) -----

    def list_tenants(self) -> list[Tenant]:
        body = self._json(Req("GET", "/v1/tenants", idempotent=True))
        return [Tenant.parse(t) for t in body["tenants"]]

    def get_tenant(self, tenant: str) -> Tenant:
        return Tenant.parse(self._json(Req("GET", f"/v1/tenants/{tenant}", idempotent=True)))

    def put_tenant(self, tenant: str, config: Mapping[str, Any] | None = None) -> Tenant:
        """Create or replace a tenant record (``name``, ``quotas``, overrides, …)."""
        req = Req("PUT", f"/v1/tenants/{tenant}", json=dict(config or {}), idempotent=True)
        return Tenant.parse(self._json(req))

    def delete_tenant(self, tenant: str) -> None:
        self._json(Req("DELETE", f"/v1/tenants/{tenant}", idempotent=True))

    def tenant_usage(self, tenant: str) -> dict[str, Any]:
        body: dict[str, Any] = self._json(
            Req("GET", f"/v1/tenants/{tenant}/usage", idempotent=True)
        )
        return body

    def create_key(
        self,
        tenant: str,
        scopes: Sequence[str] = ("read",),
        *,
        namespaces: Sequence[str] | None = None,
        expires_at: float | None = None,
        description: str = "",
    ) -> CreatedKey:
        payload: dict[str, Any] = {"scopes": list(scopes), "description": description}
        if namespaces is not None:
            payload["namespaces"] = list(namespaces)
        if expires_at is not None:
            payload["expires_at"] = expires_at
        body = self._json(Req("POST", f"/v1/tenants/{tenant}/keys", json=payload))
        return CreatedKey(str(body["key"]), ApiKey.parse(body))

    def list_keys(self, tenant: str) -> list[ApiKey]:
        body = self._json(Req("GET", f"/v1/tenants/{tenant}/keys", idempotent=True))
        return [ApiKey.parse(k) for k in body["keys"]]

    def revoke_key(self, tenant: str, key_id: str) -> None:
        self._json(Req("DELETE", f"/v1/tenants/{tenant}/keys/{key_id}", idempotent=True))

    # --- probes --------------------------------------------------------------------------

    def ready(self) -> bool:
        """Whether the server answers ``/ready`` with 200 (no retries)."""
        try:
            return self._http.get("/ready").status_code == 200
        except httpx.TransportError:
            return False
