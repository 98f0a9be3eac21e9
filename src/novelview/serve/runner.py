"""What the worker does for one job: call the pipeline, then write the result files.

File names are fixed patterns (``input.png``, ``view_000.png``, ``orbit.gif``, ``orbit.mp4``, ``grid.png``,
``orbit_capture.zip``); the client never names a file. An orbit's ``orbit_capture.zip`` holds its views with
their cameras as a nerfstudio / instant-ngp capture (``transforms.json`` + ``images/``). PNGs are the model's
output at its native size; the animation and video are enlarged by an integer factor with nearest-neighbour
sampling (pixels stay faithful) so they are watchable as downloads.
"""

from __future__ import annotations

import logging
import tempfile
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

from PIL import Image

from novelview.data.atomic import write_atomic
from novelview.images import enlarge, make_grid, save_animation, save_image
from novelview.sampling import SamplingSettings
from novelview.serve.jobs import Job, ResultFile, Runner
from novelview.serve.schemas import JobParams

log = logging.getLogger("novelview.serve")

ANIMATION_MIN_SIDE = 256
FPS = 8


@dataclass(frozen=True)
class JobPayload:
    params: JobParams
    image: Optional[Image.Image]  # already preprocessed: exactly what the model sees

    def without_image(self) -> "JobPayload":
        return replace(self, image=None)


def ffmpeg_available() -> bool:
    try:
        import imageio_ffmpeg

        return Path(imageio_ffmpeg.get_ffmpeg_exe()).is_file()
    except Exception:  # noqa: BLE001 - any failure means "no video", never a failed server start
        return False


def job_settings(params: JobParams, seed: int) -> SamplingSettings:
    """How a job samples: the form's choices and the job's seed (stochastic conditioning only for orbits)."""
    return SamplingSettings(sampler=params.sampler, steps=params.steps, guidance=params.guidance, seed=seed,
                            stochastic=params.mode == "orbit" and params.stochastic, strength=params.strength)


def make_runner(pipeline: Any, *, video: bool) -> Runner:
    """A runner for :class:`~novelview.serve.jobs.JobManager` around a loaded pipeline."""

    def run(job: Job, progress: Callable[[int, int], None]) -> list[ResultFile]:
        payload: JobPayload = job.payload
        params, image = payload.params, payload.image
        settings = job_settings(params, job.seed)
        if params.mode == "view":
            views = pipeline.synthesize(image, azimuth=params.azimuth, elevation=params.elevation,
                                        settings=settings, progress=progress)
        else:
            # Frame 0 of an orbit at the input's elevation is the input itself (the pipeline does not redo it).
            views = pipeline.orbit(image, n_views=params.views, elevation=params.elevation, settings=settings,
                                   progress=progress)
        return write_results(job.directory, image, views, orbit=params.mode == "orbit", video=video)

    return run


def make_warmup(pipeline: Any) -> Callable[[], None]:
    """One single-step view of a blank picture: loads the sampler stack and touches every layer once."""

    def warmup() -> None:
        blank = Image.new("RGB", (8, 8), (255, 255, 255))
        pipeline.synthesize(pipeline.preprocess(blank), azimuth=30.0,
                            settings=SamplingSettings(steps=1, guidance=1.0, seed=0))

    return warmup


def write_results(
    directory: Path, image: Optional[Image.Image], views: list[Image.Image], *, orbit: bool, video: bool
) -> list[ResultFile]:
    """Each file is written atomically: a client polling the directory never reads half of one."""
    files: list[ResultFile] = []
    if image is not None:
        save_image(image, directory / "input.png")
        files.append(ResultFile("input.png", "image/png", "input"))
    for i, view in enumerate(views):
        name = f"view_{i:03d}.png"
        save_image(view.convert("RGB"), directory / name)
        files.append(ResultFile(name, "image/png", "view"))
    if orbit and views:
        frames = [enlarge(v.convert("RGB"), min_side=ANIMATION_MIN_SIDE) for v in views]
        save_animation(frames, directory / "orbit.gif", fps=FPS)
        files.append(ResultFile("orbit.gif", "image/gif", "animation"))
        if video:
            try:
                save_animation(frames, directory / "orbit.mp4", fps=FPS)
                files.append(ResultFile("orbit.mp4", "video/mp4", "video"))
            except Exception:  # noqa: BLE001 - the GIF is enough; a broken ffmpeg must not fail the job
                log.warning("could not write orbit.mp4", exc_info=True)
        columns = 8
        rows = [[v.convert("RGB") for v in views[i : i + columns]] for i in range(0, len(views), columns)]
        save_image(make_grid(rows), directory / "grid.png")
        files.append(ResultFile("grid.png", "image/png", "grid"))
        if hasattr(views, "save_transforms"):
            write_capture(views, directory / "orbit_capture.zip")
            files.append(ResultFile("orbit_capture.zip", "application/zip", "capture"))
    return files


def write_capture(views: Any, path: Path) -> Path:
    """Posed views (:class:`~novelview.pipeline.PosedViews`) as a zip of ``transforms.json`` + ``images/``."""
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".capture-") as tmp:
        folder = Path(tmp) / "capture"
        views.save_transforms(folder)

        def write(target: Path) -> None:
            with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                archive.write(folder / "transforms.json", "transforms.json")
                for image in sorted((folder / "images").iterdir()):
                    archive.write(image, f"images/{image.name}")

        return write_atomic(path, write)
