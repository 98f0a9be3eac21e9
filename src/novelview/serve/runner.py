"""What the worker does for one job: call the pipeline, then write the result files.

File names are fixed patterns (``input.png``, ``view_000.png``, ``orbit.gif``, ``orbit.mp4``, ``grid.png``); the
client never names a file. PNGs are the model's output at its native size; the animation and video are enlarged
by an integer factor with nearest-neighbour sampling (pixels stay faithful) so they are watchable as downloads.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from PIL import Image

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


def make_runner(pipeline: Any, *, video: bool) -> Runner:
    """A runner for :class:`~novelview.serve.jobs.JobManager` around a loaded pipeline."""

    def run(job: Job, progress: Callable[[int, int], None]) -> list[ResultFile]:
        payload: JobPayload = job.payload
        params = payload.params
        image = payload.image
        if params.mode == "view":
            views = pipeline.synthesize(
                image,
                azimuth=params.azimuth,
                elevation=params.elevation,
                steps=params.steps,
                guidance=params.guidance,
                sampler=params.sampler,
                seed=job.seed,
                progress=progress,
            )
        else:
            # Frame 0 of an orbit at the input's elevation is the input itself (the pipeline does not redo it).
            views = pipeline.orbit(
                image,
                n_views=params.views,
                elevation=params.elevation,
                stochastic=params.stochastic,
                steps=params.steps,
                guidance=params.guidance,
                sampler=params.sampler,
                seed=job.seed,
                progress=progress,
            )
        return write_results(job.directory, image, list(views), orbit=params.mode == "orbit", video=video)

    return run


def make_warmup(pipeline: Any) -> Callable[[], None]:
    """One single-step view of a blank picture: loads the sampler stack and touches every layer once."""

    def warmup() -> None:
        blank = Image.new("RGB", (8, 8), (255, 255, 255))
        pipeline.synthesize(pipeline.preprocess(blank), azimuth=30.0, steps=1, guidance=1.0, seed=0)

    return warmup


def write_results(
    directory: Path, image: Optional[Image.Image], views: list[Image.Image], *, orbit: bool, video: bool
) -> list[ResultFile]:
    files: list[ResultFile] = []
    if image is not None:
        _save(image, directory / "input.png")
        files.append(ResultFile("input.png", "image/png", "input"))
    for i, view in enumerate(views):
        name = f"view_{i:03d}.png"
        _save(view.convert("RGB"), directory / name)
        files.append(ResultFile(name, "image/png", "view"))
    if orbit and views:
        frames = [_enlarge(v.convert("RGB")) for v in views]
        _save_gif(frames, directory / "orbit.gif")
        files.append(ResultFile("orbit.gif", "image/gif", "animation"))
        if video:
            try:
                _save_mp4(frames, directory / "orbit.mp4")
                files.append(ResultFile("orbit.mp4", "video/mp4", "video"))
            except Exception:  # noqa: BLE001 - the GIF is enough; a broken ffmpeg must not fail the job
                log.warning("could not write orbit.mp4", exc_info=True)
        _save(_grid([v.convert("RGB") for v in views]), directory / "grid.png")
        files.append(ResultFile("grid.png", "image/png", "grid"))
    return files


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _save(img: Image.Image, path: Path) -> None:
    # Write then rename: a reader never sees half a file.
    tmp = _tmp(path)
    img.save(tmp, format="PNG")
    os.replace(tmp, path)


def _enlarge(img: Image.Image) -> Image.Image:
    factor = max(1, -(-ANIMATION_MIN_SIDE // max(1, min(img.size))))
    if factor == 1:
        return img
    return img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)


def _save_gif(frames: list[Image.Image], path: Path) -> None:
    tmp = _tmp(path)
    frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=int(1000 / FPS), loop=0)
    os.replace(tmp, path)


def _save_mp4(frames: list[Image.Image], path: Path) -> None:
    import imageio_ffmpeg

    # H.264 in yuv420p needs even sides; 16 keeps every decoder happy.
    w, h = frames[0].size
    w16, h16 = -(-w // 16) * 16, -(-h // 16) * 16
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")  # keep the .mp4 suffix: ffmpeg picks the muxer by it
    writer = imageio_ffmpeg.write_frames(
        str(tmp),
        (w16, h16),
        fps=FPS,
        codec="libx264",
        pix_fmt_out="yuv420p",
        macro_block_size=1,
        ffmpeg_log_level="error",
        output_params=["-movflags", "+faststart"],
    )
    try:
        writer.send(None)
        for frame in frames:
            if frame.size != (w16, h16):
                canvas = Image.new("RGB", (w16, h16), (255, 255, 255))
                canvas.paste(frame, (0, 0))
                frame = canvas
            writer.send(np.ascontiguousarray(np.asarray(frame, dtype=np.uint8)))
    finally:
        writer.close()
    os.replace(tmp, path)


def _grid(views: list[Image.Image], columns: int = 8) -> Image.Image:
    from novelview.images import make_grid

    return make_grid([views[i : i + columns] for i in range(0, len(views), columns)])
