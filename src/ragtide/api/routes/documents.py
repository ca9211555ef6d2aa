"""Namespaces and their documents, always within the caller's tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from starlette.responses import Response

from ragtide.api.deps import JSONResponse, call, ingestor, single_form_fields
from ragtide.api.errors import responses
from ragtide.api.schemas import (
    DOCUMENT_ID_PATTERN,
    DocumentIdPath,
    NamespacePath,
    render_chunk,
    render_document,
    render_outcome,
)
from ragtide.audit import audit
from ragtide.errors import DocumentNotFound, InvalidRequest, NamespaceNotFound
from ragtide.ingest.pipeline import validate_document_id
from ragtide.types import split_namespace_key

router = APIRouter(prefix="/v1/namespaces", tags=["documents"])

_GROUP_LIMIT = 64
_GROUPS_PATTERN = rf"^[^,]{{0,128}}(?:,[^,]{{0,128}}){{0,{_GROUP_LIMIT - 1}}}$"


_READ = responses(401, 403, 404, 422, 500, 503)
_WRITE = responses(401, 403, 404, 422, 429, 500, 503)


@router.get("", responses=responses(401, 403, 422, 500, 503))
async def list_namespaces(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000, description="Namespaces per page.")] = 100,
    after: Annotated[
        str | None, Query(max_length=64, description="The previous page's `next`.")
    ] = None,
) -> Response:
    """The caller's namespaces (only those its credential may use), a page at a time."""
    c = await call(request, "read")
    prefix = f"{c.principal.tenant}/"
    names = [split_namespace_key(k)[1] for k in await c.rt.store.list_namespaces(prefix)]
    names = [n for n in names if c.principal.may_use(n) and (after is None or n > after)]
    page = names[:limit]
    out = []
    for name in page:
        docs, chunks = await c.rt.store.counts(prefix + name)
        out.append({"namespace": name, "documents": docs, "chunks": chunks})
    return JSONResponse({"namespaces": out, "next": page[-1] if len(names) > limit else None})


@router.put(
    "/{namespace}",
    responses={201: {"description": "Created."}, **responses(401, 403, 422, 429, 500, 503)},
)
async def create_namespace(namespace: NamespacePath, request: Request) -> Response:
    c = await call(request, "write", "write")
    opened = await c.open(namespace, "write")
    exists = await c.rt.store.namespace_exists(opened.key)
    if not exists:
        await c.tenants.check_storage(c.principal.tenant, new_namespace=True)
    created = await c.rt.store.create_namespace(opened.key)
    if created:
        audit("namespace.create", c.principal, namespace=namespace)
    return JSONResponse({"namespace": namespace, "created": created}, 201 if created else 200)


@router.get("/{namespace}", responses=_READ)
async def get_namespace(namespace: NamespacePath, request: Request) -> Response:
    c = await call(request, "read")
    opened = await c.open(namespace, "read")
    await c.rt.require_namespace(opened.key)
    docs, chunks = await c.rt.store.counts(opened.key)
    return JSONResponse({"namespace": namespace, "documents": docs, "chunks": chunks})


@router.delete("/{namespace}", status_code=204, responses=_WRITE)
async def delete_namespace(namespace: NamespacePath, request: Request) -> Response:
    """Remove a namespace with its documents, chunks, vectors, sessions and cached answers."""
    c = await call(request, "write", "write")
    opened = await c.open(namespace, "delete")
    if not await c.rt.store.delete_namespace(opened.key):
        raise NamespaceNotFound(namespace)
    await c.rt.memory.delete_namespace(opened.key)
    await c.rt.documents_changed(opened.key)
    audit("namespace.delete", c.principal, namespace=namespace)
    return Response(status_code=204)


@router.post(
    "/{namespace}/documents",
    responses={
        201: {"description": "Something was created or updated."},
        **responses(401, 403, 404, 413, 415, 422, 429, 500, 503),
    },
    dependencies=[Depends(single_form_fields("file", "document_id", "groups"))],
)
async def upload_document(
    namespace: NamespacePath,
    request: Request,
    file: Annotated[UploadFile, File(description="The file to ingest (exactly one).")],
    document_id: Annotated[
        str | None,
        Form(
            pattern=DOCUMENT_ID_PATTERN,
            description="The document's id (default: the file's name).",
        ),
    ] = None,
    groups: Annotated[
        str | None,
        Form(
            pattern=_GROUPS_PATTERN,
            description=(
                "Comma-separated ACL groups (metadata acl_groups) for the documents: "
                f"at most {_GROUP_LIMIT} names of up to 128 characters."
            ),
        ),
    ] = None,
) -> Response:
    """Ingest one file. 201 when something changed, 200 when all of it was unchanged."""
    c = await call(request, "write", "write")
    opened = await c.open(namespace, "write")
    if document_id is not None:
        validate_document_id(document_id)
    metadata = {"acl_groups": _groups(groups)} if groups is not None else None
    data = await file.read()
    outcomes, changed = await c.upload(
        await ingestor(request), opened, file.filename or "upload.txt", data, document_id, metadata
    )
    return JSONResponse(
        {"namespace": namespace, "documents": [render_outcome(o) for o in outcomes]},
        201 if changed else 200,
    )


