"""Image metrics for novel view synthesis: PSNR and SSIM over the full image and over the object's pixels.

Conventions (documented in docs/evaluation.md, where the numbers are explained to users):

* Inputs are image batches ``[B, 3, H, W]`` in **[-1, 1]** (the package's image convention); every metric maps
  them to [0, 1] first and uses ``data_range = 1``, as papers do.
* Full-image PSNR and SSIM come from ``torchmetrics.functional`` unchanged (SSIM: Gaussian window 11, sigma 1.5,
  reflection padding), so full-image numbers are the ones papers report.
* **PSNR is capped** at :data:`PSNR_CAP_DB` (100 dB): two identical images have zero error and an infinite
  PSNR, which would make every average infinite. 100 dB is an MSE of 1e-10, far beyond 8-bit quantisation
  (about 59 dB), so no real prediction is affected.
* **Masked** metrics look only at the object: PSNR uses the mean squared error over mask pixels (all three
  channels), SSIM averages the full-image SSIM map over the mask. SSIM windows near the mask edge still see
  some background; that is intended (the object's silhouette is part of what must be right).
* The **object mask** is the dataset's mask when it has one, else the ground-truth pixels that are not white
  background; either way it is dilated by a few pixels so that a prediction that misplaces the silhouette is
  penalised on both sides of the edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

#: PSNR of identical images is infinite; every PSNR we report is clamped to this (dB).
PSNR_CAP_DB = 100.0
#: A ground-truth pixel whose every channel is at least this (in [0, 1]) counts as white background.
#: 8-bit white is exactly 1.0; the margin absorbs area-filter resizing at the silhouette.
BACKGROUND_THRESHOLD = 1.0 - 4.0 / 255.0
#: Dilation radius (pixels) of the object mask.
MASK_DILATION = 2


def to_unit(images: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1], clamped (generated samples can overshoot slightly)."""
    return ((images.float() + 1.0) * 0.5).clamp(0.0, 1.0)


def _as_batch(x: Tensor) -> Tensor:
    return x[None] if x.ndim == 3 else x


def _expand_mask(mask: Tensor, like: Tensor) -> Tensor:
    """A ``[B, 1, H, W]`` (or single ``[1, H, W]``) mask -> float 0/1 of ``like``'s shape ``[B, C, H, W]``."""
    mask = _as_batch(mask).float()
    if mask.shape[1] != 1 or mask.shape[2:] != like.shape[2:]:
        raise ValueError(f"mask must be [B, 1, H, W] matching the images {tuple(like.shape)}, got {tuple(mask.shape)}")
    return (mask > 0.5).float().expand_as(like)


def psnr_from_mse(mse: Tensor, cap: float = PSNR_CAP_DB) -> Tensor:
    """``10 log10(1 / mse)`` for data range 1, capped at ``cap`` dB (so ``mse = 0`` gives ``cap``)."""
    return (10.0 * torch.log10(1.0 / mse.double())).clamp(max=cap).float()


def psnr(pred: Tensor, target: Tensor, mask: Tensor | None = None, cap: float = PSNR_CAP_DB) -> Tensor:
    """Per-image PSNR in dB, ``[B]``, of images in [-1, 1]; over ``mask`` pixels when given.

    A mask with no pixels gives NaN for that image (averages skip NaN; see :func:`nanmean`).
    """
    p, t = to_unit(_as_batch(pred)), to_unit(_as_batch(target))
    if mask is None:
        value = peak_signal_noise_ratio(p, t, data_range=1.0, reduction="none", dim=(1, 2, 3))
        return value.clamp(max=cap).float()
    m = _expand_mask(mask, p)
    count = m.sum(dim=(1, 2, 3))
    mse = (((p - t) ** 2) * m).sum(dim=(1, 2, 3)) / count.clamp_min(1.0)
    return torch.where(count > 0, psnr_from_mse(mse, cap), torch.full_like(mse, float("nan")))


