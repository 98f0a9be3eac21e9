"""Conditioning shared by both backbones: the noise-level embedding and the per-pixel pose embedding.

Also home of :class:`BackboneConfig`, the fields every backbone config has (image size, output head, how
cameras are encoded), so the two backbones read them the same way.

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

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from novelview import cameras
from novelview.errors import ConfigError
from novelview.models.layers import sinusoidal_embedding

#: logSNR range the noise-level embedding resolves; the clean condition frame is told ``LOGSNR_MAX``.
LOGSNR_MIN, LOGSNR_MAX = -20.0, 20.0
POSE_MODES = ("rays", "plucker")
# Upper bounds of model configs (config.json and --override are user input): far above every preset, and low
# enough that a typo such as depth=100000000 is refused at once instead of allocating for minutes.
MAX_IMAGE_SIZE = 1024
MAX_FREQS = 32
MAX_WIDTH = 4096  # channels of any layer
MAX_DEPTH = 64  # blocks of one stack or level


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_TYPE_CHECKS = {
    "int": _is_int,
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "str | None": lambda v: v is None or isinstance(v, str),
    "tuple[int, ...]": lambda v: isinstance(v, (tuple, list)) and all(_is_int(x) for x in v),
}


@dataclass
class BackboneConfig:
    """Fields common to every backbone. Subclasses set ``family`` and add their architecture fields."""

    family: ClassVar[str] = ""

    preset: str | None = None  # the preset this config came from (informational; build_model sets it)
    image_size: int = 64
    learn_variance: bool = False  # 6 output channels: prediction, then variance interpolation v in [-1, 1]
    cond_concat: bool = False  # also concatenate the condition view onto the target's input channels
    # Self-conditioning (Chen et al. 2022): the target also reads the previous x0 estimate (3 more channels).
    self_condition: bool = False
    pose_mode: str = "rays"  # "rays" (origin + direction) or "plucker"
    pos_freqs: int = 15  # Fourier octaves of ray origins / Plücker moments (3DiM: 15)
    dir_freqs: int = 8  # Fourier octaves of ray directions (3DiM: 8)
    pose_scale: float = 1.0  # camera translations are divided by this (see module docstring)
    dropout: float = 0.0

    @property
    def out_channels(self) -> int:
        return 6 if self.learn_variance else 3

    @property
    def in_channels(self) -> int:
        return 3 * (1 + int(self.cond_concat) + int(self.self_condition))

    def __post_init__(self) -> None:
        self._check_types()
        self.validate()

    def _check_types(self) -> None:
        """Options arrive from JSON (``--override``, config.json): a wrong type is a user error, named here."""
        for f in dataclasses.fields(self):
            check = _TYPE_CHECKS.get(str(f.type))
            value = getattr(self, f.name)
            if check is not None and not check(value):
                raise ConfigError(f"model option {f.name}={value!r}: expected {f.type}")

    def validate(self) -> None:
        if not 8 <= self.image_size <= MAX_IMAGE_SIZE:
            raise ConfigError(f"image_size must lie in [8, {MAX_IMAGE_SIZE}], got {self.image_size}")
        if not (0 <= self.pos_freqs <= MAX_FREQS and 0 <= self.dir_freqs <= MAX_FREQS):
            raise ConfigError(f"pos_freqs and dir_freqs must lie in [0, {MAX_FREQS}]")
        if self.pose_mode not in POSE_MODES:
            raise ConfigError(f"pose_mode must be one of {', '.join(POSE_MODES)}, got {self.pose_mode!r}")
        if not self.pose_scale > 0:
            raise ConfigError(f"pose_scale must be positive, got {self.pose_scale}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must lie in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists); :func:`novelview.models.presets.config_from_dict` inverts it."""
        out: dict[str, Any] = {"family": self.family}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


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


