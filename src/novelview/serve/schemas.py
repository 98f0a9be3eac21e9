"""Request and response models of the HTTP API (they are what ``/openapi.json`` documents).

Ranges are deliberately tight: every accepted job must finish in bounded time and memory on a CPU server, and a
value outside them is answered with ``422`` and a message naming the field, never with a crashed worker.
"""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from novelview.sampling import MAX_GUIDANCE

MAX_STEPS = 200
MAX_VIEWS = 48
MAX_SEED = 2**32 - 1
SAMPLERS = ("dpmpp", "ddim", "ddpm")

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


class JobParams(BaseModel):
    """What to synthesize. Sent as the JSON text of the multipart form field ``params``."""

    # extra="forbid": a misspelt field ("step") must be an error, not a silently ignored wish.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    mode: Literal["view", "orbit"] = Field(
        "view", description="'view': one target camera (azimuth/elevation); 'orbit': `views` cameras around the object"
    )
    azimuth: float = Field(
        60.0, ge=-180.0, le=180.0, description="view mode: degrees around the object, relative to the input view"
    )
    elevation: Optional[float] = Field(
        None,
        gt=-90.0,
        lt=90.0,
        description="degrees up (+) or down (-) relative to the input view; null = the input's own elevation",
    )
    views: int = Field(
        8, ge=2, le=MAX_VIEWS, description="orbit mode: frames evenly spaced in azimuth; frame 0 is the input view"
    )
    stochastic: bool = Field(True, description="orbit mode: 3DiM stochastic conditioning on earlier frames")
    steps: int = Field(25, ge=1, le=MAX_STEPS, description="denoising steps per view")
    guidance: Optional[float] = Field(
        None, ge=0.0, le=MAX_GUIDANCE, description="classifier-free guidance weight (1 = off); null = the model's default"
    )
    sampler: Literal["dpmpp", "ddim", "ddpm"] = Field("dpmpp", description="sampler")
    strength: float = Field(
        1.0, gt=0.0, le=1.0, description="3D-aware models: below 1, each view starts from the model's render of the "
        "input at the target camera and runs this fraction of the steps (sharper at 1, more 3D-consistent lower)")
    seed: Optional[int] = Field(None, ge=0, le=MAX_SEED, description="random seed; null = the server picks one")


class FileInfo(BaseModel):
    name: str = Field(description="server-generated file name")
    url: str
    media_type: str
    kind: Literal["input", "view", "animation", "video", "grid", "capture"] = Field(
        description="capture: the orbit's views with their cameras, a nerfstudio / instant-ngp transforms.json + "
        "images/ in a zip, for fitting a NeRF or Gaussian splat")


class Progress(BaseModel):
    done: int = Field(description="denoising steps finished")
    total: int = Field(description="denoising steps of the whole job (0 until the first step)")
    fraction: float


class JobInfo(BaseModel):
    id: str
    status: JobStatus
    params: JobParams
    seed: int = Field(description="the seed actually used (reproduces the result)")
    progress: Progress
    queue_position: Optional[int] = Field(None, description="jobs ahead of this one (queued jobs only)")
    elapsed_s: Optional[float] = Field(None, description="seconds since the job started running")
    eta_s: Optional[float] = Field(None, description="estimated seconds until the job finishes")
    error: Optional[str] = None
    files: list[FileInfo] = Field(default_factory=list, description="results (succeeded jobs only)")
    created_at: float = Field(description="Unix time the job was accepted")
    events_url: str
    result_url: str


class NewJobInfo(JobInfo):
    token: str = Field(
        description="the job's secret: send it as `Authorization: Bearer <token>` on every request about the job "
        "(browsers get it as an HttpOnly cookie scoped to the job's URLs). Nobody else can see, download or cancel "
        "the job; it is shown only in this answer"
    )


class ResultInfo(BaseModel):
    id: str
    seed: int
    files: list[FileInfo]


class ModelInfo(BaseModel):
    checkpoint: str = Field(description="checkpoint directory name (never a server path)")
    preset: Optional[str]
    image_size: int
    objective: str
    lifts: bool = Field(False, description="3D-aware model (a lifting module): jobs may set strength below 1")
    parameters: Optional[int] = None
    camera: dict = Field(default_factory=dict, description="camera statistics of the training data")
    presets: list[str] = Field(default_factory=list, description="model presets this server knows")
    samplers: list[str]
    video: bool = Field(False, description="orbits also come as MP4")
    defaults: JobParams
    limits: dict[str, Union[int, float]]


class HealthInfo(BaseModel):
    status: Literal["ok", "degraded"]
    worker_alive: bool
    ready: bool = Field(description="false while the model's warm-up run is still going")
    running: int = Field(description="jobs running (0 or 1)")
    queued: int
    max_queue: int


class ErrorInfo(BaseModel):
    detail: str = Field(description="what went wrong, in words meant for the user")


class ValidationErrorInfo(ErrorInfo):
    errors: list[dict] = Field(default_factory=list, description="per-field details (loc, msg, type)")


def describe_validation_error(err: ValidationError | list, prefix: str = "") -> str:
    """One readable line from pydantic's errors: ``steps: Input should be less than or equal to 200; ...``."""
    errors = err.errors() if isinstance(err, ValidationError) else err
    parts = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path")]
        where = ".".join(loc) or prefix or "request"
        parts.append(f"{where}: {e.get('msg', 'invalid value')}")
    return "; ".join(parts) or "invalid request"
