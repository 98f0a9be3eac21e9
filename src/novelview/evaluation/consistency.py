"""3D consistency score (3DiM, Watson et al. 2022, sec. 5): how well can ONE 3D scene explain the views?

Procedure: fit a small radiance field to a subset of an object's views (every other view of an orbit), render
the held-out views from their cameras, and compare the renders with the held-out views (PSNR / SSIM). Views
generated independently by a model that is not 3D consistent contradict each other, so no single field fits
them and held-out renders disagree; real views of a real object are explained well. The same fit on
ground-truth views gives the ceiling the procedure can reach at that resolution and view count.

The field is deliberately simple and runs on a CPU in about a minute at 32-64 px: a dense voxel grid of
density and RGB logits (trilinear interpolation with ``grid_sample``), emission-absorption compositing along
each ray over a white background, Adam on random ray batches, total-variation regularisation. The scene lives
in the box ``[-bound, bound]^3`` around the origin (objects near the origin, as the whole package assumes).
Rays come from :func:`novelview.cameras.pixel_rays`; no pose math lives here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from novelview import cameras
from novelview.errors import ConfigError
from novelview.evaluation import metrics


@dataclass
class FieldConfig:
    """Settings of the voxel radiance field and its fit (defaults: ~1 minute on a CPU at 32-64 px)."""

    resolution: int = 48  # voxels per side
    bound: float = 1.2  # the grid spans [-bound, bound]^3
    steps: int = 1000  # Adam steps
    rays_per_step: int = 1024
    samples_per_ray: int = 48  # stratified samples between the ray's box entry and exit
    lr: float = 0.1
    tv_weight: float = 3e-3  # total-variation weight on density and colour grids (suppresses floaters)
    density_bias: float = -5.0  # initial density ~ softplus(bias) optical depth per voxel: nearly empty
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.resolution >= 4, f"resolution must be at least 4, got {self.resolution}"),
            (self.bound > 0, f"bound must be positive, got {self.bound}"),
            (self.steps >= 1, f"steps must be at least 1, got {self.steps}"),
            (self.rays_per_step >= 1, f"rays_per_step must be at least 1, got {self.rays_per_step}"),
            (self.samples_per_ray >= 2, f"samples_per_ray must be at least 2, got {self.samples_per_ray}"),
            (self.lr > 0, f"lr must be positive, got {self.lr}"),
            (self.tv_weight >= 0, f"tv_weight must be >= 0, got {self.tv_weight}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"consistency field: {message}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class VoxelField(nn.Module):
    """Dense grids of density and colour logits over ``[-bound, bound]^3``."""

    def __init__(self, cfg: FieldConfig) -> None:
        super().__init__()
        r = cfg.resolution
        self.bound = cfg.bound
        self.density_bias = cfg.density_bias
        # Optical depth is parameterised per voxel length, so the initial emptiness does not depend on resolution.
        self.voxel_length = 2.0 * cfg.bound / (r - 1)
        self.density = nn.Parameter(torch.zeros(1, 1, r, r, r))
        self.color = nn.Parameter(torch.zeros(1, 3, r, r, r))  # sigmoid(0) = mid grey

    def forward(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """``points [N, 3]`` -> ``(sigma [N] per unit length, rgb [N, 3] in [0, 1])``, zero density outside."""
        grid = (points / self.bound)[None, None, None]  # [1, 1, 1, N, 3]; x,y,z index W,H,D (consistently)
        raw = F.grid_sample(torch.cat([self.density, self.color], 1), grid, mode="bilinear", align_corners=True)
        raw = raw[0, :, 0, 0].t()  # [N, 4]
        inside = (points.abs() <= self.bound).all(dim=-1)
        sigma = F.softplus(raw[:, 0] + self.density_bias) / self.voxel_length * inside
        return sigma, torch.sigmoid(raw[:, 1:])

    def total_variation(self) -> Tensor:
        loss = torch.zeros(())
        for grid in (self.density, self.color):
            for dim in (2, 3, 4):
                loss = loss + grid.diff(dim=dim).pow(2).mean()
        return loss


def box_intersection(origins: Tensor, directions: Tensor, bound: float) -> tuple[Tensor, Tensor, Tensor]:
    """Entry and exit distances of rays through ``[-bound, bound]^3`` (slab method) and whether they hit it."""
    safe = torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
    t_a = (-bound - origins) / safe
    t_b = (bound - origins) / safe
    near = torch.minimum(t_a, t_b).amax(dim=-1).clamp_min(0.0)
    far = torch.maximum(t_a, t_b).amin(dim=-1)
    return near, far, far > near


def render_rays(
    field_: VoxelField, origins: Tensor, directions: Tensor, samples: int, generator: torch.Generator | None = None
) -> Tensor:
    """Composite ``[N]`` rays front to back over a white background -> colours ``[N, 3]`` in [0, 1].

    With a ``generator`` the samples are jittered within their strata (training); without, at stratum centres.
    """
    near, far, hit = box_intersection(origins, directions, field_.bound)
    far = torch.where(hit, far, near + 1e-3)
    n = origins.shape[0]
    offsets = (
        torch.rand(n, samples, generator=generator) if generator is not None else torch.full((n, samples), 0.5)
    )
    step = (far - near) / samples  # [N]
    t = near[:, None] + (torch.arange(samples, dtype=origins.dtype) + offsets) * step[:, None]
    points = origins[:, None] + directions[:, None] * t[..., None]
    sigma, rgb = field_(points.reshape(-1, 3))
    sigma = sigma.reshape(n, samples) * hit[:, None]
    rgb = rgb.reshape(n, samples, 3)
    alpha = 1.0 - torch.exp(-sigma * step[:, None])
    transmittance = torch.cumprod(torch.cat([torch.ones(n, 1), 1.0 - alpha + 1e-10], dim=1), dim=1)
    weights = alpha * transmittance[:, :-1]
    return (weights[..., None] * rgb).sum(dim=1) + transmittance[:, -1:]  # leftover light is white


def _rays(poses: Tensor, intrinsics: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    origins, directions = cameras.pixel_rays(poses.float(), intrinsics.float(), height, width)
    return origins.reshape(-1, 3), directions.reshape(-1, 3)


def fit_field(
    images: Tensor,
    poses: Tensor,
    intrinsics: Tensor,
    cfg: FieldConfig,
    progress: Callable[[int, int], None] | None = None,
) -> VoxelField:
    """Fit a :class:`VoxelField` to views ``images [V, 3, H, W]`` in [-1, 1] seen by ``poses [V, 4, 4]``
    (OpenCV camera-to-world) with ``intrinsics [V, 3, 3]`` (pixels at H, W)."""
    _, _, height, width = images.shape
    origins, directions = _rays(poses, intrinsics, height, width)
    colors = metrics.to_unit(images).permute(0, 2, 3, 1).reshape(-1, 3)
    generator = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # nothing in the fit draws from it; set for any op that might
    field_ = VoxelField(cfg)
    optimizer = torch.optim.Adam(field_.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    n_rays = origins.shape[0]
    for step in range(cfg.steps):
        idx = torch.randint(0, n_rays, (min(cfg.rays_per_step, n_rays),), generator=generator)
        pred = render_rays(field_, origins[idx], directions[idx], cfg.samples_per_ray, generator)
        loss = F.mse_loss(pred, colors[idx]) + cfg.tv_weight * field_.total_variation()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if progress is not None:
            progress(step + 1, cfg.steps)
    return field_


@torch.no_grad()
def render_views(
    field_: VoxelField, poses: Tensor, intrinsics: Tensor, height: int, width: int, samples: int, chunk: int = 8192
) -> Tensor:
    """Render ``[V, 3, H, W]`` in [-1, 1] from the cameras ``poses``/``intrinsics``."""
    origins, directions = _rays(poses, intrinsics, height, width)
    parts = [
        render_rays(field_, origins[i : i + chunk], directions[i : i + chunk], samples)
        for i in range(0, len(origins), chunk)
    ]
    out = torch.cat(parts)
    return (out.reshape(poses.shape[0], height, width, 3).permute(0, 3, 1, 2) * 2.0 - 1.0).contiguous()


@dataclass
class ConsistencyResult:
    """Held-out agreement of a field fitted to part of a set of views (higher = more 3D consistent)."""

    psnr: float
    ssim: float
    train_views: list[int]
    test_views: list[int]
    psnr_per_view: list[float] = field(default_factory=list)
    ssim_per_view: list[float] = field(default_factory=list)
    renders: Tensor | None = field(default=None, repr=False)  # [T, 3, H, W] in [-1, 1], held-out renders

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("renders")
        return out


def split_views(n_views: int, hold_out_every: int = 2) -> tuple[list[int], list[int]]:
    """Every ``hold_out_every``-th view (starting at index 1) is held out; the rest train the field."""
    if n_views < 2:
        raise ConfigError(f"the consistency score needs at least 2 views, got {n_views}")
    if hold_out_every < 2:
        raise ConfigError(f"hold_out_every must be at least 2, got {hold_out_every}")
    test = [i for i in range(n_views) if i % hold_out_every == 1]
    train = [i for i in range(n_views) if i % hold_out_every != 1]
    return train, test


def consistency_score(
    images: Tensor,
    poses: Tensor,
    intrinsics: Tensor,
    cfg: FieldConfig | None = None,
    hold_out_every: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> ConsistencyResult:
    """Fit a field to views ``0, 2, 4, ...`` of an ordered set (an orbit) and score it on ``1, 3, 5, ...``."""
    cfg = cfg or FieldConfig()
    if not (images.shape[0] == poses.shape[0] == intrinsics.shape[0]):
        raise ValueError("images, poses and intrinsics must describe the same number of views")
    train, test = split_views(images.shape[0], hold_out_every)
    field_ = fit_field(images[train], poses[train], intrinsics[train], cfg, progress)
    renders = render_views(field_, poses[test], intrinsics[test], images.shape[2], images.shape[3], cfg.samples_per_ray)
    psnr = metrics.psnr(renders, images[test])
    ssim = metrics.ssim(renders, images[test])
    return ConsistencyResult(
        psnr=float(psnr.mean()),
        ssim=float(ssim.mean()),
        train_views=train,
        test_views=test,
        psnr_per_view=[round(float(v), 4) for v in psnr],
        ssim_per_view=[round(float(v), 5) for v in ssim],
        renders=renders,
    )


__all__ = [
    "ConsistencyResult",
    "FieldConfig",
    "VoxelField",
    "box_intersection",
    "consistency_score",
    "fit_field",
    "render_rays",
    "render_views",
    "split_views",
]