def ssim_map(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """``(ssim [B], ssim map [B, C, H, W])`` of images in [-1, 1] (torchmetrics' defaults, data range 1)."""
    p, t = to_unit(_as_batch(pred)), to_unit(_as_batch(target))
    value, full = structural_similarity_index_measure(
        p, t, data_range=1.0, reduction="none", return_full_image=True
    )
    return value.float(), full.float()


def ssim(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-image SSIM ``[B]`` of images in [-1, 1]; with ``mask``, the SSIM map averaged over its pixels."""
    value, full = ssim_map(pred, target)
    if mask is None:
        return value
    m = _expand_mask(mask, full)
    count = m.sum(dim=(1, 2, 3))
    masked = (full * m).sum(dim=(1, 2, 3)) / count.clamp_min(1.0)
    return torch.where(count > 0, masked, torch.full_like(masked, float("nan")))


def dilate(mask: Tensor, radius: int = MASK_DILATION) -> Tensor:
    """Binary dilation of a ``[B, 1, H, W]`` mask by a (2r+1)-pixel square."""
    if radius <= 0:
        return (mask > 0.5).float()
    return F.max_pool2d((mask > 0.5).float(), kernel_size=2 * radius + 1, stride=1, padding=radius)


def object_mask(
    target: Tensor,
    dataset_mask: Tensor | None = None,
    radius: int = MASK_DILATION,
    threshold: float = BACKGROUND_THRESHOLD,
) -> Tensor:
    """The object's pixels ``[B, 1, H, W]`` (0/1): ``dataset_mask > 0.5`` when given, else the ground-truth
    pixels that are not white background; dilated by ``radius`` pixels either way."""
    target = _as_batch(target)
    if dataset_mask is not None:
        m = _as_batch(dataset_mask).float() > 0.5
    else:
        m = (to_unit(target) < threshold).any(dim=1, keepdim=True)
    return dilate(m.float(), radius)


def nanmean(values: Tensor | list[float]) -> float:
    """Mean ignoring NaN (images whose mask is empty); NaN when nothing is left."""
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    v = v[~torch.isnan(v)]
    return float(v.mean()) if v.numel() else float("nan")


@dataclass
class ImageScores:
    """Per-image scores of one batch of predictions against ground truth (all ``[B]``)."""

    psnr: Tensor
    ssim: Tensor
    psnr_masked: Tensor
    ssim_masked: Tensor
    lpips: Tensor | None = None


def score_images(
    pred: Tensor, target: Tensor, mask: Tensor, lpips_fn: Callable[[Tensor, Tensor], Tensor] | None = None
) -> ImageScores:
    """All metrics of predictions ``[B, 3, H, W]`` vs targets in [-1, 1] with the object ``mask`` ``[B, 1, H, W]``.

    ``lpips_fn(pred, target) -> [B]`` is called when given (see :mod:`novelview.evaluation.lpips`).
    """
    pred, target = _as_batch(pred), _as_batch(target)
    lp = None
    if lpips_fn is not None:
        with torch.no_grad():
            lp = lpips_fn(pred, target).float()
    return ImageScores(
        psnr=psnr(pred, target),
        ssim=ssim(pred, target),
        psnr_masked=psnr(pred, target, mask),
        ssim_masked=ssim(pred, target, mask),
        lpips=lp,
    )


# ---------------------------------------------------------------------------------------------------------
# Distribution of image patches (sliced Wasserstein distance, as in Karras et al. 2018, "Progressive Growing
# of GANs", sec. 5)
# ---------------------------------------------------------------------------------------------------------

#: Patch side, patches per image, random directions and the coarsest pyramid level's side (as Karras et al.: the
#: pyramid goes down to 16 px, so a 32 px image has two levels and a 128 px one four).
SWD_PATCH, SWD_PATCHES_PER_IMAGE, SWD_PROJECTIONS, SWD_MIN_SIDE = 7, 128, 512, 16
#: Fewer images than this in a set and the distance is not computed. Two sets of real views drift apart as they
#: get smaller (a sampling bias), so values are only comparable between methods on the same views.
SWD_MIN_IMAGES = 16


def _pyramid_down(images: Tensor) -> Tensor:
    """Blur with the 5-tap binomial kernel (as ``cv2.pyrDown``), then keep every second pixel."""
    k1 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=images.dtype, device=images.device) / 16.0
    kernel = (k1[:, None] * k1[None, :]).expand(images.shape[1], 1, 5, 5)
    blurred = F.conv2d(F.pad(images, (2, 2, 2, 2), mode="reflect"), kernel, groups=images.shape[1])
    return blurred[..., ::2, ::2]


def laplacian_pyramid(images: Tensor, levels: int) -> list[Tensor]:
    """Band-pass levels, finest first; the last level is the low-pass remainder."""
    out = []
    for _ in range(levels - 1):
        low = _pyramid_down(images)
        out.append(images - F.interpolate(low, size=images.shape[-2:], mode="bilinear", align_corners=False))
        images = low
    return [*out, images]


def _patches(level: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """``count`` random ``SWD_PATCH``-square patches of every image, flattened: ``[N * count, 3 * patch²]``."""
    n, c, h, w = level.shape
    side = min(SWD_PATCH, h, w)
    ys = torch.randint(0, h - side + 1, (n, count), generator=generator)
    xs = torch.randint(0, w - side + 1, (n, count), generator=generator)
    offsets = torch.arange(side)
    rows = (ys[..., None] + offsets)[..., :, None].expand(n, count, side, side)
    cols = (xs[..., None] + offsets)[..., None, :].expand(n, count, side, side)
    batch = torch.arange(n)[:, None, None, None].expand_as(rows)
    patches = level.permute(0, 2, 3, 1)[batch, rows, cols]  # [N, count, side, side, C]
    return patches.reshape(n * count, side * side, c)


def swd_levels(height: int, width: int) -> int:
    """Pyramid levels for an image size: halvings down to :data:`SWD_MIN_SIDE` (at least one level)."""
    levels, side = 1, min(height, width)
    while side // 2 >= SWD_MIN_SIDE:
        levels, side = levels + 1, side // 2
    return levels


def sliced_wasserstein(pred: Tensor, target: Tensor, seed: int = 0) -> list[float]:
    """Sliced Wasserstein distance between the patch distributions of two image sets, per pyramid level
    (finest first), x 1000 as Karras et al. report it. Lower is better.

    ``pred`` and ``target`` are ``[N, 3, H, W]`` in [-1, 1] (equal N, any order: a distance between sets, not
    between paired images). Per level, random patches of both sets are normalised per colour channel with the
    *target* patches' mean and standard deviation (so a colour shift counts, unlike the original, which
    normalised each set by itself), projected on random unit directions, and the sorted projections compared.
    Blur and noise both show at the fine levels, wrong shapes and colours at the coarse one: it tells a sharp
    sample from a blurry mean, which PSNR and SSIM reward.
    """
    pred, target = _as_batch(pred), _as_batch(target)
    if pred.shape != target.shape:
        raise ValueError(f"sliced_wasserstein needs two sets of the same shape, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    gen = torch.Generator().manual_seed(seed)
    levels = swd_levels(pred.shape[-2], pred.shape[-1])
    out = []
    for level_pred, level_target in zip(laplacian_pyramid(to_unit(pred).double().cpu(), levels),
                                        laplacian_pyramid(to_unit(target).double().cpu(), levels)):
        # Positions drawn independently for the two sets (as the reference does): shared positions would favour
        # predictions aligned pixel for pixel with their targets, which a distance between sets must not see.
        a = _patches(level_pred, SWD_PATCHES_PER_IMAGE, gen)
        b = _patches(level_target, SWD_PATCHES_PER_IMAGE, gen)
        mean, std = b.mean(dim=(0, 1)), b.std(dim=(0, 1)).clamp_min(1e-8)
        a, b = ((a - mean) / std).flatten(1), ((b - mean) / std).flatten(1)
        total = 0.0
        for _ in range(4):  # 4 rounds of a quarter of the directions: the same mean, a quarter of the memory
            directions = torch.randn(a.shape[1], SWD_PROJECTIONS // 4, generator=gen, dtype=a.dtype)
            directions = directions / directions.norm(dim=0, keepdim=True)
            proj_a, proj_b = (a @ directions).sort(dim=0).values, (b @ directions).sort(dim=0).values
            total += float((proj_a - proj_b).abs().mean()) / 4
        out.append(total * 1e3)
    return out


# ---------------------------------------------------------------------------------------------------------
# Angle bins
# ---------------------------------------------------------------------------------------------------------

#: Bins of the angle (degrees) between condition and target viewing directions: [lo, hi), the last one closed.
ANGLE_BINS: tuple[tuple[float, float], ...] = ((0.0, 30.0), (30.0, 60.0), (60.0, 120.0), (120.0, 180.0))


def bin_label(lo: float, hi: float) -> str:
    return f"{lo:g}-{hi:g}"


def angle_bin(angle_deg: float, bins: tuple[tuple[float, float], ...] = ANGLE_BINS) -> str:
    """The label (``"30-60"``) of the bin an angle falls in; each bin is ``[lo, hi)``, the last ``[lo, hi]``."""
    for i, (lo, hi) in enumerate(bins):
        if lo <= angle_deg < hi or (i == len(bins) - 1 and angle_deg == hi):
            return bin_label(lo, hi)
    raise ValueError(f"angle {angle_deg} lies outside every bin {bins}")


__all__ = [
    "ANGLE_BINS",
    "BACKGROUND_THRESHOLD",
    "MASK_DILATION",
    "PSNR_CAP_DB",
    "ImageScores",
    "angle_bin",
    "bin_label",
    "dilate",
    "nanmean",
    "object_mask",
    "psnr",
    "psnr_from_mse",
    "score_images",
    "ssim",
    "ssim_map",
    "sliced_wasserstein",
    "swd_levels",
    "to_unit",
]
