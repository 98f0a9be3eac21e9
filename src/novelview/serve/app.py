"""The FastAPI application: ``create_app(pipeline_or_checkpoint, ...)``.

Everything an app needs (pipeline, job manager, settings, cached static files) is created inside
:func:`create_app` and reached through closures, so there is no module-level state and tests can run several
apps side by side. The model is loaded once, here, and used only by the job worker thread.

Endpoints (all documented in ``/openapi.json``)::

    GET    /                           the demo page (static HTML/CSS/JS, no external resources)
    POST   /api/preprocess             multipart image -> PNG exactly as the model will see it
    POST   /api/jobs                   multipart image + JSON params -> 202 job (429 + Retry-After when full)
    GET    /api/jobs/{id}              status, progress, ETA, result files
    GET    /api/jobs/{id}/events       server-sent events: the job's state on every change; ends with the job
    GET    /api/jobs/{id}/result       the result files of a finished job (409 while it runs)
    GET    /api/jobs/{id}/files/{name} one result file; ``name`` must be in the job's server-generated list
    DELETE /api/jobs/{id}              cancel a queued/running job, or delete a finished one and its files
    GET    /api/health                 worker and queue state
    GET    /api/model                  checkpoint info, presets, defaults and limits for the page
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import tempfile
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, AsyncIterator, Optional, Union
from uuid import UUID

import anyio
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from PIL import Image
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from novelview.errors import NovelviewError
from novelview.serve import schemas
from novelview.serve.jobs import JobManager, JobSnapshot, QueueFull
from novelview.serve.runner import JobPayload, ffmpeg_available, make_runner, make_warmup
from novelview.serve.uploads import BodySizeLimit, ImageLimits, UploadError, decode_image

log = logging.getLogger("novelview.serve")

#: Multipart framing and the JSON params field on top of the image itself.
_FORM_OVERHEAD = 64 * 1024
_KEEPALIVE_S = 10.0
_STATIC_FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
_FILE_NAME_PATTERN = r"^[a-z0-9_]{1,40}\.(png|gif|mp4)$"
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "media-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@dataclass
class ServeSettings:
    """Server limits; every one is an argument of :func:`create_app` too."""

    max_queue: int = 8  # jobs waiting (the running one not counted); beyond it: 429
    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    job_ttl_s: float = 3600.0  # finished jobs and their files are deleted after this long...
    max_jobs: int = 100  # ...or when more than this many are kept
    results_dir: Optional[Path] = None  # parent of the server's own results directory (default: system temp)
    video: Optional[bool] = None  # MP4 next to the GIF; None = when imageio-ffmpeg works
    preprocess_concurrency: int = 2  # simultaneous image decodes (bounds memory under many uploads)
    warmup: bool = True  # run one tiny synthesis when the worker starts, so the first user does not pay for it


def create_app(
    pipeline_or_checkpoint: Union[Any, str, os.PathLike, None] = None,
    settings: Optional[ServeSettings] = None,
    **overrides: Any,
) -> FastAPI:
    """Build the app around a loaded ``Pipeline`` (or load one from a checkpoint directory, once, now).

    ``None`` loads the default checkpoint. Keyword arguments override fields of :class:`ServeSettings`.
    """
    settings = replace(settings or ServeSettings(), **overrides)
    pipeline, checkpoint_name = _load_pipeline(pipeline_or_checkpoint)
    image_limits = ImageLimits(max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels)
    video = ffmpeg_available() if settings.video is None else settings.video
    parent = Path(settings.results_dir) if settings.results_dir is not None else None
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    # A fresh directory we own: cleanup may delete anything inside it and nothing outside it.
    root = Path(tempfile.mkdtemp(prefix="novelview-serve-", dir=parent))
    manager = JobManager(
        make_runner(pipeline, video=video),
        root,
        max_queue=settings.max_queue,
        ttl_s=settings.job_ttl_s,
        max_jobs=settings.max_jobs,
        warmup=make_warmup(pipeline) if settings.warmup else None,
    )
    model_info = _model_info(pipeline, checkpoint_name)
    max_steps = _max_steps(pipeline)
    static = _read_static()
    # Bounds simultaneous decodes; made inside the serving event loop (lifespan, or the first request without one).
    limiter: dict[str, anyio.CapacityLimiter] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        limiter["decode"] = anyio.CapacityLimiter(settings.preprocess_concurrency)
        manager.start()
        try:
            yield
        finally:
            await run_in_threadpool(manager.shutdown)

    app = FastAPI(
        title="novelview",
        summary="Single-image novel view synthesis: web demo and HTTP API",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.pipeline = pipeline
    app.state.jobs = manager
    app.state.settings = settings

    # ------------------------------------------------------------------ errors

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
        return JSONResponse(
            status_code=422,
            content={"detail": schemas.describe_validation_error(errors), "errors": jsonable_encoder(errors)},
        )

    def not_found(job_id: UUID) -> HTTPException:
        return HTTPException(404, f"no job {job_id.hex} (unknown, or expired and cleaned up)")

    def lookup(job_id: UUID):
        job = manager.get(job_id.hex)
        if job is None:
            raise not_found(job_id)
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

    # ------------------------------------------------------------------ uploads

    async def read_image(upload: UploadFile) -> Image.Image:
        # read(limit + 1): never more than the limit in memory, whatever the client declared.
        data = await upload.read(settings.max_upload_bytes + 1)
        if "decode" not in limiter:
            limiter["decode"] = anyio.CapacityLimiter(settings.preprocess_concurrency)

        def decode_and_preprocess() -> Image.Image:
            image = decode_image(data, image_limits)
            return pipeline.preprocess(image)

        try:
            return await anyio.to_thread.run_sync(decode_and_preprocess, limiter=limiter["decode"])
        except UploadError as err:
            raise HTTPException(err.status, err.message) from None
        except NovelviewError as err:
            raise HTTPException(422, str(err)) from None

    # ------------------------------------------------------------------ page

    def page(name: str) -> Response:
        return Response(static[name], media_type=_STATIC_FILES[name], headers={"Cache-Control": "no-cache"})

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return page("index.html")

    @app.get("/static/{name}", include_in_schema=False)
    async def static_file(name: str) -> Response:
        if name not in static or name == "index.html":
            raise HTTPException(404, "not found")
        return page(name)

    # ------------------------------------------------------------------ API

    upload_responses = {
        413: {"model": schemas.ErrorInfo, "description": "upload larger than the limit"},
        422: {"model": schemas.ValidationErrorInfo, "description": "not a decodable image, or invalid parameters"},
    }

    @app.post(
        "/api/preprocess",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}, "description": "the model's input, as PNG"},
                   **upload_responses},
        summary="Preview exactly what the model will see",
    )
    async def preprocess(image: UploadFile = File(..., description="PNG, JPEG, WebP, GIF or BMP")) -> Response:
        seen = await read_image(image)
        buf = io.BytesIO()
        seen.save(buf, format="PNG")
        return Response(buf.getvalue(), media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.post(
        "/api/jobs",
        status_code=202,
        response_model=schemas.JobInfo,
        responses={
            **upload_responses,
            429: {"model": schemas.ErrorInfo, "description": "queue full; retry after `Retry-After` seconds"},
        },
        summary="Submit a synthesis job",
    )
    async def submit(
        image: UploadFile = File(..., description="the input view: PNG, JPEG, WebP, GIF or BMP"),
        params: str = Form(
            "{}",
            description="JSON object of JobParams (mode, azimuth, elevation, views, stochastic, steps, guidance, "
            "sampler, seed); omitted fields take their defaults",
        ),
    ) -> JSONResponse:
        job_params = _parse_params(params)
        if job_params.steps > max_steps:
            raise HTTPException(422, f"invalid parameters: steps: at most {max_steps} for this model")
        if manager.stats()["queued"] >= manager.max_queue:
            # Refuse before decoding: under overload, a rejected request should cost next to nothing.
            raise _queue_full(manager)
        seen = await read_image(image)
        try:
            job = manager.submit(JobPayload(job_params, seen), seed=job_params.seed)
        except QueueFull as err:
            raise _queue_full(manager, err) from None
        info = job_info(manager.snapshot(job))
        return JSONResponse(info, status_code=202, headers={"Location": f"/api/jobs/{job.id}"})

    job_id_doc = "job id (32 hex digits, as returned by POST /api/jobs)"
    # Our 422 bodies carry a readable `detail` string (plus `errors`), not FastAPI's bare list.
    not_found_doc = {
        404: {"model": schemas.ErrorInfo, "description": "unknown or expired job"},
        422: {"model": schemas.ValidationErrorInfo, "description": "malformed job id or file name"},
    }

    @app.get("/api/jobs/{job_id}", response_model=schemas.JobInfo, responses=not_found_doc, summary="Job status")
    async def get_job(job_id: UUID = PathParam(..., description=job_id_doc)) -> dict[str, Any]:
        return job_info(manager.snapshot(lookup(job_id)))

    @app.get(
        "/api/jobs/{job_id}/events",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}},
                         "description": "`event: progress` with a JobInfo on every change; `event: end` last"},
                   **not_found_doc},
        summary="Progress stream (server-sent events)",
    )
    async def job_events(request: Request, job_id: UUID = PathParam(..., description=job_id_doc)) -> Response:
        job = lookup(job_id)

        async def stream() -> AsyncIterator[str]:
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

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @app.get(
        "/api/jobs/{job_id}/result",
        response_model=schemas.ResultInfo,
        responses={**not_found_doc,
                   409: {"model": schemas.ErrorInfo, "description": "the job has not succeeded (yet)"}},
        summary="Result files of a finished job",
    )
    async def job_result(job_id: UUID = PathParam(..., description=job_id_doc)) -> dict[str, Any]:
        snap = manager.snapshot(lookup(job_id))
        if snap.status != "succeeded":
            detail = f"job is {snap.status}" + (f": {snap.error}" if snap.error else "")
            raise HTTPException(409, detail)
        return schemas.ResultInfo(id=snap.id, seed=snap.seed, files=files_info(snap)).model_dump(mode="json")

    @app.get(
        "/api/jobs/{job_id}/files/{name}",
        response_class=Response,
        responses={200: {"content": {"image/png": {}, "image/gif": {}, "video/mp4": {}}}, **not_found_doc},
        summary="Download one result file",
    )
    async def job_file(
        job_id: UUID = PathParam(..., description=job_id_doc),
        name: str = PathParam(..., pattern=_FILE_NAME_PATTERN, description="a name from the job's file list"),
    ) -> Response:
        job = lookup(job_id)
        path = manager.result_path(job, name)  # None unless `name` is in the server-generated list
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

    @app.delete(
        "/api/jobs/{job_id}",
        response_model=schemas.JobInfo,
        responses=not_found_doc,
        summary="Cancel a queued/running job (it stops at its next denoising step), or delete a finished one",
    )
    async def cancel_job(job_id: UUID = PathParam(..., description=job_id_doc)) -> dict[str, Any]:
        job = lookup(job_id)
        if job.terminal:
            info = job_info(manager.snapshot(job))
            manager.delete(job)
            return info
        manager.cancel(job)
        return job_info(manager.snapshot(job))

    @app.get("/api/health", response_model=schemas.HealthInfo, responses={503: {"model": schemas.HealthInfo}},
             summary="Liveness of the worker and queue length")
    async def health() -> JSONResponse:
        stats = manager.stats()
        alive = manager.worker_alive
        body = schemas.HealthInfo(
            status="ok" if alive else "degraded",
            worker_alive=alive,
            ready=manager.ready.is_set(),
            running=stats["running"],
            queued=stats["queued"],
            max_queue=manager.max_queue,
        ).model_dump(mode="json")
        return JSONResponse(body, status_code=200 if alive else 503)

    @app.get("/api/model", response_model=schemas.ModelInfo, summary="Checkpoint info, presets, defaults, limits")
    async def model() -> dict[str, Any]:
        return {
            **model_info,
            "video": video,
            "limits": {
                **model_info["limits"],
                "max_upload_bytes": settings.max_upload_bytes,
                "max_pixels": settings.max_pixels,
                "max_queue": settings.max_queue,
            },
        }

    # Outermost first: the size limit must see the raw stream before anything parses it.
    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes + _FORM_OVERHEAD,
                       upload_limit=settings.max_upload_bytes)
    return app


# ---------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------


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


def _load_pipeline(source: Any) -> tuple[Any, str]:
    if source is None or isinstance(source, (str, os.PathLike)):
        from novelview.checkpoint import resolve_checkpoint
        from novelview.pipeline import Pipeline

        path = resolve_checkpoint(source)  # a run directory means its latest checkpoint
        return Pipeline.from_checkpoint(path), path.name
    return source, "in-memory pipeline"


def _max_steps(pipeline: Any) -> int:
    config = getattr(pipeline, "config", None)
    timesteps = getattr(getattr(config, "diffusion", None), "num_train_timesteps", None)
    return min(schemas.MAX_STEPS, int(timesteps)) if isinstance(timesteps, int) and timesteps > 0 else schemas.MAX_STEPS


def _preset_name(model_cfg: dict[str, Any]) -> Optional[str]:
    """The preset a checkpoint's model config was built from (checkpoints store the fields, not the name)."""
    try:
        from novelview.models.presets import PRESETS, preset_config

        for name in PRESETS:
            try:
                if preset_config(name, model_cfg.get("image_size")).to_dict() == model_cfg:
                    return name
            except Exception:  # noqa: BLE001 - a preset that cannot take this size is simply not a match
                continue
    except Exception:  # noqa: BLE001 - informational only
        return None
    family = model_cfg.get("family")
    return f"custom {family}" if family else None


