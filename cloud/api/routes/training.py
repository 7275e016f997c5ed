"""Training through the API: queue a retraining job, list MLflow runs, follow a job."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from cloud.api.deps import Admin, Pool, Viewer, get_state
from cloud.background.jobs import JobInfo
from cloud.operations import audit
from cloud.training.jobs import (
    TrainingRun,
    TrainingRunCreate,
    enqueue_training,
    get_job,
    list_runs,
)

router = APIRouter(prefix="/api/v1/training", tags=["training"])


class TrainingQueued(BaseModel):
    """The queued ``train`` job; follow it at ``/api/v1/training/jobs/{job_id}``."""

    job_id: int


@router.post("/runs", response_model=TrainingQueued, status_code=202,
             summary="Retrain: queue a training job (MLflow-tracked, champion-gated)")
def post_run(pool: Pool, who: Admin, body: TrainingRunCreate) -> TrainingQueued:
    """Queue a ``train`` job; a cloud worker runs it and the gate decides on promotion."""
    with pool.connection() as conn, conn.transaction():
        job_id = enqueue_training(conn, body, who.name)
        audit.record(conn, who.name, "training.request", "job", str(job_id), before=None,
                     after=body.model_dump(mode="json"))
    return TrainingQueued(job_id=job_id)


@router.get("/runs", response_model=list[TrainingRun],
            summary="Training runs in MLflow, newest first, with the gate's decision")
async def get_runs(request: Request, who: Viewer,
                   profile: Annotated[str | None, Query(pattern="^[a-z][a-z0-9_]{0,31}$")]
                   = None,
                   limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[TrainingRun]:
    """Runs of the training experiment (MLflow's own UI shows the same store)."""
    config = get_state(request).settings.training
    return await run_in_threadpool(list_runs, config, profile=profile, limit=limit)


@router.get("/jobs/{job_id}", response_model=JobInfo, summary="A training job's state",
            responses={404: {"description": "no such job"}})
def get_training_job(pool: Pool, who: Viewer,
                     job_id: Annotated[int, PathParam(ge=1, le=2**62)]) -> JobInfo:
    """Queued, running, done or failed, with the last error."""
    with pool.connection() as conn:
        return get_job(conn, job_id)
