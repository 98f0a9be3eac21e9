"""What one app owns (settings, pipeline, job manager, results directory, page files) and how handlers reach it.

Everything is created by :func:`novelview.serve.app.create_app` and hung on ``app.state``; route handlers get it
through the :func:`get_state` dependency, so no module holds state and several apps can run side by side.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional

import anyio
from fastapi import HTTPException, Request, UploadFile
from PIL import Image

from novelview.data.atomic import HeldDirectory
from novelview.errors import NovelviewError
from novelview.serve.jobs import JobManager
from novelview.serve.uploads import ImageLimits, UploadError, decode_image

STATIC_FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}


@dataclass
class ServeSettings:
    """Server limits and policies; every one is a keyword argument of ``create_app`` too."""

    max_queue: int = 8  # jobs waiting (the running one not counted); beyond it: 429
    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_side: int = 16_384  # pixels of either side of an upload
    max_aspect: float = 10.0  # long side / short side of an upload
    job_ttl_s: float = 3600.0  # finished jobs and their files are deleted after this long...
    max_jobs: int = 100  # ...or when more than this many are kept
    results_dir: Optional[Path] = None  # parent of the server's own results directory (default: system temp)
    video: Optional[bool] = None  # MP4 next to the GIF; None = when imageio-ffmpeg works
    preprocess_concurrency: int = 2  # simultaneous image decodes (bounds memory under many uploads)
    warmup: bool = True  # run one tiny synthesis when the worker starts, so the first user does not pay for it
    # Host names served besides loopback ones (localhost, 127.0.0.0/8, ::1); "*" serves any (no DNS-rebinding
    # protection: only behind a proxy that checks Host itself).
    allowed_hosts: tuple[str, ...] = ()

    @property
    def image_limits(self) -> ImageLimits:
        return ImageLimits(max_bytes=self.max_upload_bytes, max_pixels=self.max_pixels, max_side=self.max_side,
                           max_aspect=self.max_aspect)


@dataclass
class ServeState:
    settings: ServeSettings
    pipeline: Any
    jobs: JobManager
    results: HeldDirectory  # the job manager's root, held while the app lives (see novelview.data.atomic)
    model_info: dict[str, Any]
    max_steps: int
    video: bool
    static: dict[str, bytes] = field(default_factory=dict)
    # Bounds simultaneous decodes; made in the serving event loop (lifespan, or the first upload without one).
    decode_limiter: Optional[anyio.CapacityLimiter] = None

    async def read_upload(self, upload: UploadFile) -> Image.Image:
        """Decode an uploaded picture and preprocess it exactly as the model will see it (HTTP errors named)."""
        # read(limit + 1): never more than the limit in memory, whatever the client declared.
        data = await upload.read(self.settings.max_upload_bytes + 1)
        if self.decode_limiter is None:
            self.decode_limiter = anyio.CapacityLimiter(self.settings.preprocess_concurrency)
        # Decoding a large picture at a few times the model's size is all preprocessing needs.
        image_size = int(getattr(self.pipeline, "image_size", 0) or 0)

        def decode_and_preprocess() -> Image.Image:
            image = decode_image(data, self.settings.image_limits, min_side=4 * image_size or None)
            return self.pipeline.preprocess(image)

        try:
            return await anyio.to_thread.run_sync(decode_and_preprocess, limiter=self.decode_limiter)
        except UploadError as err:
            raise HTTPException(err.status, err.message) from None
        except NovelviewError as err:
            raise HTTPException(422, str(err)) from None


def get_state(request: Request) -> ServeState:
    """FastAPI dependency: the state of the app serving this request."""
    return request.app.state.serve


def read_static() -> dict[str, bytes]:
    base = resources.files("novelview.serve") / "static"
    return {name: (base / name).read_bytes() for name in STATIC_FILES}


def load_pipeline(source: Any) -> tuple[Any, str]:
    """``(pipeline, checkpoint name)`` from a loaded pipeline, a checkpoint or run directory, or None (default)."""
    if source is None or isinstance(source, (str, os.PathLike)):
        from novelview.checkpoint import resolve_checkpoint
        from novelview.pipeline import Pipeline

        path = resolve_checkpoint(source)  # a run directory means its latest checkpoint
        return Pipeline.from_checkpoint(path), path.name
    return source, "in-memory pipeline"
