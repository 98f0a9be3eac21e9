"""Embeddings both backbones read: the noise level and the per-pixel rays of both cameras.

Pose conditioning is **relative**: both cameras are re-expressed in the *condition* camera's frame
(:func:`novelview.cameras.relative_pose`), so the condition camera is the identity and the world frame a
dataset uses makes no difference. Every pixel then gets the ray through its centre, encoded either as

* ``"rays"`` (3DiM): ray origin and unit direction, each with NeRF-style Fourier features, or
* ``"plucker"``: Plücker coordinates ``(d, o x d)`` with the same Fourier features; unlike an origin they
  do not depend on where along the ray the origin sits.

**Scale.** Camera translations are divided by ``pose_scale`` before encoding. A picture does not reveal
absolute scale (twice the object at twice the distance looks the same), so what should reach the network
is distance in units of the typical camera-to-object distance: set ``pose_scale`` to the training set's
mean camera radius (checkpoints record it as ``data.radius``; our procedural data: 2.5) and the encoded
positions are O(1) whatever the dataset's units. A model used on cameras at another scale needs their
translations rescaled by ``trained radius / their radius`` first. The default 1.0 feeds raw world units,
as 3DiM did on SRN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from novelview import cameras
from novelview.models.config import LOGSNR_MAX, LOGSNR_MIN, BackboneConfig
from novelview.models.layers import LastResult, sinusoidal_embedding


# ---------------------------------------------------------------------------------------------------------
# Noise level
# ---------------------------------------------------------------------------------------------------------


def logsnr_to_unit(logsnr: Tensor) -> Tensor:
    """Map logSNR to a bounded "time" in (0, 1): 0 = clean, 1 = pure noise (3DiM).

    ``atan(exp(-logsnr / 2)) / (pi / 2)`` is the cosine-schedule time of that logSNR, so embeddings of any
    schedule land where a cosine-schedule model expects them.
    """
    logsnr = logsnr.float().clamp(LOGSNR_MIN, LOGSNR_MAX)
    return torch.atan(torch.exp(-0.5 * logsnr)) * (2.0 / math.pi)


class NoiseLevelEmbedding(nn.Module):
    """logSNR ``[N]`` -> ``[N, dim]``: bounded time, sinusoidal features (x1000 as DDPM), then a 2-layer MLP."""

    def __init__(self, dim: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, logsnr: Tensor) -> Tensor:
        t = logsnr_to_unit(logsnr) * 1000.0
        return self.mlp(sinusoidal_embedding(t, self.freq_dim).to(self.mlp[0].weight.dtype))


# ---------------------------------------------------------------------------------------------------------
# Pose
# ---------------------------------------------------------------------------------------------------------


def fourier_features(x: Tensor, num_freqs: int) -> Tensor:
    """NeRF positional encoding: ``x`` followed by ``sin`` and ``cos`` of ``2^k x`` for k < ``num_freqs``."""
    if num_freqs == 0:
        return x
    scales = 2.0 ** torch.arange(num_freqs, dtype=x.dtype, device=x.device)
    xb = (x[..., None, :] * scales[:, None]).flatten(-2)
    return torch.cat([x, torch.sin(xb), torch.cos(xb)], dim=-1)


def fourier_channels(num_freqs: int) -> int:
    """Channels :func:`fourier_features` gives a 3-vector."""
    return 3 * (1 + 2 * num_freqs)


def pose_channels(config: BackboneConfig) -> tuple[int, int]:
    """``(per-pixel, per-camera)`` channels of the ray features :class:`PoseEmbedding` gives for ``config``."""
    position = fourier_channels(config.pos_freqs)
    if config.pose_mode == "plucker":
        return fourier_channels(config.dir_freqs) + position, 0
    return fourier_channels(config.dir_freqs), position


@dataclass
class RayFeatures:
    """Encoded rays of both cameras at one resolution, frame order ``(condition, target)``.

    ``pixel`` varies per pixel; ``camera`` holds features every ray of a camera shares (in ``"rays"`` mode
    the encoded ray origin, i.e. the camera centre), stored once instead of broadcast over the image. A
    linear map of the broadcast map equals a linear map of the vector, so nothing is lost, and the
    pixel tensor shrinks by more than half.
    """

    pixel: Tensor  # [B, 2, Dp, h, w] (channels-last memory)
    camera: Tensor | None  # [B, 2, Dc] or None


class PoseEmbedding(nn.Module):
    """Ray features of the condition and target cameras, in the condition camera's frame.

    Has no parameters; :class:`PoseProjection` maps the features to a backbone's width.
    """

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.mode = config.pose_mode
        self.pos_freqs = config.pos_freqs
        self.dir_freqs = config.dir_freqs
        self.pose_scale = config.pose_scale
        self.cache = LastResult()

    def forward(
        self,
        cond_pose: Tensor,
        target_pose: Tensor,
        cond_K: Tensor,
        target_K: Tensor,
        image_hw: tuple[int, int],
        sizes: list[tuple[int, int]],
        drop: Tensor | None = None,
    ) -> list[RayFeatures]:
        """Features for each ``(h, w)`` in ``sizes``; all zeros for the samples where ``drop``.

        Within :meth:`ConditionedModel.reusing_conditioning` (one sampling run) the last result is reused while the
        cameras stay the same: a sampler calls the network 25+ times per view with identical cameras, and tracing
        rays is ~5 % of a tiny model's forward.
        """
        key = (cond_pose, target_pose, cond_K, target_K, drop, tuple(image_hw), tuple(map(tuple, sizes)))
        return self.cache.get_or_compute(key, lambda: self.features(*key[:4], image_hw, sizes, drop))

    def features(
        self,
        cond_pose: Tensor,
        target_pose: Tensor,
        cond_K: Tensor,
        target_K: Tensor,
        image_hw: tuple[int, int],
        sizes: list[tuple[int, int]],
        drop: Tensor | None,
    ) -> list[RayFeatures]:
        """The uncached computation of :meth:`forward`.

        Rays are traced through the pixel centres *of each resolution* (intrinsics rescaled with
        :func:`cameras.resize_intrinsics`), so a coarse feature map is aligned exactly with the
        average-pooled image it modulates. Poses, rays and the position features are computed in float64:
        the high Fourier octaves multiply rounding errors by up to ``2**(pos_freqs - 1)``. Direction
        features (unit vectors, fewer octaves) are computed in float32.
        """
        device = cond_pose.device
        dtype = torch.float64 if device.type in ("cpu", "cuda", "meta") else torch.float32
        poses = torch.stack([cond_pose, target_pose], dim=1).to(dtype)  # [B, 2, 4, 4]
        rel = cameras.relative_pose(poses[:, :1], poses).clone()  # condition camera -> identity
        rel[..., :3, 3] /= self.pose_scale
        ks = torch.stack([cond_K, target_K], dim=1).to(dtype)  # [B, 2, 3, 3] at image_hw
        keep = None if drop is None else ~drop
        camera = None
        if self.mode == "rays":
            camera = fourier_features(rel[..., :3, 3], self.pos_freqs).float()
            camera = camera if keep is None else camera * keep[:, None, None]
        feats = []
        for size in sizes:
            k = cameras.resize_intrinsics(ks, image_hw, size)
            origins, dirs = cameras.pixel_rays(rel, k, size[0], size[1])  # [B, 2, h, w, 3]
            if self.mode == "plucker":
                pl = cameras.plucker(origins, dirs)
                pixel = torch.cat(
                    [
                        fourier_features(pl[..., :3].float(), self.dir_freqs),
                        fourier_features(pl[..., 3:], self.pos_freqs).float(),  # moments vary per pixel
                    ],
                    dim=-1,
                )
            else:
                pixel = fourier_features(dirs.float(), self.dir_freqs)
            if keep is not None:
                pixel = pixel * keep[:, None, None, None, None]
            feats.append(RayFeatures(pixel.permute(0, 1, 4, 2, 3), camera))
        return feats


class PoseProjection(nn.Module):
    """Linear map of :class:`RayFeatures` to ``dim`` channels: ``[B*2, dim, h / patch, w / patch]``.

    ``patch=1``: per pixel (X-UNet, one per level); ``patch=p``: one patchifying conv (DiT tokens).
    """

    def __init__(self, config: BackboneConfig, dim: int, patch: int = 1) -> None:
        super().__init__()
        pixel_channels, camera_channels = pose_channels(config)
        self.pixel = nn.Conv2d(pixel_channels, dim, patch, stride=patch)
        self.camera = nn.Linear(camera_channels, dim, bias=False) if camera_channels else None

    def forward(self, features: RayFeatures) -> Tensor:
        out = self.pixel(features.pixel.flatten(0, 1))
        if self.camera is not None and features.camera is not None:
            out = out + self.camera(features.camera.flatten(0, 1))[:, :, None, None]
        return out


__all__ = [
    "NoiseLevelEmbedding",
    "PoseEmbedding",
    "PoseProjection",
    "RayFeatures",
    "fourier_channels",
    "fourier_features",
    "logsnr_to_unit",
    "pose_channels",
]
