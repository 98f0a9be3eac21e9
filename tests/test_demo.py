"""The main job on the shipped checkpoint: `novelview demo` writes its pictures and scores."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from PIL import Image

from novelview.checkpoint import default_checkpoint_path, read_config


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
