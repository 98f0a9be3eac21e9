"""Jobs: submit, status, progress stream, results, files, cancel.

Every route about one job needs the token its submission returned: ``Authorization: Bearer <token>``, or the
``job_token`` cookie the submission set for the job's own URLs (HttpOnly, SameSite=Strict), which is how the
page, its event stream and its ``<img>`` tags carry it. An unknown job and a wrong token get the same 404.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Optional
from uuid import UUID

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError

from novelview.serve import schemas
from novelview.serve.jobs import Job, JobManager, JobSnapshot, QueueFull, ShuttingDown
from novelview.serve.routes.preprocess import UPLOAD_RESPONSES
from novelview.serve.runner import JobPayload
from novelview.serve.state import ServeState, get_state

router = APIRouter(prefix="/api/jobs")

TOKEN_COOKIE = "job_token"
_KEEPALIVE_S = 10.0
_FILE_NAME_PATTERN = r"^[a-z0-9_]{1,40}\.(png|gif|mp4|zip)$"
_JOB_ID_DOC = "job id (32 hex digits, as returned by POST /api/jobs)"
# Our 422 bodies carry a readable `detail` string (plus `errors`), not FastAPI's bare list.
_NOT_FOUND_DOC = {
    404: {"model": schemas.ErrorInfo, "description": "unknown or expired job, or not this client's (no token)"},
    422: {"model": schemas.ValidationErrorInfo, "description": "malformed job id or file name"},
}
_bearer = HTTPBearer(auto_error=False, description="the token POST /api/jobs returned with the job")
_cookie = APIKeyCookie(name=TOKEN_COOKIE, auto_error=False, description="set by POST /api/jobs for the job's URLs")


def owned_job(
    job_id: UUID = PathParam(..., description=_JOB_ID_DOC),
    state: ServeState = Depends(get_state),
    bearer: Optional[HTTPAuthorizationCredentials] = Depends(_bearer),
    cookie: Optional[str] = Depends(_cookie),
) -> Job:
    """The job in the path, if the request carries its token (dependency of every per-job route)."""
    job = state.jobs.owned(job_id.hex, bearer.credentials if bearer is not None else cookie)
    if job is None:
        raise HTTPException(404, f"no job {job_id.hex} for this client (unknown, expired and cleaned up, or "
                                 "submitted by someone else: send the token that POST /api/jobs returned)")
    return job


def job_info(snap: JobSnapshot) -> dict[str, Any]:
    base = f"/api/jobs/{snap.id}"
    fraction = snap.done / snap.total if snap.total else (1.0 if snap.status == "succeeded" else 0.0)
    return schemas.JobInfo(
        id=snap.id,
        status=snap.status,  # type: ignore[arg-type]
        params=snap.payload.params,
        seed=snap.seed,
        progress=schemas.Progress(done=snap.done, total=snap.total, fraction=round(fraction, 4)),
        queue_position=snap.queue_position,
        elapsed_s=None if snap.elapsed_s is None else round(snap.elapsed_s, 3),
        eta_s=None if snap.eta_s is None else round(snap.eta_s, 2),
        error=snap.error,
        files=files_info(snap) if snap.status == "succeeded" else [],
        created_at=snap.created_at,
        events_url=f"{base}/events",
        result_url=f"{base}/result",
    ).model_dump(mode="json")


def files_info(snap: JobSnapshot) -> list[schemas.FileInfo]:
    return [
        schemas.FileInfo(name=f.name, url=f"/api/jobs/{snap.id}/files/{f.name}", media_type=f.media_type,
                         kind=f.kind)  # type: ignore[arg-type]
        for f in snap.files
    ]


@router.post(
    "",
    status_code=202,
    response_model=schemas.NewJobInfo,
    responses={
        **UPLOAD_RESPONSES,
        429: {"model": schemas.ErrorInfo, "description": "queue full; retry after `Retry-After` seconds"},
        503: {"model": schemas.ErrorInfo, "description": "the server is shutting down"},
    },
    summary="Submit a synthesis job",
)
async def submit(
    image: UploadFile = File(..., description="the input view: PNG, JPEG, WebP, GIF or BMP"),
    params: str = Form(
        "{}",
        description="JSON object of JobParams (mode, azimuth, elevation, views, stochastic, steps, guidance, "
        "sampler, seed, strength); omitted fields take their defaults",
    ),
    state: ServeState = Depends(get_state),
) -> JSONResponse:
    job_params = _parse_params(params)
    if job_params.steps > state.max_steps:
        raise HTTPException(422, f"invalid parameters: steps: at most {state.max_steps} for this model")
    if job_params.strength < 1.0 and not state.model_info.get("lifts"):
        raise HTTPException(422, "invalid parameters: strength: below 1 needs a 3D-aware model (a -3d preset); "
                                 "this model has no render to start from, use 1")
    _check_elevation(job_params, state)
    manager = state.jobs
    if manager.stats()["queued"] >= manager.max_queue:
        # Refuse before decoding: under overload, a rejected request should cost next to nothing.
        raise _queue_full(manager)
    seen = await state.read_upload(image)
    try:
        job = manager.submit(JobPayload(job_params, seen), seed=job_params.seed)
    except QueueFull as err:
        raise _queue_full(manager, err) from None
    except ShuttingDown:
        raise HTTPException(503, "the server is shutting down; try again when it is back") from None
    info = {**job_info(manager.snapshot(job)), "token": job.token}
    response = JSONResponse(info, status_code=202, headers={"Location": f"/api/jobs/{job.id}"})
    response.set_cookie(TOKEN_COOKIE, job.token, max_age=int(state.settings.job_ttl_s) + 60,
                        path=f"/api/jobs/{job.id}", httponly=True, samesite="strict")
    return response


@router.get("/{job_id}", response_model=schemas.JobInfo, responses=_NOT_FOUND_DOC, summary="Job status")
async def get_job(job: Job = Depends(owned_job), state: ServeState = Depends(get_state)) -> dict[str, Any]:
    return job_info(state.jobs.snapshot(job))


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}},
                     "description": "`event: progress` with a JobInfo on every change; `event: end` last"},
               **_NOT_FOUND_DOC},
    summary="Progress stream (server-sent events)",
)
async def job_events(
    request: Request, job: Job = Depends(owned_job), state: ServeState = Depends(get_state)
) -> Response:
    return StreamingResponse(
        _event_stream(request, state.jobs, job),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _event_stream(request: Request, manager: JobManager, job: Job) -> AsyncIterator[str]:
    watcher = manager.watch(job)
    try:
        yield "retry: 2000\n\n"
        seen = -1
        while True:
            watcher.event.clear()  # before reading: a change after this read wakes the wait below
            snap = manager.snapshot(job)
            if snap.terminal:
                yield _sse("end", job_info(snap))
                return
            if snap.version != seen:
                seen = snap.version
                yield _sse("progress", job_info(snap))
            try:
                await asyncio.wait_for(watcher.event.wait(), timeout=_KEEPALIVE_S)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    return
                yield ": keepalive\n\n"
    finally:
        manager.unwatch(job, watcher)


@router.get(
    "/{job_id}/result",
    response_model=schemas.ResultInfo,
    responses={**_NOT_FOUND_DOC, 409: {"model": schemas.ErrorInfo, "description": "the job has not succeeded (yet)"}},
    summary="Result files of a finished job",
)
async def job_result(job: Job = Depends(owned_job), state: ServeState = Depends(get_state)) -> dict[str, Any]:
    snap = state.jobs.snapshot(job)
    if snap.status != "succeeded":
        detail = f"job is {snap.status}" + (f": {snap.error}" if snap.error else "")
        raise HTTPException(409, detail)
    return schemas.ResultInfo(id=snap.id, seed=snap.seed, files=files_info(snap)).model_dump(mode="json")


@router.get(
    "/{job_id}/files/{name}",
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "image/gif": {}, "video/mp4": {}, "application/zip": {}}},
               **_NOT_FOUND_DOC},
    summary="Download one result file",
)
async def job_file(
    name: str = PathParam(..., pattern=_FILE_NAME_PATTERN, description="a name from the job's file list"),
    job: Job = Depends(owned_job),
    state: ServeState = Depends(get_state),
) -> Response:
    path = state.jobs.result_path(job, name)  # None unless `name` is in the server-generated list
    missing = HTTPException(404, f"job {job.id} has no file {name!r}")
    if path is None:
        raise missing
    try:
        # Read now (results are small) rather than stream later: a cleanup that deletes the job in between
        # must give a 404, not a half-sent response.
        data = await run_in_threadpool(path.read_bytes)
    except FileNotFoundError:
        raise missing from None
    return Response(
        data,
        media_type=job.files[name].media_type,
        headers={"Content-Disposition": f'inline; filename="{name}"', "Cache-Control": "private, max-age=3600"},
    )


@router.delete(
    "/{job_id}",
    response_model=schemas.JobInfo,
    responses=_NOT_FOUND_DOC,
    summary="Cancel a queued/running job (it stops at its next denoising step), or delete a finished one",
)
async def cancel_job(job: Job = Depends(owned_job), state: ServeState = Depends(get_state)) -> JSONResponse:
    manager = state.jobs
    if not job.terminal:
        manager.cancel(job)
        return JSONResponse(job_info(manager.snapshot(job)))
    response = JSONResponse(job_info(manager.snapshot(job)))
    manager.delete(job)
    response.delete_cookie(TOKEN_COOKIE, path=f"/api/jobs/{job.id}", httponly=True, samesite="strict")
    return response


def _check_elevation(params: schemas.JobParams, state: ServeState) -> None:
    """Refuse, before the job is queued, a relative elevation that would take the camera over a pole: the
    input picture's camera sits at the model's input elevation (``GET /api/model``: ``camera``)."""
    from novelview.pipeline import elevation_error

    if params.elevation is None:
        return
    try:
        input_elevation, low, high = state.pipeline.elevation_range()
    except Exception:  # noqa: BLE001 - a pipeline without cameras: the schema's bounds are all there is
        return
    if not low < params.elevation < high:
        raise HTTPException(422, "invalid parameters: " + elevation_error(params.elevation, input_elevation))


def _parse_params(text: str) -> schemas.JobParams:
    try:
        return schemas.JobParams.model_validate_json(text or "{}")
    except ValidationError as err:
        errors = err.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            raise HTTPException(422, "params: not valid JSON (expected an object such as {\"steps\": 20})") from None
        if any(e.get("type") == "model_type" for e in errors):
            raise HTTPException(422, "params: expected a JSON object such as {\"steps\": 20}") from None
        raise HTTPException(422, "invalid parameters: " + schemas.describe_validation_error(errors)) from None


def _queue_full(manager: JobManager, err: Optional[QueueFull] = None) -> HTTPException:
    retry = err.retry_after_s if err is not None else manager.retry_after()
    return HTTPException(
        429,
        f"the server is busy ({manager.max_queue} jobs already waiting); try again in {retry} s",
        headers={"Retry-After": str(retry)},
    )


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
