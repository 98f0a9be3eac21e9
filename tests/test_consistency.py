"""3D consistency score: a voxel radiance field fitted to part of an orbit, scored on the rest."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from novelview import cameras
from novelview.errors import ConfigError
from novelview.evaluation.consistency import (
    FieldConfig,
    VoxelField,
    box_intersection,
    consistency_score,
    render_views,
    split_views,
)

SIZE = 16
TINY = FieldConfig(resolution=16, steps=150, rays_per_step=512, samples_per_ray=24, seed=0)


@pytest.fixture(scope="module")
def orbit() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A real orbit: a procedural object rendered from 12 cameras around it (white background)."""
    from novelview.data.synthetic import random_object, render

    obj = random_object(np.random.default_rng(3))
    poses = cameras.orbit_poses(12, elevation_deg=20.0, radius=2.5)
    k = cameras.intrinsics_from_fov(40.0, SIZE)
    rgb = render(obj, poses.double(), k.double(), SIZE).rgb  # [V, H, W, 3] in [0, 1]
    images = (rgb.permute(0, 3, 1, 2).float() * 2.0 - 1.0).contiguous()
    return images, poses.float(), k.float().expand(12, 3, 3)


def test_real_orbit_is_more_consistent_than_random_images(orbit) -> None:
    images, poses, ks = orbit
    real = consistency_score(images, poses, ks, TINY)
    noise = torch.rand(images.shape, generator=torch.Generator().manual_seed(0)) * 2.0 - 1.0
    random = consistency_score(noise, poses, ks, TINY)
    assert real.test_views == [1, 3, 5, 7, 9, 11] and real.train_views == [0, 2, 4, 6, 8, 10]
    assert real.psnr > random.psnr + 5.0, (real.psnr, random.psnr)
    assert real.ssim > random.ssim + 0.3, (real.ssim, random.ssim)
    assert real.renders is not None and real.renders.shape == (6, 3, SIZE, SIZE)
    assert len(real.to_dict()["psnr_per_view"]) == 6 and "renders" not in real.to_dict()


def test_fit_is_deterministic(orbit) -> None:
    images, poses, ks = orbit
    cfg = FieldConfig(resolution=8, steps=10, rays_per_step=128, samples_per_ray=8, seed=1)
    a = consistency_score(images[:4], poses[:4], ks[:4], cfg)
    b = consistency_score(images[:4], poses[:4], ks[:4], cfg)
    assert a.psnr == b.psnr and torch.equal(a.renders, b.renders)


def test_empty_field_renders_white_and_rays_hit_the_box() -> None:
    cfg = FieldConfig(resolution=8, density_bias=-60.0)
    field = VoxelField(cfg)
    poses = cameras.orbit_poses(2, elevation_deg=10.0, radius=2.5)
    k = cameras.intrinsics_from_fov(40.0, 8).expand(2, 3, 3)
    out = render_views(field, poses, k, 8, 8, samples=8)
    assert torch.allclose(out, torch.ones_like(out), atol=1e-4)
    origins = torch.tensor([[0.0, 0.0, 3.0], [0.0, 0.0, 3.0], [0.0, 0.0, 0.0]])
    dirs = torch.tensor([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    near, far, hit = box_intersection(origins, dirs, 1.0)
    assert hit.tolist() == [True, False, True]
    assert torch.allclose(near[0], torch.tensor(2.0)) and torch.allclose(far[0], torch.tensor(4.0))
    assert torch.allclose(near[2], torch.tensor(0.0)) and torch.allclose(far[2], torch.tensor(1.0))  # starts inside


def test_split_and_config_validation() -> None:
    assert split_views(5) == ([0, 2, 4], [1, 3])
    assert split_views(6, hold_out_every=3) == ([0, 2, 3, 5], [1, 4])
    with pytest.raises(ConfigError):
        split_views(1)
    with pytest.raises(ConfigError):
        FieldConfig(resolution=2)
    with pytest.raises(ConfigError):
        FieldConfig(bound=0.0)