def _model_info(pipeline: Any, checkpoint_name: str) -> dict[str, Any]:
    """What ``GET /api/model`` says: names and numbers only, never a server path."""
    config = getattr(pipeline, "config", None)
    model_cfg = json.loads(json.dumps(dict(getattr(config, "model", {}) or {}), default=list))
    model = getattr(pipeline, "model", None)
    try:
        n_params = int(sum(p.numel() for p in model.parameters())) if model is not None else None
    except Exception:  # noqa: BLE001 - informational only
        n_params = None
    try:
        from novelview.models.presets import list_presets

        presets = list(list_presets())
    except Exception:  # noqa: BLE001 - the list is informational; a missing module must not stop the server
        presets = []
    try:
        camera = dict(pipeline.camera_defaults())
    except Exception:  # noqa: BLE001
        camera = {}
    defaults = schemas.JobParams()
    try:
        guidance = min(float(pipeline.default_guidance()), schemas.MAX_GUIDANCE)  # the form must accept its default
        defaults = defaults.model_copy(update={"guidance": guidance})
    except Exception:  # noqa: BLE001 - keep null: the pipeline picks
        pass
    image_size = getattr(pipeline, "image_size", None) or model_cfg.get("image_size") or 0
    return {
        "checkpoint": checkpoint_name,
        "preset": _preset_name(model_cfg) if model_cfg else None,
        "image_size": int(image_size),
        "objective": str(getattr(config, "objective", "diffusion")),
        "parameters": n_params,
        "camera": {k: v for k, v in camera.items() if isinstance(v, (int, float))},
        "presets": presets,
        "samplers": list(schemas.SAMPLERS),
        "defaults": defaults.model_dump(mode="json"),
        "limits": {
            "min_steps": 1, "max_steps": _max_steps(pipeline),
            "min_views": 2, "max_views": schemas.MAX_VIEWS,
            "min_guidance": 0.0, "max_guidance": schemas.MAX_GUIDANCE,
            "min_elevation": -89, "max_elevation": 89,
            "max_seed": schemas.MAX_SEED,
        },
    }


def _read_static() -> dict[str, bytes]:
    base = resources.files("novelview.serve") / "static"
    return {name: (base / name).read_bytes() for name in _STATIC_FILES}


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("novelview")
    except Exception:  # noqa: BLE001
        return "0"


class SecurityHeaders:
    """Pure ASGI (streams pass through untouched): CSP, nosniff, no referrer, no framing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # FastAPI's /docs page loads Swagger UI from a CDN; everything else must work with nothing external.
        strict = not scope["path"].startswith(("/docs", "/redoc"))

        async def add_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
                if strict:
                    headers += [(b"content-security-policy", _CSP.encode()), (b"x-frame-options", b"DENY")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, add_headers)
