"""Named model configurations and the one way to build a backbone.

``build_model("xunet-tiny", 32, dropout=0.1)`` -> an ``nn.Module`` with the common call signature and a
``.config``. ``model.config.to_dict()`` is JSON (checkpoints store it) and :func:`config_from_dict` rebuilds
the identical config.

Presets (parameter counts at the default image size; ``novelview models`` prints them with GFLOPs):

==============  ========  ==========================================================================
preset          default   what for
==============  ========  ==========================================================================
xunet-tiny      32 px     CPU-sized X-UNet: trains in the tests (~1.4M params)
dit-tiny        32 px     CPU-sized geometry-free DiT, condition view also concatenated (~3.8M params)
xunet-small     64 px     single-GPU experiments
dit-small       64 px     DiT-S-like (hidden 384, depth 12) with a 4-block condition stream
xunet-paper     128 px    3DiM as published: ch 256, ch_mult (1,2,2,4), 3 res blocks, emb 1024 (~454M)
dit-reference   64 px     the DiT reference's size: hidden 512, depth 8, heads 8, patch 4
dit-tiny-3d     32 px     dit-tiny reading the lifted feature image: the shipped checkpoint (~4.0M params)
xunet-tiny-3d   32 px     xunet-tiny reading the lifted feature image
*-small-3d      64 px     the one-GPU backbones, 3D-aware
pixelnerf-*     32/64 px  the lifting module alone, rendering RGB: the regression baseline
==============  ========  ==========================================================================
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from novelview import cameras
from novelview.errors import ConfigError
from novelview.models.config import BackboneConfig
from novelview.models.dit import DiT, DiTConfig
from novelview.models.lifting import PixelNeRF, PixelNeRFConfig
from novelview.models.wrapper import ConditionedModel
from novelview.models.xunet import XUNet, XUNetConfig

FAMILIES: dict[str, tuple[type[BackboneConfig], Callable[[Any], nn.Module]]] = {
    "xunet": (XUNetConfig, lambda config: ConditionedModel(XUNet(config))),
    "dit": (DiTConfig, lambda config: ConditionedModel(DiT(config))),
    "pixelnerf": (PixelNeRFConfig, PixelNeRF),
}


@dataclass(frozen=True)
class Preset:
    name: str
    family: str
    default_image_size: int
    fields: dict[str, Any]
    description: str

    def config(self, image_size: int | None = None, **overrides: Any) -> BackboneConfig:
        cls = FAMILIES[self.family][0]
        valid = {f.name for f in dataclasses.fields(cls)} - {"image_size", "preset"}
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise ConfigError(
                f"unknown option(s) {', '.join(unknown)} for preset {self.name!r}; "
                f"valid options: {', '.join(sorted(valid))}"
            )
        size = self.default_image_size if image_size is None else int(image_size)
        return cls(preset=self.name, image_size=size, **{**self.fields, **overrides})


_FAST_POSE = {"pos_freqs": 8, "dir_freqs": 6}  # fewer octaves than 3DiM: small models, small images

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "xunet-tiny", "xunet", 32,
            dict(ch=16, ch_mult=(1, 2, 4, 4), num_res_blocks=1, attn_resolutions=(8, 4), heads=4, emb_ch=64,
                 **_FAST_POSE),
            "CPU-sized X-UNet (tests)",
        ),
        Preset(
            "dit-tiny", "dit", 32,
            # wide and shallow: per-token elementwise work grows with width, matmuls with its square, so
            # 192 wide keeps the CPU busy with matmuls (~56 % of peak vs ~46 % at 128 wide, 4 deep)
            # cond_concat: the condition view is also concatenated on the target's patches (as Zero-1-to-3), the
            # winner of docs/learning-curves.md; without it the model barely used the condition view early on.
            dict(patch_size=4, hidden=192, depth=3, cond_depth=1, heads=3, cond_concat=True, **_FAST_POSE),
            "CPU-sized geometry-free DiT",
        ),
        Preset(
            "xunet-small", "xunet", 64,
            dict(ch=64, ch_mult=(1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(8, 16), heads=4, emb_ch=256,
                 dropout=0.1),
            "single-GPU X-UNet",
        ),
        Preset(
            "dit-small", "dit", 64,
            dict(patch_size=4, hidden=384, depth=12, cond_depth=4, heads=6),
            "DiT-S-sized",
        ),
        Preset(
            "xunet-paper", "xunet", 128,
            dict(ch=256, ch_mult=(1, 2, 2, 4), num_res_blocks=3, attn_resolutions=(8, 16, 32), heads=4,
                 emb_ch=1024, dropout=0.1),
            "3DiM as published (~454M params at 128 px; paper: 471M)",
        ),
        Preset(
            "dit-reference", "dit", 64,
            dict(patch_size=4, hidden=512, depth=8, cond_depth=2, heads=8),
            "the DiT reference's size, pose-aware",
        ),
        # 3D-aware (GeNVS): the same backbones reading the condition view lifted into a feature field and
        # rendered at the target camera (models/lifting.py).
        Preset(
            "dit-tiny-3d", "dit", 32,
            dict(patch_size=4, hidden=192, depth=3, cond_depth=1, heads=3, cond_concat=True, lift=True,
                 **_FAST_POSE),
            "CPU-sized 3D-aware DiT (the shipped checkpoint's backbone)",
        ),
        Preset(
            "xunet-tiny-3d", "xunet", 32,
            dict(ch=16, ch_mult=(1, 2, 4, 4), num_res_blocks=1, attn_resolutions=(8, 4), heads=4, emb_ch=64,
                 cond_concat=True, lift=True, **_FAST_POSE),
            "CPU-sized 3D-aware X-UNet",
        ),
        Preset(
            "dit-small-3d", "dit", 64,
            dict(patch_size=4, hidden=384, depth=12, cond_depth=4, heads=6, cond_concat=True, lift=True,
                 lift_channels=32, lift_width=128, lift_samples=32),
            "one-GPU 3D-aware DiT",
        ),
        Preset(
            "xunet-small-3d", "xunet", 64,
            dict(ch=64, ch_mult=(1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(8, 16), heads=4, emb_ch=256,
                 dropout=0.1, cond_concat=True, lift=True, lift_channels=32, lift_width=128, lift_samples=32),
            "one-GPU 3D-aware X-UNet",
        ),
        Preset(
            "pixelnerf-tiny", "pixelnerf", 32, dict(**_FAST_POSE),
            "pixelNeRF regression baseline (the lifting module rendering RGB; --objective regression)",
        ),
        Preset(
            "pixelnerf-small", "pixelnerf", 64, dict(lift_width=128, lift_samples=32),
            "one-GPU pixelNeRF regression baseline",
        ),
    ]
}


def list_presets() -> list[str]:
    return list(PRESETS)


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[{"dit-seed": "dit-reference"}.get(name, name)]  # the preset's former name
    except KeyError:
        raise ConfigError(f"unknown model preset {name!r}; valid presets: {', '.join(PRESETS)}") from None


def preset_config(preset: str, image_size: int | None = None, **overrides: Any) -> BackboneConfig:
    """The config ``build_model`` would use (``image_size`` None = the preset's default)."""
    return get_preset(preset).config(image_size, **overrides)


def build_from_config(config: BackboneConfig) -> nn.Module:
    return FAMILIES[config.family][1](config)


def build_model(preset: str, image_size: int | None = None, **overrides: Any) -> nn.Module:
    """Build a backbone from a named preset; ``overrides`` replace config fields (unknown -> ConfigError).

    Build on the meta device (``with torch.device("meta"):``) to inspect a large preset without allocating.
    """
    return build_from_config(preset_config(preset, image_size, **overrides))


def config_from_dict(d: dict[str, Any]) -> BackboneConfig:
    """Inverse of ``config.to_dict()`` (tolerates JSON lists for tuple fields)."""
    d = dict(d)
    family = d.pop("family", None)
    if family not in FAMILIES:
        raise ConfigError(f"model config has family {family!r}; expected one of {', '.join(FAMILIES)}")
    cls = FAMILIES[family][0]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown field(s) {', '.join(unknown)} in {family} model config; valid fields: {', '.join(fields)}"
        )
    for name, value in d.items():
        if isinstance(value, list):
            d[name] = tuple(value)
    return cls(**d)


