"""Namespaces and their documents."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from starlette.responses import Response

from ragtide.api.deps import JSONResponse, ingestor, rate_limit, runtime
from ragtide.api.schemas import render_document, render_outcome
from ragtide.errors import DocumentNotFound, DocumentRejected
from ragtide.ingest.pipeline import Ingestor, validate_document_id
from ragtide.runtime import Runtime
from ragtide.types import validate_namespace

router = APIRouter(prefix="/v1/namespaces", tags=["documents"])

Rt = Annotated[Runtime, Depends(runtime)]


@router.get("")
async def list_namespaces(rt: Rt) -> Response:
    names = await rt.store.list_namespaces()
    out = []
    for name in names:
        docs, chunks = await rt.store.counts(name)
        out.append({"namespace": name, "documents": docs, "chunks": chunks})
    return JSONResponse({"namespaces": out})


@router.put("/{namespace}")
async def create_namespace(namespace: str, rt: Rt) -> Response:
    created = await rt.store.create_namespace(validate_namespace(namespace))
    return JSONResponse({"namespace": namespace, "created": created}, 201 if created else 200)


@router.get("/{namespace}")
async def get_namespace(namespace: str, rt: Rt) -> Response:
    await rt.require_namespace(namespace)
    docs, chunks = await rt.store.counts(namespace)
    return JSONResponse({"namespace": namespace, "documents": docs, "chunks": chunks})


@router.post("/{namespace}/documents", dependencies=[Depends(rate_limit)])
async def upload_document(
    namespace: str,
    file: Annotated[UploadFile, File(description="The file to ingest.")],
    ing: Annotated[Ingestor, Depends(ingestor)],
    document_id: Annotated[str | None, Form()] = None,
) -> Response:
    """Ingest one file. 201 when something changed, 200 when all of it was unchanged."""
    validate_namespace(namespace)
    if document_id is not None:
        validate_document_id(document_id)
    data = await file.read()
    outcomes = await ing.ingest_bytes(namespace, file.filename or "upload.txt", data, document_id)
    landed = [o for o in outcomes if o.status != "rejected"]
    if not landed and outcomes:  # the whole file was refused: answer with its reason
        raise outcomes[0].error or DocumentRejected("document rejected")
    changed = any(o.status in ("created", "updated") for o in landed)
    return JSONResponse(
        {"namespace": namespace, "documents": [render_outcome(o) for o in outcomes]},
        201 if changed else 200,
    )


@router.get("/{namespace}/documents")
async def list_documents(
    namespace: str,
    rt: Rt,
    limit: Annotated[int, Query(ge=1, le=1000, description="Documents per page.")] = 100,
    after: Annotated[
        str | None, Query(max_length=512, description="The previous page's `next`.")
    ] = None,
) -> Response:
    """Documents in id order, a page at a time; ``next`` is null on the last page."""
    await rt.require_namespace(namespace)
    docs = await rt.store.list_documents(namespace, limit=limit + 1, after=after)
    page = docs[:limit]
    return JSONResponse(
        {
            "namespace": namespace,
            "documents": [render_document(d) for d in page],
            "next": page[-1].id if len(docs) > limit else None,
        }
    )


@router.get("/{namespace}/documents/{document_id:path}")
async def get_document(namespace: str, document_id: str, rt: Rt) -> Response:
    await rt.require_namespace(namespace)
    doc = await rt.store.get_document(namespace, document_id)
    if doc is None:
        raise DocumentNotFound(namespace, document_id)
    return JSONResponse(render_document(doc))


@router.delete("/{namespace}/documents/{document_id:path}", status_code=204)
async def delete_document(namespace: str, document_id: str, rt: Rt) -> Response:
    await rt.require_namespace(namespace)
    if not await rt.store.delete_document(namespace, document_id):
        raise DocumentNotFound(namespace, document_id)
    await rt.documents_changed(namespace)
    return Response(status_code=204)


__all__ = ["router"]
