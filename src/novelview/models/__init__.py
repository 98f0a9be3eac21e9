"""Pose-conditional denoising backbones (the 3DiM X-UNet, a DiT with cross-attention), the conditioning wrapper
in front of them, the 3D-aware lifting module, and the pixelNeRF regression baseline built from it.

Every model shares one call signature (``docs/architecture.md``)::

    model(z_t, logsnr, *, cond_image, cond_pose, target_pose, cond_K, target_K, drop_cond=None) -> Tensor

Build them by preset name with :func:`build_model`; every model carries its ``.config``.
"""

from novelview.models.config import BackboneConfig
from novelview.models.dit import DiT, DiTConfig
from novelview.models.lifting import ConditionViews, FeatureLifter, PixelNeRF, PixelNeRFConfig
from novelview.models.presets import (
    PRESETS,
    build_from_config,
    build_model,
    config_from_dict,
    count_parameters,
    example_inputs,
    forward_flops,
    list_presets,
    preset_config,
)
from novelview.models.wrapper import ConditionedModel
from novelview.models.xunet import XUNet, XUNetConfig

__all__ = [
    "PRESETS",
    "BackboneConfig",
    "ConditionViews",
    "ConditionedModel",
    "DiT",
    "DiTConfig",
    "FeatureLifter",
    "PixelNeRF",
    "PixelNeRFConfig",
    "XUNet",
    "XUNetConfig",
    "build_from_config",
    "build_model",
    "config_from_dict",
    "count_parameters",
    "example_inputs",
    "forward_flops",
    "list_presets",
    "preset_config",
]
