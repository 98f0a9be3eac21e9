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
from novelview.errors import ConfigError, DataError

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
    steps: int = 25,
    guidance: float | None = None,
    seed: int = 0,
    upscale: int = 4,
    progress: bool = True,
) -> DemoResult:
    """Generate the demo orbit for ``example`` (default: the first shipped example) and score it."""
    import time

    from tqdm.auto import tqdm

    from novelview.data.formats import load_view
    from novelview.evaluation.metrics import psnr as psnr_fn
    from novelview.evaluation.metrics import ssim as ssim_fn
    from novelview.pipeline import Pipeline

    if steps < 1 or seed < 0:
        raise ConfigError(f"need --steps >= 1 and --seed >= 0, got {steps} and {seed}")
    scene = _example_scene(example)
    pipe = Pipeline.from_checkpoint(checkpoint)
    size = pipe.image_size
    n_views = scene.num_views
    truth = torch.stack([load_view(scene, i, size)[0] for i in range(n_views)])
    input_path = scene.image_paths[0]

    bar = tqdm(total=(n_views - 1) * steps, desc="orbit", unit="step", disable=not progress, dynamic_ncols=True)

    def on_step(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    start = time.perf_counter()
    frames = pipe.orbit(
        input_path, n_views=n_views, stochastic=True, input_pose=scene.poses[0], steps=steps, guidance=guidance,
        seed=seed, progress=on_step,
    )
    seconds = time.perf_counter() - start
    bar.close()
    generated = torch.stack([images.pil_to_tensor(f) for f in frames])

    # Frame 0 is the input itself; score the 23 novel views, and the copy-the-input baseline on the same views.
    novel_pred, novel_true = generated[1:], truth[1:]
    copy = truth[:1].expand_as(novel_true)
    scores = {
        "psnr": psnr_fn(novel_pred, novel_true).mean().item(),
        "ssim": ssim_fn(novel_pred, novel_true).mean().item(),
        "copy_psnr": psnr_fn(copy, novel_true).mean().item(),
        "copy_ssim": ssim_fn(copy, novel_true).mean().item(),
    }

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def big(x: torch.Tensor) -> Image.Image:
        return images.to_pil(x).resize((size * upscale, size * upscale), Image.NEAREST)

    pairs = [images.make_grid([[big(g), big(t)]], padding=4) for g, t in zip(generated, truth)]
    orbit_gif = out / "orbit.gif"
    pairs[0].save(orbit_gif, save_all=True, append_images=pairs[1:], duration=125, loop=0, disposal=1)
    every = max(1, n_views // 6)
    shown = list(range(every, n_views, every))[:6]
    rows = [
        [big(truth[0])] + [big(generated[i]) for i in shown],
        [big(truth[0])] + [big(truth[i]) for i in shown],
    ]
    compare_png = out / "compare.png"
    images.make_grid(rows, padding=4).save(compare_png)
    (out / "metrics.json").write_text(
        json.dumps(
            {
                "example": scene.name,
                "checkpoint": str(checkpoint or "default"),
                "views": n_views,
                "steps": steps,
                "seed": seed,
                "seconds": seconds,
                "compare_columns": ["input"] + [f"view {i}" for i in shown],
                **scores,
            },
            indent=2,
        )
    )
    return DemoResult(out, orbit_gif, compare_png, seconds=seconds, **scores)
