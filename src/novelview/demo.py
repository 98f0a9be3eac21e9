"""The main job (`novelview demo`, `make demo`): an orbit of novel views of a held-out object, next to the truth.

One picture of an object the model has never seen goes in; 24 views around it come out, generated one after
another with stochastic conditioning, and are compared with the renderer's ground truth at the same cameras.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from novelview import images
from novelview.data.atomic import write_text_atomic
from novelview.errors import DataError
from novelview.sampling import SamplingSettings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "objects"


@dataclass
class DemoResult:
    out_dir: Path
    orbit_gif: Path
    compare_png: Path
    psnr: float
    ssim: float
    copy_psnr: float
    copy_ssim: float
    seconds: float


def _example_scene(example: str | Path | None):
    from novelview.data.formats import open_dataset

    root = EXAMPLES
    name = None
    if example is not None:
        path = Path(example)
        if path.is_dir() and (path / "rgb").is_dir():
            root, name = path.parent, path.name
        elif path.is_dir():
            raise DataError(f"--example {example}: a folder, but not an SRN object (it has no rgb/ folder)")
        else:
            name = str(example)
    if not root.is_dir():
        raise DataError(f"{root}: example objects not found; run `python scripts/make_examples.py`")
    scenes = {s.name: s for s in open_dataset(root, format="srn")}
    if name is None:
        return scenes[sorted(scenes)[0]]
    if name not in scenes:
        raise DataError(f"example {name!r} not found; available: {', '.join(sorted(scenes))}")
    return scenes[name]


def run_demo(
    checkpoint: str | Path | None = None,
    example: str | Path | None = None,
    out_dir: str | Path = "outputs/demo",
    settings: SamplingSettings | None = None,
    upscale: int = 4,
    progress: bool = True,
) -> DemoResult:
    """Generate the demo orbit for ``example`` (default: the first shipped example) and score it.

    ``settings`` default to ``SamplingSettings(stochastic=True)`` (seed 0, the checkpoint's guidance)."""
    import time

    from novelview.data.formats import load_view
    from novelview.pipeline import Pipeline

    settings = SamplingSettings(stochastic=True) if settings is None else settings
    scene = _example_scene(example)
    pipe = Pipeline.from_checkpoint(checkpoint)
    size = pipe.image_size
    n_views = scene.num_views
    truth = torch.stack([load_view(scene, i, size)[0] for i in range(n_views)])
    bar, on_step = _progress_bar((n_views - 1) * settings.steps, progress)
    start = time.perf_counter()
    frames = pipe.orbit(scene.image_paths[0], n_views=n_views, input_pose=scene.poses[0], settings=settings,
                        progress=on_step)
    seconds = time.perf_counter() - start
    bar.close()
    generated = torch.stack([images.pil_to_tensor(f) for f in frames])
    scores = _scores(generated, truth)

    out = Path(out_dir)

    def big(x: torch.Tensor) -> Image.Image:
        return images.enlarge(images.to_pil(x), upscale)

    pairs = [images.make_grid([[big(g), big(t)]], padding=4) for g, t in zip(generated, truth)]
    orbit_gif = images.save_animation(pairs, out / "orbit.gif", fps=8.0)
    every = max(1, n_views // 6)
    shown = list(range(every, n_views, every))[:6]
    rows = [
        [big(truth[0])] + [big(generated[i]) for i in shown],
        [big(truth[0])] + [big(truth[i]) for i in shown],
    ]
    compare_png = images.save_image(images.make_grid(rows, padding=4), out / "compare.png")
    metrics = {"example": scene.name, "checkpoint": str(checkpoint or "default"), "views": n_views,
               "steps": settings.steps, "seed": settings.seed, "seconds": seconds,
               "compare_columns": ["input"] + [f"view {i}" for i in shown], **scores}
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2))
    return DemoResult(out, orbit_gif, compare_png, seconds=seconds, **scores)


def _progress_bar(total: int, show: bool):
    """A tqdm bar and the ``progress(done, total)`` callback that moves it."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="orbit", unit="step", disable=not show, dynamic_ncols=True)

    def on_step(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return bar, on_step


def _scores(generated: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """PSNR / SSIM of the novel views and of the copy-the-input baseline on the same views. Frame 0 is the input
    itself, so only the others count."""
    from novelview.evaluation.metrics import psnr, ssim

    novel_pred, novel_true = generated[1:], truth[1:]
    copy = truth[:1].expand_as(novel_true)
    return {
        "psnr": psnr(novel_pred, novel_true).mean().item(),
        "ssim": ssim(novel_pred, novel_true).mean().item(),
        "copy_psnr": psnr(copy, novel_true).mean().item(),
        "copy_ssim": ssim(copy, novel_true).mean().item(),
    }
