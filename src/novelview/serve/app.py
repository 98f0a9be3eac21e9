"""The FastAPI application: ``create_app(pipeline_or_checkpoint, ...)``.

Everything an app needs (pipeline, job manager, settings, results directory, page files) is created here, once,
and hung on ``app.state`` (:class:`~novelview.serve.state.ServeState`); the routers in
:mod:`novelview.serve.routes` reach it through a dependency, so there is no module-level state and tests can
run several apps side by side. The model is used only by the job worker thread.

Endpoints (all documented in ``/openapi.json``)::

    GET    /                           the demo page (static HTML/CSS/JS, no external resources)
    POST   /api/preprocess             multipart image -> PNG exactly as the model will see it
    POST   /api/jobs                   multipart image + JSON params -> 202 job + its token (429 when full)
    GET    /api/jobs/{id}              status, progress, ETA, result files            (these five need the
    GET    /api/jobs/{id}/events       server-sent events: the job's state on every change  job's token)
    GET    /api/jobs/{id}/result       the result files of a finished job (409 while it runs)
    GET    /api/jobs/{id}/files/{name} one result file; ``name`` must be in the job's server-generated list
    DELETE /api/jobs/{id}              cancel a queued/running job, or delete a finished one and its files
    GET    /api/health                 worker and queue state (counts, never job ids)
    GET    /api/model                  checkpoint info, presets, defaults and limits for the page

What the server promises about hostile and careless clients is in docs/security.md.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, AsyncIterator, Optional, Union

import anyio
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from novelview.data.atomic import held_directory, remove_stale
from novelview.serve import info, schemas
from novelview.serve.jobs import JobManager
from novelview.serve.routes import ROUTERS
from novelview.serve.runner import ffmpeg_available, make_runner, make_warmup
from novelview.serve.security import LOOPBACK_NAMES, HostOriginPolicy, SecurityHeaders
from novelview.serve.state import ServeSettings, ServeState, load_pipeline, read_static
from novelview.serve.uploads import BodySizeLimit

#: Multipart framing and the JSON params field on top of the image itself.
_FORM_OVERHEAD = 64 * 1024
#: Prefix of the results directories in the system temp folder (or ``results_dir``).
RESULTS_PREFIX = "novelview-serve-"


def create_app(
    pipeline_or_checkpoint: Union[Any, str, os.PathLike, None] = None,
    settings: Optional[ServeSettings] = None,
    **overrides: Any,
) -> FastAPI:
    """Build the app around a loaded ``Pipeline`` (or load one from a checkpoint directory, once, now).

    ``None`` loads the default checkpoint. Keyword arguments override fields of :class:`ServeSettings`.
    """
    settings = replace(settings or ServeSettings(), **overrides)
    pipeline, checkpoint_name = load_pipeline(pipeline_or_checkpoint)
    state = _build_state(settings, pipeline, checkpoint_name)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.decode_limiter = anyio.CapacityLimiter(settings.preprocess_concurrency)
        state.jobs.start()
        try:
            yield
        finally:
            await run_in_threadpool(state.jobs.shutdown)
            state.results.release()

    app = FastAPI(
        title="novelview",
        summary="Single-image novel view synthesis: web demo and HTTP API",
        version=info.version(),
        lifespan=lifespan,
    )
    app.state.serve = state
    app.state.pipeline = pipeline
    app.state.jobs = state.jobs
    app.state.settings = settings
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    for router in ROUTERS:
        app.include_router(router)
    # Added later = further out: every answer gets the security headers, the Host/Origin policy answers before
    # any body is read, and the size limit sees the raw stream before anything parses it.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes + _FORM_OVERHEAD,
                       upload_limit=settings.max_upload_bytes)
    app.add_middleware(HostOriginPolicy, allowed_hosts=(*LOOPBACK_NAMES, *settings.allowed_hosts))
    app.add_middleware(SecurityHeaders)
    return app


def _build_state(settings: ServeSettings, pipeline: Any, checkpoint_name: str) -> ServeState:
    video = ffmpeg_available() if settings.video is None else settings.video
    parent = Path(settings.results_dir) if settings.results_dir is not None else Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    # Servers killed with SIGKILL leave their directory, users' uploads included; nobody holds those any more.
    remove_stale(p for p in parent.iterdir() if p.name.startswith(RESULTS_PREFIX))
    # A fresh directory we own: cleanup may delete anything inside it and nothing outside it.
    results = held_directory(parent, RESULTS_PREFIX, mode=0o700)
    manager = JobManager(
        make_runner(pipeline, video=video),
        results.path,
        max_queue=settings.max_queue,
        ttl_s=settings.job_ttl_s,
        max_jobs=settings.max_jobs,
        warmup=make_warmup(pipeline) if settings.warmup else None,
    )
    return ServeState(
        settings=settings,
        pipeline=pipeline,
        jobs=manager,
        results=results,
        model_info=info.model_info(pipeline, checkpoint_name),
        max_steps=info.max_steps(pipeline),
        video=video,
        static=read_static(),
    )


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
    return JSONResponse(
        status_code=422,
        content={"detail": schemas.describe_validation_error(errors), "errors": jsonable_encoder(errors)},
    )


__all__ = ["RESULTS_PREFIX", "ServeSettings", "create_app"]