def _groups(raw: str) -> list[str]:
    groups = sorted({g.strip() for g in raw.split(",") if g.strip()})
    if len(groups) > _GROUP_LIMIT or any(len(g) > 128 for g in groups):
        raise InvalidRequest(f"groups: at most {_GROUP_LIMIT} names of up to 128 characters")
    return groups


@router.get("/{namespace}/documents", responses=_READ)
async def list_documents(
    namespace: NamespacePath,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000, description="Documents per page.")] = 100,
    after: Annotated[
        str | None, Query(max_length=512, description="The previous page's `next`.")
    ] = None,
) -> Response:
    """Documents in id order, a page at a time; ``next`` is null on the last page."""
    c = await call(request, "read")
    opened = await c.open(namespace, "read")
    await c.rt.require_namespace(opened.key)
    docs = await c.rt.store.list_documents(opened.key, limit=limit + 1, after=after)
    if opened.filter:
        docs = [d for d in docs if opened.filter.matches(d.id, d.metadata)]
    page = docs[:limit]
    return JSONResponse(
        {
            "namespace": namespace,
            "documents": [render_document(d) for d in page],
            "next": page[-1].id if len(docs) > limit else None,
        }
    )


# Before the document's own route: its ``{document_id:path}`` would take ".../chunks".
@router.get("/{namespace}/documents/{document_id:path}/chunks", responses=_READ)
async def list_document_chunks(
    namespace: NamespacePath,
    document_id: DocumentIdPath,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000, description="Chunks per page.")] = 100,
    after: Annotated[
        int | None,
        Query(ge=0, le=2**31 - 1, description="The previous page's `next` (an ordinal)."),
    ] = None,
) -> Response:
    """A document's chunks in order (by ordinal), a page at a time; ``next`` is null on the
    last page. The caller's access policies apply as to the document itself."""
    c = await call(request, "read")
    opened = await c.open(namespace, "read")
    doc = await c.document(opened, document_id)
    chunks = await c.rt.store.document_chunks(opened.key, doc.id, limit=limit + 1, after=after)
    page = chunks[:limit]
    if opened.filter:  # chunks carry their own metadata: the filter applies to each
        shown = [ch for ch in page if opened.filter.matches(ch.document_id, ch.metadata)]
    else:
        shown = page
    return JSONResponse(
        {
            "namespace": namespace,
            "document_id": doc.id,
            "chunks": [render_chunk(ch) for ch in shown],
            "next": page[-1].ordinal if len(chunks) > limit else None,
        }
    )


# Ids may contain "/": ".../documents/a/chunks" is also the path of document "a/chunks",
# which DELETE still reaches (here, declared, so that the path's Allow is what it says).
@router.delete(
    "/{namespace}/documents/{document_id:path}/chunks", status_code=204, responses=_WRITE
)
async def delete_document_ending_in_chunks(
    namespace: NamespacePath, document_id: DocumentIdPath, request: Request
) -> Response:
    """Delete the document whose id is ``{document_id}/chunks`` (a document id may contain
    '/'; its chunks are never deleted alone)."""
    return await delete_document(namespace, f"{document_id}/chunks", request)


@router.get("/{namespace}/documents/{document_id:path}", responses=_READ)
async def get_document(
    namespace: NamespacePath, document_id: DocumentIdPath, request: Request
) -> Response:
    c = await call(request, "read")
    opened = await c.open(namespace, "read")
    return JSONResponse(render_document(await c.document(opened, document_id)))


@router.delete("/{namespace}/documents/{document_id:path}", status_code=204, responses=_WRITE)
async def delete_document(
    namespace: NamespacePath, document_id: DocumentIdPath, request: Request
) -> Response:
    c = await call(request, "write", "write")
    opened = await c.open(namespace, "delete")
    if opened.filter:  # only a document the caller may see may be deleted
        await c.document(opened, document_id)
    else:
        await c.rt.require_namespace(opened.key)
    if not await c.rt.store.delete_document(opened.key, document_id):
        raise DocumentNotFound(namespace, document_id)
    await c.rt.documents_changed(opened.key)
    audit("documents.delete", c.principal, namespace=namespace, document_id=document_id)
    return Response(status_code=204)


__all__ = ["router"]
