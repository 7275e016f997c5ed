"""Model rollouts: create, list, roll back, cancel (users); bundle download (gateways)."""

from __future__ import annotations

import re
from typing import Annotated, cast

from fastapi import APIRouter, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from cloud.api.deps import Admin, GatewayAuth, Operator, Pool, Viewer, get_state
from cloud.artifacts import (
    ArtifactNotFoundError,
    ArtifactStore,
    InvalidArtifactKeyError,
    open_artifact_store,
)
from cloud.exceptions import BodyError, NotFoundError
from cloud.rollout import (
    Rollout,
    RolloutCreate,
    artifact_for,
    cancel_rollout,
    create_rollout,
    gateway_models,
    get_rollout,
    list_rollouts,
    may_download,
    rollback_rollout,
)
from cloud.rollout.rollouts import VERSION_PATTERN, BundleNotForGatewayError
from shared.schemas import MAX_REASON
from shared.topics import ID_PATTERN

router = APIRouter(prefix="/api/v1", tags=["models"])

_RANGE = re.compile(r"bytes=(\d{1,18})-(\d{0,18})")
BUNDLE_MEDIA_TYPE = "application/vnd.smaint.bundle+zip"

Profile = Annotated[str, PathParam(pattern="^[a-z][a-z0-9_]{0,31}$")]
Version = Annotated[str, PathParam(pattern=f"^{VERSION_PATTERN}$")]


def get_artifacts(request: Request) -> ArtifactStore:
    """The settings' artifact store, opened on first use (an app that never serves a bundle
    creates no directory and no S3 client)."""
    store = getattr(request.app.state, "artifacts", None)
    if store is None:
        store = open_artifact_store(get_state(request).settings.artifacts)
        request.app.state.artifacts = store
    return cast(ArtifactStore, store)


class RollbackBody(BaseModel):
    """Why the rollout is rolled back or cancelled (kept in the rollout and the audit log)."""

    reason: str = Field(min_length=1, max_length=MAX_REASON, examples=["alerts doubled"])


class RunningModel(BaseModel):
    """What one gateway runs for one profile, since when and why it changed last."""

    gateway: str
    profile: str
    version: str
    since: str
    reason: str


@router.post("/rollouts", response_model=Rollout, status_code=201,
             summary="Deploy a model version: canaries first, then the fleet",
             responses={404: {"description": "no such gateway or bundle"}})
def post_rollout(request: Request, pool: Pool, who: Admin, body: RolloutCreate) -> Rollout:
    """Start a rollout; the gateways pick it up with their next sync answer."""
    with pool.connection() as conn:
        return create_rollout(conn, who.name, body, get_artifacts(request))


@router.get("/rollouts", response_model=list[Rollout], summary="Rollouts, newest first")
def get_rollouts(pool: Pool, who: Viewer,
                 profile: Annotated[str | None, Query(max_length=32)] = None,
                 limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[Rollout]:
    """Rollouts with each gateway's stage, step, readings scored and reason."""
    with pool.connection() as conn:
        return list_rollouts(conn, profile, limit)


@router.get("/rollouts/{rollout_id}", response_model=Rollout, summary="One rollout")
def get_one(pool: Pool, who: Viewer, rollout_id: Annotated[int, PathParam(ge=1)]) -> Rollout:
    """A rollout and its gateways' progress."""
    with pool.connection() as conn:
        return get_rollout(conn, rollout_id)


@router.post("/rollouts/{rollout_id}/rollback", response_model=Rollout,
             summary="Order every gateway of a rollout back to its previous model",
             responses={404: {"description": "no such rollout"},
                        409: {"description": "already rolled back or superseded"}})
def post_rollback(pool: Pool, who: Operator, rollout_id: Annotated[int, PathParam(ge=1)],
                  body: RollbackBody) -> Rollout:
    """Manual rollback: audited, carried to the gateways as an explicit rollback order."""
    with pool.connection() as conn:
        return rollback_rollout(conn, who.name, rollout_id, body.reason)


@router.post("/rollouts/{rollout_id}/cancel", response_model=Rollout,
             summary="Halt a rollout where it stands; gateways keep what they run",
             responses={404: {"description": "no such rollout"},
                        409: {"description": "not in the canary or fleet stage"}})
def post_cancel(pool: Pool, who: Operator, rollout_id: Annotated[int, PathParam(ge=1)],
                body: RollbackBody) -> Rollout:
    """Cancel: the rollout is halted (audited) and orders no gateway to change its model."""
    with pool.connection() as conn:
        return cancel_rollout(conn, who.name, rollout_id, body.reason)


@router.get("/models/running", response_model=list[RunningModel],
            summary="What each gateway runs, since when, why it changed")
def get_running(pool: Pool, who: Viewer,
                gateway: Annotated[str | None, Query(pattern=f"^{ID_PATTERN}$")] = None,
                ) -> list[RunningModel]:
    """Per gateway and profile: the model version it reported running and the last change."""
    with pool.connection() as conn:
        rows = gateway_models(conn, gateway)
    return [RunningModel.model_validate({**r, "since": str(r["since"])}) for r in rows]


def _range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) of a single ``bytes=`` range, None for the whole file."""
    if not header:
        return None
    m = _RANGE.fullmatch(header.strip())
    if m is None:
        raise BodyError(f"Range {header!r} not understood: send 'bytes=<start>-[<end>]'")
    start = int(m.group(1))
    end = int(m.group(2)) + 1 if m.group(2) else size
    return start, min(end, size)


@router.get("/models/{profile}/{version}/bundle",
            summary="Download a signed model bundle (gateway token; HTTP Range to resume)",
            responses={200: {"content": {BUNDLE_MEDIA_TYPE: {}}},
                       206: {"description": "the requested byte range"},
                       403: {"description": "no rollout wants this version on the gateway"},
                       404: {"description": "no such bundle"},
                       416: {"description": "range starts beyond the bundle"}})
async def get_bundle(request: Request, gateway_id: GatewayAuth, pool: Pool, profile: Profile,
                     version: Version) -> Response:
    """The bundle's bytes, to a gateway a rollout wants it on (or that ran it before one);
    ETag is its sha256, so a resumed download notices a replacement."""
    store = get_artifacts(request)

    def lookup() -> tuple[str, int, str]:
        with pool.connection() as conn:
            if not may_download(conn, gateway_id, profile, version):
                raise BundleNotForGatewayError(gateway_id, profile, version)
            key = artifact_for(conn, profile, version)
        info = store.head(key)
        return key, info.size, info.sha256

    try:
        key, size, sha = await run_in_threadpool(lookup)
    except (ArtifactNotFoundError, InvalidArtifactKeyError) as exc:
        raise NotFoundError(f"no bundle for {profile} {version}: {exc}") from exc
    etag = f'"{sha}"'
    headers = {"ETag": etag, "Accept-Ranges": "bytes", "X-Bundle-Sha256": sha}
    wanted = _range(request.headers.get("range"), size)
    if_range = request.headers.get("if-range")
    if wanted is not None and if_range is not None and if_range != etag:
        wanted = None  # the bundle changed since the partial download: send it whole
    if wanted is None:
        data = await run_in_threadpool(store.get_bytes, key)
        return Response(data, media_type=BUNDLE_MEDIA_TYPE, headers=headers)
    start, end = wanted
    if start >= size > 0 or end <= start:
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    data = await run_in_threadpool(store.get_range, key, start, end)
    headers["Content-Range"] = f"bytes {start}-{start + len(data) - 1}/{size}"
    return Response(data, status_code=206, media_type=BUNDLE_MEDIA_TYPE, headers=headers)