def _fourier_channels(num_freqs: int) -> int:
    return 3 * (1 + 2 * num_freqs)


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
        position = _fourier_channels(config.pos_freqs)
        self.pixel_channels = _fourier_channels(config.dir_freqs) + (position if self.mode == "plucker" else 0)
        self.camera_channels = position if self.mode == "rays" else 0

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

        Without autograd (sampling) the last result is reused while the cameras stay the same: a sampler calls
        the network 25+ times per view with identical cameras, and tracing rays is ~5 % of a tiny model's
        forward. The cameras are compared by value, so a reused result is exactly what would be recomputed.
        """
        if torch.is_grad_enabled() or cond_pose.device.type == "meta" or torch.compiler.is_compiling():
            return self._features(cond_pose, target_pose, cond_K, target_K, image_hw, sizes, drop)
        key = (cond_pose, target_pose, cond_K, target_K, drop, tuple(image_hw), tuple(map(tuple, sizes)))
        cached = getattr(self, "_last", None)
        if cached is not None and _same_key(cached[0], key):
            return cached[1]
        feats = self._features(cond_pose, target_pose, cond_K, target_K, image_hw, sizes, drop)
        self._last = (tuple(k.clone() if isinstance(k, Tensor) else k for k in key), feats)
        return feats

    def _features(
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


def _same_key(a: tuple, b: tuple) -> bool:
    for x, y in zip(a, b):
        if isinstance(x, Tensor) or isinstance(y, Tensor):
            if not (isinstance(x, Tensor) and isinstance(y, Tensor)) or x.shape != y.shape or x.device != y.device:
                return False
            if x.dtype != y.dtype or not torch.equal(x, y):
                return False
        elif x != y:
            return False
    return True


class PoseProjection(nn.Module):
    """Linear map of :class:`RayFeatures` to ``dim`` channels: ``[B*2, dim, h / patch, w / patch]``.

    ``patch=1``: per pixel (X-UNet, one per level); ``patch=p``: one patchifying conv (DiT tokens).
    """

    def __init__(self, embed: PoseEmbedding, dim: int, patch: int = 1) -> None:
        super().__init__()
        self.pixel = nn.Conv2d(embed.pixel_channels, dim, patch, stride=patch)
        self.camera = nn.Linear(embed.camera_channels, dim, bias=False) if embed.camera_channels else None

    def forward(self, features: RayFeatures) -> Tensor:
        out = self.pixel(features.pixel.flatten(0, 1))
        if self.camera is not None and features.camera is not None:
            out = out + self.camera(features.camera.flatten(0, 1))[:, :, None, None]
        return out


def drop_mask(drop_cond: Tensor | None, batch: int, device: torch.device) -> Tensor | None:
    """Validate ``drop_cond`` (``[B]`` bool or None); None when nothing is dropped."""
    if drop_cond is None:
        return None
    drop = torch.as_tensor(drop_cond, device=device)
    if drop.shape != (batch,):
        raise ValueError(f"drop_cond must have shape [{batch}], got {tuple(drop.shape)}")
    return drop.bool()


def self_condition_input(config: BackboneConfig, x_self: Tensor | None, z_t: Tensor) -> Tensor | None:
    """The x0 estimate a self-conditioned model reads (zeros when there is none yet); None for other models."""
    if not config.self_condition:
        if x_self is not None:
            raise ValueError("x_self was given but this model was built without self_condition")
        return None
    if x_self is None:
        return torch.zeros_like(z_t)
    if x_self.shape != z_t.shape:
        raise ValueError(f"x_self must have the shape of z_t {list(z_t.shape)}, got {list(x_self.shape)}")
    return x_self.to(z_t.dtype)


def check_inputs(
    z_t: Tensor, logsnr: Tensor, cond_image: Tensor, cond_pose: Tensor, target_pose: Tensor,
    cond_K: Tensor, target_K: Tensor, multiple: int,
) -> None:
    """Shape checks of the common call signature (clear messages instead of an error deep in a conv).

    ``multiple``: the image height and width must be divisible by it (the backbone's total downsampling).
    """
    if z_t.ndim != 4 or z_t.shape[1] != 3:
        raise ValueError(f"z_t must have shape [B, 3, H, W], got {list(z_t.shape)}")
    b, _, h, w = z_t.shape
    if h % multiple or w % multiple:
        raise ValueError(f"image height and width must be multiples of {multiple}, got {h}x{w}")
    expected = {
        "logsnr": (logsnr, (b,)),
        "cond_image": (cond_image, (b, 3, h, w)),
        "cond_pose": (cond_pose, (b, 4, 4)),
        "target_pose": (target_pose, (b, 4, 4)),
        "cond_K": (cond_K, (b, 3, 3)),
        "target_K": (target_K, (b, 3, 3)),
    }
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must have shape {list(shape)}, got {list(tensor.shape)}")


__all__ = [
    "LOGSNR_MAX",
    "LOGSNR_MIN",
    "POSE_MODES",
    "BackboneConfig",
    "NoiseLevelEmbedding",
    "PoseEmbedding",
    "check_inputs",
    "drop_mask",
    "fourier_features",
    "logsnr_to_unit",
    "self_condition_input",
    "PoseProjection",
    "RayFeatures",
]
