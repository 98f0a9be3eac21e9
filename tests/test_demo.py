"""The main job on the shipped checkpoint: `novelview demo` writes its pictures and scores."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from novelview.checkpoint import default_checkpoint_path, read_config
from novelview.demo import run_demo


def test_shipped_checkpoint_is_small_and_inference_only() -> None:
    path = default_checkpoint_path()
    names = sorted(p.name for p in path.iterdir())
    assert names == ["config.json", "model.safetensors"], names
    assert sum(p.stat().st_size for p in path.iterdir()) < 50e6
    config = read_config(path)
    assert config.data["radius"] > 0 and config.training["ema"] is True


def test_demo_writes_orbit_compare_and_metrics(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "novelview.cli", "demo", "--out", str(out), "--steps", "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "PSNR" in proc.stdout
    gif = Image.open(out / "orbit.gif")
    assert gif.n_frames == 24
    size = read_config(default_checkpoint_path()).image_size
    assert gif.size[1] >= 4 * size  # upscaled for viewing
    assert Image.open(out / "compare.png").size[0] > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["views"] == 24 and all(math.isfinite(metrics[k]) for k in ("psnr", "ssim", "copy_psnr"))


def test_shipped_model_beats_copying_the_input_at_90_degrees_and_more() -> None:
    """A real quality check: on the shipped held-out examples, views generated 90-180 degrees away from the input
    are closer to the ground truth (PSNR and SSIM, averaged) than the input itself is."""
    import torch

    from novelview.data.formats import load_view, open_dataset
    from novelview.demo import EXAMPLES
    from novelview.evaluation.metrics import psnr, ssim
    from novelview.images import pil_to_tensor
    from novelview.pipeline import Pipeline

    pipe = Pipeline.from_checkpoint(None)
    size = pipe.image_size
    generated, truth, copies = [], [], []
    for scene in open_dataset(EXAMPLES, format="srn"):
        azimuths = torch.rad2deg(torch.atan2(scene.poses[:, 1, 3], scene.poses[:, 0, 3]).double())
        offset = (azimuths - azimuths[0] + 180.0) % 360.0 - 180.0
        far = [i for i in range(scene.num_views) if abs(offset[i]) >= 90.0]
        assert far, f"{scene.name} has no view 90 degrees or more from its input"
        views = pipe.synthesize(scene.image_paths[0], target_poses=scene.poses[far], input_pose=scene.poses[0])
        generated += [pil_to_tensor(v) for v in views]
        truth += [load_view(scene, i, size)[0] for i in far]
        copies += [load_view(scene, 0, size)[0]] * len(far)
    gen_t, true_t, copy_t = torch.stack(generated), torch.stack(truth), torch.stack(copies)
    model_psnr, copy_psnr = psnr(gen_t, true_t).mean().item(), psnr(copy_t, true_t).mean().item()
    model_ssim, copy_ssim = ssim(gen_t, true_t).mean().item(), ssim(copy_t, true_t).mean().item()
    assert model_psnr > copy_psnr, (model_psnr, copy_psnr)
    assert model_ssim > copy_ssim, (model_ssim, copy_ssim)



def test_demo_bad_input_is_refused_before_the_model_loads(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from novelview.cli import main
    from novelview.errors import NovelviewError

    (tmp_path / "empty").mkdir()
    with pytest.raises(NovelviewError, match="not an SRN object"):
        run_demo(example=tmp_path / "empty", out_dir=tmp_path / "out", progress=False)
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--steps", "0", "--out", str(tmp_path / "out")])
    assert exited.value.code == 2 and "error: steps must be an integer >= 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
