"""``POST /api/v1/sync/batches``: a gateway uploads a batch and gets its SyncAck.

Bodies: columnar ``application/vnd.smaint.batch+json`` (shared.batchcodec) with
``Content-Encoding: zstd`` from current gateways; row JSON ``application/json``, plain or
gzip, still accepted from older ones.
"""

from __future__ import annotations

import logging
import zlib

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from psycopg_pool import ConnectionPool
from pydantic import ValidationError

from cloud.access.gateway_tokens import rotation_requested
from cloud.api.deps import GatewayAuth, State
from cloud.exceptions import BodyError, BodyTooLargeError, UnsupportedEncodingError
from cloud.ingest.batch import apply_batch
from cloud.ingest.limits import IngestLimits
from shared import batchcodec
from shared.batchcodec import DecodedBatch
from shared.schemas import SyncAck, SyncBatch

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/sync", tags=["sync"])


async def read_body(request: Request, limit: int) -> bytes:
    """The raw request body, refused with 413 as soon as it grows past ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress gzip (one or more members) without ever holding more than ``limit`` bytes."""
    out = bytearray()
    rest = data
    while True:
        d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            out += d.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise BodyError(f"body is not valid gzip: {exc}") from exc
        if len(out) > limit:
            raise BodyTooLargeError(limit)
        if not d.eof:
            raise BodyError("gzip body is truncated")
        rest = d.unused_data
        if not rest:
            return bytes(out)


def decode_batch(raw: bytes, content_encoding: str, limit: int,
                 content_type: str = "application/json") -> DecodedBatch:
    """Undo the Content-Encoding and decode per Content-Type: columnar or row JSON (422 if bad)."""
    encoding = content_encoding.strip().lower()
    if encoding in {"gzip", "x-gzip"}:
        raw = gunzip(raw, limit)
    elif encoding == "zstd":
        try:
            raw = batchcodec.decompress(raw, limit)
        except OverflowError as exc:
            raise BodyTooLargeError(limit) from exc
        except batchcodec.CodecError as exc:
            raise BodyError(f"body is not valid zstd: {exc.reason}") from exc
    elif encoding not in {"", "identity"}:
        raise UnsupportedEncodingError(
            f"Content-Encoding {content_encoding!r}: use zstd or gzip")
    media = content_type.split(";", maxsplit=1)[0].strip().lower()
    if media == batchcodec.MEDIA_TYPE:
        try:
            return batchcodec.decode(raw)
        except batchcodec.CodecError as exc:
            raise RequestValidationError([{
                "loc": ("body", *exc.field.split(".")) if exc.field else ("body",),
                "msg": exc.reason, "type": "value_error"}]) from exc
    try:
        return DecodedBatch.from_batch(SyncBatch.model_validate_json(raw))
    except ValidationError as exc:
        # No input echo: it could be megabytes of the caller's own body.
        raise RequestValidationError(
            exc.errors(include_url=False, include_context=False, include_input=False)
        ) from exc


def _decode_and_apply(
    pool: ConnectionPool, raw: bytes, encoding: str, limit: int, gateway_id: str, *,
    content_type: str, limits: IngestLimits,
) -> SyncAck:
    batch = decode_batch(raw, encoding, limit, content_type)
    with pool.connection() as conn:
        ack = apply_batch(conn, batch, gateway_id, limits)
        ack.rotate_token = rotation_requested(conn, gateway_id)
        conn.rollback()  # the read above opened a transaction; nothing to keep
    return ack


@router.post(
    "/batches",
    response_model=SyncAck,
    summary="Upload a SyncBatch; answered only after it is committed",
    responses={
        401: {"description": "missing, unknown or revoked gateway token"},
        403: {"description": "the token belongs to another gateway"},
        413: {"description": "body larger than max_body_bytes (raw or decompressed)"},
        415: {"description": "Content-Encoding other than zstd, gzip or identity"},
        422: {"description": "body is not a valid SyncBatch (permanent: do not retry)"},
        429: {"description": "too many requests, or too many new daily partitions at once "
                             "(retry after Retry-After)"},
        503: {"description": "database unavailable (retry later)"},
    },
)
async def post_batch(request: Request, gateway_id: GatewayAuth, state: State) -> SyncAck:
    """Apply a gateway's batch exactly once; a re-sent batch gets its first ack again."""
    limit = state.settings.api.max_body_bytes
    raw = await read_body(request, limit)
    # Decompressing, parsing megabytes of JSON and the database work all block: off the loop.
    ack = await run_in_threadpool(
        _decode_and_apply, state.db(), raw, request.headers.get("content-encoding", ""),
        limit, gateway_id,
        content_type=request.headers.get("content-type", "application/json"),
        limits=state.settings.ingest.limits(),
    )
    state.metrics.batches.labels(str(ack.first_time).lower()).inc()
    if ack.first_time:
        state.metrics.readings_inserted.inc(ack.readings_inserted)
        state.metrics.readings_duplicate.inc(ack.readings_duplicate)
        state.metrics.alerts_upserted.inc(ack.alerts_upserted)
    return ack
