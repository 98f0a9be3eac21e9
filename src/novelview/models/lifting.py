"""3D-aware conditioning: lift the condition view(s) into a feature field and render it at the target camera.

pixelNeRF (Yu et al. 2021) and GeNVS (Chan et al. 2023). A geometry-free backbone has to learn projective
geometry from pixels; here it is built in:

1. a small CNN gives every condition view a pixel-aligned feature map;
2. every target ray is sampled at ``lift_samples`` points between ``near`` and ``far`` (Euclidean distances along
   unit rays);
3. each point is projected into every condition view (:mod:`novelview.cameras`), the feature map is sampled
   bilinearly there and added to Fourier features of the point's position and the ray's direction in that
   view's frame; the sum is mean-pooled over views (so any number of views, in any order);
4. an MLP gives density and a feature vector per point, and volume rendering gives a feature image at the
   target camera: ``lift_channels`` features, RGB on white, opacity.

The first linear layer of the point MLP acts on the sampled features; it runs as a 1x1 convolution on the
feature map *before* sampling (bilinear sampling and a per-pixel linear map commute inside the image; outside it
the zero padding gives zero, not the layer's bias, which marks points no view sees), so the per-point cost does
not grow with the encoder's width. What depends only on the condition views and cameras is computed once per
view during sampling (the wrapper caches the rendered image).

:class:`PixelNeRF` is the same module rendering RGB directly: the deterministic regression baseline. It trains
on random subsets of rays (``pixels``), as pixelNeRF does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from novelview import cameras
from novelview.errors import ConfigError
from novelview.models.config import BackboneConfig
from novelview.models.embeddings import fourier_channels, fourier_features

# Densities start low so an untrained field is nearly transparent: the render is the white background and its
# gradients reach every sample along a ray.
_DENSITY_OFFSET = -1.0


@dataclass
class ConditionViews:
    """One or more posed condition views per sample: ``images [B,K,3,H,W]``, ``poses [B,K,4,4]``, ``Ks [B,K,3,3]``."""

    images: Tensor
    poses: Tensor
    Ks: Tensor

    @classmethod
    def of(cls, images: Tensor, poses: Tensor, Ks: Tensor) -> ConditionViews:
        """Accepts one view per sample (``[B,3,H,W]``, ``[B,4,4]``, ``[B,3,3]``) or K views (one more axis)."""
        if images.ndim == 4:
            return cls(images[:, None], poses[:, None], Ks[:, None])
        return cls(images, poses, Ks)

    @property
    def count(self) -> int:
        return self.images.shape[1]

    def rows(self, index: Tensor) -> ConditionViews:
        return ConditionViews(self.images[index], self.poses[index], self.Ks[index])


class ImageEncoder(nn.Module):
    """Pixel-aligned features at the input resolution from three scales (full, 1/2, 1/4), projected to ``out``."""

    def __init__(self, out: int, width: int = 32) -> None:
        super().__init__()
        self.at_full = nn.Conv2d(3, width, 3, padding=1)
        self.at_half = nn.Sequential(
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.SiLU(), nn.Conv2d(2 * width, 2 * width, 3, padding=1)
        )
        self.at_quarter = nn.Sequential(
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
        )
        self.project = nn.Conv2d(3 + 5 * width, out, 1)  # the point MLP's first layer (see the module docstring)

    def forward(self, images: Tensor) -> Tensor:
        size = images.shape[-2:]
        full = F.silu(self.at_full(images))
        half = F.silu(self.at_half(full))
        quarter = F.silu(self.at_quarter(half))

        def up(x: Tensor) -> Tensor:
            return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

        return self.project(torch.cat([images, full, up(half), up(quarter)], dim=1))


def composite(density: Tensor, values: Tensor, step: float) -> tuple[Tensor, Tensor]:
    """Volume rendering along the last-but-one axis: ``density [..., S]``, ``values [..., S, C]`` at points
    ``step`` apart -> ``(sum of weighted values [..., C], opacity [...])``."""
    alpha = 1.0 - torch.exp(-density * step)
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1.0 - alpha[..., :-1]], -1), -1)
    weights = alpha * transmittance
    return (weights[..., None] * values).sum(-2), weights.sum(-1)


class FeatureLifter(nn.Module):
    """Condition views -> feature image ``[B, lift_channels + 4, h, w]`` at the target camera (module docstring).

    Channels: ``lift_channels`` features, RGB composited on white, opacity; RGB and opacity scaled to [-1, 1]
    like images.
    """

    RGB = slice(-4, -1)  # where the rendered colour sits among the output channels

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.config = config
        width = config.lift_width
        self.encoder = ImageEncoder(width)
        self.point_embed = nn.Linear(fourier_channels(config.lift_freqs), width)
        self.dir_embed = nn.Linear(fourier_channels(config.dir_freqs), width, bias=False)
        self.mlp = nn.Sequential(nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.head = nn.Linear(width, 1 + config.lift_channels + 3)

    @property
    def channels(self) -> int:
        return self.config.lift_channels + 4

    def forward(
        self, views: ConditionViews, target_pose: Tensor, target_K: Tensor, image_hw: tuple[int, int],
        out_hw: tuple[int, int], pixels: Tensor | None = None,
    ) -> Tensor:
        """The feature image ``[B, C, *out_hw]``; with ``pixels`` (``[B, R]`` flat indices into ``out_hw``) only
        those rays: ``[B, C, R]``. ``target_K`` is given at ``image_hw``."""
        c = self.config
        samples = ray_samples(target_pose, target_K, image_hw, out_hw, c.ray_bounds(), c.lift_samples, pixels)
        feature_maps = self.encoder(views.images.flatten(0, 1)).unflatten(0, (len(views.images), views.count))
        hidden = self._pooled_point_features(views, feature_maps, samples)  # [B, R, S, width]
        out = self.head(self.mlp(hidden))
        density = F.softplus(out[..., 0] + _DENSITY_OFFSET) / c.pose_scale
        values = torch.cat([out[..., 1 : 1 + c.lift_channels], torch.sigmoid(out[..., 1 + c.lift_channels :])], -1)
        summed, opacity = composite(density, values, samples.step)
        features, rgb = summed[..., : c.lift_channels], summed[..., c.lift_channels :]
        rgb = rgb + (1.0 - opacity[..., None])  # white background
        image = torch.cat([features, rgb * 2 - 1, opacity[..., None] * 2 - 1], -1).transpose(1, 2)  # [B, C, R]
        return image if pixels is not None else image.unflatten(2, out_hw)

    def _pooled_point_features(self, views: ConditionViews, feature_maps: Tensor, samples: RaySamples) -> Tensor:
        """First MLP layer of every point, from every view, mean-pooled over the views: ``[B, R, S, width]``."""
        b, r, s, _ = samples.points.shape
        points = samples.points.flatten(1, 2)
        sampled = sample_view_features(feature_maps, views, points)  # [B, K, R*S, width]
        poses = views.poses.float()
        local = cameras.world_to_camera(points[:, None], poses)  # [B, K, R*S, 3]
        position = self.point_embed(fourier_features(local / self.config.pose_scale, self.config.lift_freqs))
        dirs = cameras.directions_to_camera(samples.directions[:, None], poses)
        direction = self.dir_embed(fourier_features(dirs, self.config.dir_freqs))  # [B, K, R, width]
        per_view = sampled + position + direction.repeat_interleave(s, dim=2)
        return per_view.mean(dim=1).view(b, r, s, -1)


class RaySamples(NamedTuple):
    """Points along target rays: ``points [B, R, S, 3]`` (world), unit ``directions [B, R, 3]``, spacing ``step``."""

    points: Tensor
    directions: Tensor
    step: float


def ray_samples(
    pose: Tensor, k: Tensor, image_hw: tuple[int, int], out_hw: tuple[int, int], bounds: tuple[float, float],
    samples: int, pixels: Tensor | None = None,
) -> RaySamples:
    """``samples`` evenly spaced points (bin centres) between ``bounds`` along the rays through the pixel centres of
    an ``out_hw`` image of camera ``pose`` (``k`` at ``image_hw``); with ``pixels`` (``[B, R]``) those rays only.
    Distances are Euclidean: the directions are unit vectors."""
    k = cameras.resize_intrinsics(k.double(), image_hw, out_hw)
    origins, dirs = cameras.pixel_rays(pose.double(), k, *out_hw)
    origins, dirs = origins.flatten(-3, -2).float(), dirs.flatten(-3, -2).float()
    if pixels is not None:
        index = pixels[..., None].expand(-1, -1, 3)
        origins, dirs = origins.gather(1, index), dirs.gather(1, index)
    near, far = bounds
    step = (far - near) / samples
    t = near + step * (torch.arange(samples, dtype=dirs.dtype, device=dirs.device) + 0.5)
    return RaySamples(origins[:, :, None] + dirs[:, :, None] * t[:, None], dirs, step)


def sample_view_features(feature_maps: Tensor, views: ConditionViews, points: Tensor) -> Tensor:
    """Bilinear samples ``[B, K, N, C]`` of every view's ``feature_maps [B, K, C, H, W]`` (pixel-aligned with its
    image) where world ``points [B, N, 3]`` project; zeros for points outside the image or behind the camera."""
    b, k_views = feature_maps.shape[:2]
    height, width = views.images.shape[-2:]
    uv, depth = cameras.project(points[:, None], views.poses.float(), views.Ks.float())  # [B, K, N, 2]
    size = torch.tensor([width, height], dtype=uv.dtype, device=uv.device)
    grid = uv / size * 2 - 1  # pixel centres at +0.5 <-> align_corners=False
    grid = torch.where((depth > 1e-6)[..., None], grid, torch.full_like(grid, -2.0))
    sampled = F.grid_sample(feature_maps.flatten(0, 1), grid.flatten(0, 1)[:, :, None], align_corners=False)
    return sampled[..., 0].unflatten(0, (b, k_views)).transpose(2, 3)


@dataclass
class PixelNeRFConfig(BackboneConfig):
    """pixelNeRF regression: the lifting module rendering RGB at every pixel (no denoiser)."""

    family: ClassVar[str] = "pixelnerf"

    lift: bool = True
    lift_channels: int = 0

    def validate(self) -> None:
        super().validate()
        if not self.lift:
            raise ConfigError("a pixelnerf model is the lifting module; lift must stay true")
        if self.cond_concat or self.self_condition or self.learn_variance:
            raise ConfigError("pixelnerf renders the target directly: cond_concat, self_condition and "
                              "learn_variance do not apply (train it with --objective regression)")


class PixelNeRF(nn.Module):
    """Regression baseline with the common call signature: renders the target view, ignoring ``z_t``."""

    def __init__(self, config: PixelNeRFConfig) -> None:
        super().__init__()
        self.config = config
        self.lifter = FeatureLifter(config)

    def forward(
        self,
        z_t: Tensor,
        logsnr: Tensor,
        *,
        cond_image: Tensor,
        cond_pose: Tensor,
        target_pose: Tensor,
        cond_K: Tensor,
        target_K: Tensor,
        drop_cond: Tensor | None = None,
        x_self: Tensor | None = None,
        pixels: Tensor | None = None,
    ) -> Tensor:
        """``[B, 3, H, W]`` in [-1, 1] (``[B, 3, R]`` with ``pixels``). There is no unconditional mode."""
        from novelview.models.wrapper import check_inputs

        check_inputs(z_t, logsnr, cond_image, cond_pose, target_pose, cond_K, target_K, multiple=1)
        if drop_cond is not None and bool(torch.as_tensor(drop_cond).any()):
            raise ValueError("a pixelnerf model cannot drop its condition (it is a regression model)")
        if x_self is not None:
            raise ValueError("x_self was given but this model was built without self_condition")
        hw = tuple(z_t.shape[-2:])
        if pixels is not None and (pixels.ndim != 2 or pixels.shape[0] != z_t.shape[0] or pixels.dtype.is_floating_point
                                   or pixels.min() < 0 or pixels.max() >= hw[0] * hw[1]):
            raise ValueError(f"pixels must be [B, R] integer indices into the {hw[0]}x{hw[1]} image")
        views = ConditionViews.of(cond_image, cond_pose, cond_K)
        image = self.lifter(views, target_pose, target_K, hw, hw, pixels)
        return image[:, FeatureLifter.RGB]


__all__ = [
    "ConditionViews",
    "FeatureLifter",
    "ImageEncoder",
    "PixelNeRF",
    "PixelNeRFConfig",
    "RaySamples",
    "composite",
    "ray_samples",
    "sample_view_features",
]