def model_from_config_dict(d: dict[str, Any]) -> nn.Module:
    """Rebuild a model from ``model.config.to_dict()`` (what checkpoints store)."""
    return build_from_config(config_from_dict(d))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def example_inputs(
    config: BackboneConfig,
    batch_size: int = 1,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Random but valid ``(z_t, logsnr, keyword conditioning)`` for a model (cameras on a ring, r = 2.5).

    Made on the CPU, then moved, so ``device="meta"`` works too (for FLOP counts without allocating).
    """
    b, s = batch_size, config.image_size
    az = torch.rand(b, generator=generator) * 360.0
    el = torch.rand(b, generator=generator) * 40.0 - 10.0
    radius = torch.full((b,), 2.5)
    k = cameras.intrinsics_from_fov(50.0, s).expand(b, 3, 3).contiguous()
    kwargs = {
        "cond_image": torch.rand(b, 3, s, s, generator=generator) * 2 - 1,
        "cond_pose": cameras.spherical_to_pose(az, el, radius),
        "target_pose": cameras.spherical_to_pose(az + 30.0 + 300.0 * torch.rand(b, generator=generator), el, radius),
        "cond_K": k,
        "target_K": k.clone(),
    }
    z_t = torch.randn(b, 3, s, s, generator=generator)
    logsnr = torch.rand(b, generator=generator) * 30.0 - 15.0
    return z_t.to(device), logsnr.to(device), {name: t.to(device) for name, t in kwargs.items()}


def forward_flops(model: nn.Module, batch_size: int = 1) -> int:
    """FLOPs of one forward pass at the model's image size (counted on the meta device: nothing runs).

    Pass a model built on the meta device for large presets; a real model is copied to meta first.
    """
    param = next(model.parameters())
    if param.device.type != "meta":
        with torch.device("meta"):
            model = build_from_config(model.config)
    z_t, logsnr, kwargs = example_inputs(model.config, batch_size, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(z_t, logsnr, **kwargs)
    return counter.get_total_flops()


__all__ = [
    "PRESETS",
    "Preset",
    "build_from_config",
    "build_model",
    "config_from_dict",
    "count_parameters",
    "example_inputs",
    "forward_flops",
    "get_preset",
    "list_presets",
    "model_from_config_dict",
    "preset_config",
]
