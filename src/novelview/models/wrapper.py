"""The one conditioning path in front of every backbone (preconditioning in NVlabs/edm's style).

A backbone (:class:`~novelview.models.dit.DiT`, :class:`~novelview.models.xunet.XUNet`) is only its network:
``backbone(target_in, cond_image, logsnr, rays) -> prediction``. Everything the backbones share lives here once:

* input checks of the common call signature;
* condition dropout for classifier-free guidance: the condition view, its rays and the feature image all become
  zeros where ``drop_cond`` is set, so a dropped sample carries no information about the view;
* the target's input channels: the noisy image, then (as configured) the condition view concatenated, the
  self-conditioning x0 estimate, and the 3D-aware feature image rendered by the
  :class:`~novelview.models.lifting.FeatureLifter` and upsampled to the image size;
* the ray features of both cameras, at the resolutions the backbone asks for.

Several condition views (``cond_image [B, K, 3, H, W]`` with ``[B, K, 4, 4]`` poses and ``[B, K, 3, 3]``
intrinsics) are pooled by the lifter; the backbone itself reads the first one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from novelview.models.config import BackboneConfig
from novelview.models.embeddings import PoseEmbedding
from novelview.models.layers import LastResult
from novelview.models.lifting import ConditionViews, FeatureLifter


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
    views = (cond_image.shape[1],) if cond_image.ndim == 5 else ()
    expected = {
        "logsnr": (logsnr, (b,)),
        "cond_image": (cond_image, (b, *views, 3, h, w)),
        "cond_pose": (cond_pose, (b, *views, 4, 4)),
        "target_pose": (target_pose, (b, 4, 4)),
        "cond_K": (cond_K, (b, *views, 3, 3)),
        "target_K": (target_K, (b, 3, 3)),
    }
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must have shape {list(shape)}, got {list(tensor.shape)}")


class ConditionedModel(nn.Module):
    """A backbone behind the common call signature (``docs/architecture.md``)::

        model(z_t, logsnr, *, cond_image, cond_pose, target_pose, cond_K, target_K, drop_cond=None, x_self=None)
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.config: BackboneConfig = backbone.config
        self.pose_embed = PoseEmbedding(self.config)
        self.lifter = FeatureLifter(self.config) if self.config.lift else None
        self._render_cache = LastResult()
        self.register_load_state_dict_pre_hook(_accept_bare_backbone_keys)

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
        return_render: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor | None]:
        """The prediction ``[B, out_channels, H, W]``; with ``return_render`` also the RGB channels of the lifter's
        render ``[B, 3, render_size, render_size]`` in [-1, 1] (None without lifting), for an auxiliary loss."""
        check_inputs(z_t, logsnr, cond_image, cond_pose, target_pose, cond_K, target_K, self.backbone.size_multiple)
        if cond_image.ndim == 5 and cond_image.shape[1] > 1 and self.lifter is None:
            raise ValueError("several condition views need a lifting module to pool them (a -3d preset); "
                             "this model reads one")
        b, _, height, width = z_t.shape
        views = ConditionViews.of(cond_image, cond_pose, cond_K)
        drop = drop_mask(drop_cond, b, z_t.device)
        first = views.images[:, 0]
        if drop is not None:
            first = torch.where(drop[:, None, None, None], torch.zeros_like(first), first)
        parts = [z_t]
        if self.config.cond_concat:
            parts.append(first)
        estimate = self_condition_input(self.config, x_self, z_t)
        if estimate is not None:
            parts.append(estimate)
        render = feature_image = None
        if self.lifter is not None:
            render = self.render(views, target_pose, target_K, (height, width), drop)
            feature_image = F.interpolate(render, size=(height, width), mode="bilinear", align_corners=False)
            parts.append(feature_image)
        sizes = self.backbone.pose_sizes(height, width)
        rays = self.pose_embed(views.poses[:, 0], target_pose, views.Ks[:, 0], target_K, (height, width), sizes, drop)
        out = self.backbone(torch.cat(parts, dim=1), first, logsnr, rays)
        if self.config.render_skip:  # the correction starts at zero (zero-initialised output layers)
            skip = feature_image[:, FeatureLifter.RGB].to(out.dtype)
            out = torch.cat([out[:, :3] + skip, out[:, 3:]], dim=1)
        if not return_render:
            return out
        return out, None if render is None else render[:, FeatureLifter.RGB]

    def render(
        self, views: ConditionViews, target_pose: Tensor, target_K: Tensor, image_hw: tuple[int, int],
        drop: Tensor | None = None,
    ) -> Tensor:
        """The lifter's feature image at ``config.render_size``; zeros for dropped samples.

        Reused between the calls of one sampling run (:meth:`reusing_conditioning`): it depends on the condition
        views and cameras only.
        """
        if self.lifter is None:
            raise ValueError("this model has no lifting module (build it with lift=true, e.g. a -3d preset)")
        key = (views.images, views.poses, views.Ks, target_pose, target_K, drop, tuple(image_hw))
        return self._render_cache.get_or_compute(key, lambda: self._render(views, target_pose, target_K, image_hw, drop))

    def render_rgb(self, views: ConditionViews, target_pose: Tensor, target_K: Tensor, image_hw: tuple[int, int]) -> Tensor:
        """The lifter's RGB render upsampled to ``image_hw``, ``[B, 3, H, W]`` in [-1, 1]: what the geometry alone
        predicts for the target view."""
        render = self.render(views, target_pose, target_K, image_hw)[:, FeatureLifter.RGB]
        return F.interpolate(render, size=image_hw, mode="bilinear", align_corners=False)

    @contextmanager
    def reusing_conditioning(self) -> Iterator[None]:
        """Within this block (one sampling run: fixed weights, the same condition views and cameras at every step),
        the ray features and the lifted feature image are computed once per distinct input instead of per call."""
        caches = (self.pose_embed.cache, self._render_cache)
        for cache in caches:
            cache.switch(True)
        try:
            yield
        finally:
            for cache in caches:
                cache.switch(False)

    def _render(
        self, views: ConditionViews, target_pose: Tensor, target_K: Tensor, image_hw: tuple[int, int],
        drop: Tensor | None,
    ) -> Tensor:
        size = (self.config.render_size, self.config.render_size)
        if drop is None:
            return self.lifter(views, target_pose, target_K, image_hw, size)
        if torch.is_grad_enabled():
            # Every row is rendered, so every lifter parameter joins the graph on every process (DDP needs that
            # even when all of a process's rows are dropped); dropped rows are then zeroed.
            rendered = self.lifter(views, target_pose, target_K, image_hw, size)
            return torch.where(drop[:, None, None, None], torch.zeros_like(rendered), rendered)
        out = views.images.new_zeros(len(drop), self.lifter.channels, *size)
        kept = (~drop).nonzero().flatten()
        if len(kept):  # without gradients the dropped rows need not be rendered at all (half of a guided batch)
            rendered = self.lifter(views.rows(kept), target_pose[kept], target_K[kept], image_hw, size)
            out = out.index_copy(0, kept, rendered.to(out.dtype))
        return out


def _accept_bare_backbone_keys(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
) -> None:
    """Accept weights saved from a bare backbone (keys without ``backbone.``), as older checkpoints hold them."""
    if any(key.startswith(prefix + "backbone.") for key in state_dict):
        return
    for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(prefix + "lifter.")]:
        state_dict[prefix + "backbone." + key[len(prefix):]] = state_dict.pop(key)


__all__ = ["ConditionedModel", "check_inputs", "drop_mask", "self_condition_input"]
