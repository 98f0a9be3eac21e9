"""The compute device gives what the CPU gives: models (forward and gradients), bf16 autocast, the attention
kernels, sampling through the Pipeline, and training.

The device is ``NOVELVIEW_TEST_DEVICE`` (scripts/gpu_check.sh sets it), else CUDA when present; without either
these tests are skipped (on a CPU-only machine they would compare the CPU with itself).
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn.attention import SDPBackend, sdpa_kernel

from novelview.checkpoint import CheckpointConfig, save_checkpoint
from novelview.data.synthetic import SynthConfig, generate
from novelview.diffusion import DiffusionConfig
from novelview.models.presets import build_model, example_inputs
from novelview.pipeline import Pipeline
from novelview.sampling import SamplingSettings
from novelview.train import TrainConfig, train

DEVICE = os.environ.get("NOVELVIEW_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else None)
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE is None, reason="no device to check: set NOVELVIEW_TEST_DEVICE or run on CUDA"),
]
SIZE = 16


def _inputs(model: torch.nn.Module, device: str | torch.device = "cpu") -> tuple:
    z_t, logsnr, kwargs = example_inputs(model.config, 2, generator=torch.Generator().manual_seed(1))
    return z_t.to(device), logsnr.to(device), {k: v.to(device) for k, v in kwargs.items()}


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float().cpu() - b.float().cpu()).norm() / b.float().cpu().norm().clamp_min(1e-12))


@pytest.mark.parametrize("preset", ["xunet-tiny", "dit-tiny"])
def test_forward_and_gradients_match_the_cpu(preset: str) -> None:
    torch.manual_seed(0)
    model = build_model(preset, SIZE)
    on_device = copy.deepcopy(model).to(DEVICE)
    z_t, logsnr, kwargs = _inputs(model)
    reference = model(z_t, logsnr, **kwargs)
    reference.pow(2).mean().backward()
    z_t, logsnr, kwargs = _inputs(model, DEVICE)
    out = on_device(z_t, logsnr, **kwargs)
    out.pow(2).mean().backward()
    assert _relative_error(out, reference) < 1e-2  # TF32 convolutions on GPUs round to about 1e-3
    for (name, p), q in zip(model.named_parameters(), on_device.parameters()):
        if p.grad is not None and p.grad.norm() > 0:
            assert _relative_error(q.grad, p.grad) < 5e-2, name


def test_bf16_autocast_and_attention_kernels_agree() -> None:
    torch.manual_seed(0)
    model = build_model("dit-tiny", SIZE).to(DEVICE).eval()
    z_t, logsnr, kwargs = _inputs(model, DEVICE)
    device_type = torch.device(DEVICE).type
    with torch.no_grad():
        fp32 = model(z_t, logsnr, **kwargs)
        with sdpa_kernel([SDPBackend.MATH]):
            math_fp32 = model(z_t, logsnr, **kwargs)
        with torch.autocast(device_type, dtype=torch.bfloat16):
            with sdpa_kernel([SDPBackend.MATH]):
                math_bf16 = model(z_t, logsnr, **kwargs)
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                flash_bf16 = model(z_t, logsnr, **kwargs)
    assert _relative_error(math_fp32, fp32) < 1e-4
    for mixed in (math_bf16, flash_bf16):
        assert torch.isfinite(mixed).all() and _relative_error(mixed, fp32) < 5e-2


def test_sampling_on_the_device_matches_the_cpu(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("dit-tiny", SIZE)
    config = CheckpointConfig(model=model.config.to_dict(), diffusion=DiffusionConfig(), objective="diffusion",
                              data={"radius": 2.5, "fov_deg": 40.0, "elevation_mean": 15.0})
    path = save_checkpoint(tmp_path / "ckpt", model, config, ema=model)
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8))
    views = {}
    for name, device, autocast in (("cpu", "cpu", False), ("device", DEVICE, False), ("bf16", DEVICE, True)):
        pipe = Pipeline.from_checkpoint(path, device=device, autocast=autocast)
        views[name] = np.asarray(pipe.synthesize(picture, azimuth=[60, 180], settings=SamplingSettings(steps=3, seed=0))[1], dtype=np.float64)
    # The noise is drawn on the CPU for every device, so only arithmetic differs.
    assert np.abs(views["device"] - views["cpu"]).mean() < 2.0  # grey levels of 255
    assert views["bf16"].shape == (SIZE, SIZE, 3) and np.abs(views["bf16"] - views["cpu"]).mean() < 12.0


def test_training_runs_on_the_device(tmp_path: Path) -> None:
    generate(tmp_path / "data", SynthConfig(objects=3, views=3, size=SIZE, seed=1), progress=False)
    cuda = torch.cuda.is_available()  # the trainer takes the GPU whenever there is one
    result = train(TrainConfig(data=str(tmp_path / "data"), out=str(tmp_path / "run"), model="dit-tiny",
                               image_size=SIZE, steps=2, batch_size=4, checkpoint_every=2, sample_every=0,
                               val_every=1000, progress=False, precision="bf16" if cuda else "fp32"))
    assert next(result.model.parameters()).device.type == ("cuda" if cuda else "cpu")
    assert math.isfinite(result.final_loss) and result.final_checkpoint is not None
