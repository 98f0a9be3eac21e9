"""3DiM X-UNet (Watson et al., "Novel View Synthesis with Diffusion Models", 2022).

The clean condition view and the noisy target view are two *frames* that go through the same UNet (shared
weights); frames are folded into the batch axis (``[B*2, C, H, W]``, condition first) so every conv and
every GroupNorm sees one frame at a time: normalisation statistics are per frame, never mixed (the JAX
reference normalised the two frames together). At ``attn_resolutions`` each block adds self-attention within a
frame, then cross-attention where each frame's queries attend to the *other* frame's keys and values; both
have an output projection (the reference had none).

Every ResNet block is FiLM-modulated per pixel by ``noise-level embedding + pose embedding`` at its
resolution. Each frame is told its own noise level: the target its ``logsnr``, the clean condition frame
the maximum (:data:`LOGSNR_MAX`). Only the target frame is returned, so after the last cross-frame attention
the condition frame can no longer reach the output: the rest of the decoder runs on the target frame alone
(exactly the same result, and the skipped high-resolution blocks are the most expensive ones).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from novelview.errors import ConfigError
from novelview.models.config import LOGSNR_MAX, MAX_DEPTH, MAX_WIDTH, BackboneConfig
from novelview.models.embeddings import NoiseLevelEmbedding, PoseProjection, RayFeatures
from novelview.models.layers import Attention, from_tokens, group_norm, to_tokens, zero_init

# Residual sums are rescaled by 1/sqrt(2) (3DiM / NCSN++ "skip_rescale") so activations keep their scale
# through the deep stack instead of growing with every block.
SKIP_SCALE = 1.0 / math.sqrt(2.0)


@dataclass
class XUNetConfig(BackboneConfig):
    family: ClassVar[str] = "xunet"

    ch: int = 64  # base width
    ch_mult: tuple[int, ...] = (1, 2, 2)  # width multiplier per resolution level
    num_res_blocks: int = 2  # per level on the way down (one more on the way up)
    attn_resolutions: tuple[int, ...] = (8, 16)  # feature-map sides (pixels) with self + cross attention
    heads: int = 4
    emb_ch: int = 256  # width of the noise-level + pose embedding that FiLM reads
    norm_groups: int = 32  # at most this many GroupNorm groups (fewer for narrow layers)

    def validate(self) -> None:
        super().validate()
        self.ch_mult = tuple(self.ch_mult)
        self.attn_resolutions = tuple(self.attn_resolutions)
        if (self.ch < 1 or self.emb_ch < 1 or self.num_res_blocks < 1 or self.heads < 1 or self.norm_groups < 1
                or not self.ch_mult or min(self.ch_mult) < 1):
            raise ConfigError("ch, emb_ch, num_res_blocks, heads, norm_groups must be >= 1 and ch_mult a non-empty "
                              "list of positive multipliers")
        if max(self.ch * max(self.ch_mult), self.emb_ch) > MAX_WIDTH or self.num_res_blocks > MAX_DEPTH:
            raise ConfigError(f"model too large: layer widths (ch * ch_mult, emb_ch) must be at most {MAX_WIDTH} "
                              f"and num_res_blocks at most {MAX_DEPTH}")
        if len(self.ch_mult) > 8:
            raise ConfigError(f"ch_mult has {len(self.ch_mult)} levels; at most 8")
        down = 2 ** (len(self.ch_mult) - 1)
        if self.image_size % down:
            raise ConfigError(
                f"image_size {self.image_size} must be divisible by {down} (2 ** (len(ch_mult) - 1))"
            )
        for mult in self.ch_mult:
            if (self.ch * mult) % self.heads:
                raise ConfigError(f"width {self.ch * mult} is not divisible by heads={self.heads}")


class FiLM(nn.Module):
    """Per-pixel feature-wise affine modulation ``h * (1 + scale) + shift`` from an embedding map."""

    def __init__(self, emb_ch: int, features: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(emb_ch, 2 * features, 1)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.proj(emb).chunk(2, dim=1)
        return torch.addcmul(shift, h, 1 + scale)


def _resample(h: Tensor, mode: str | None) -> Tensor:
    if mode == "down":
        return F.avg_pool2d(h, 2)
    if mode == "up":
        return F.interpolate(h, scale_factor=2.0, mode="nearest")
    return h


class ResBlock(nn.Module):
    """BigGAN-style residual block, optionally resampling, FiLM-conditioned after the first conv."""

    def __init__(
        self, in_ch: int, out_ch: int, emb_ch: int, dropout: float, max_groups: int, resample: str | None = None
    ) -> None:
        super().__init__()
        self.resample = resample
        self.norm1 = group_norm(in_ch, max_groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = group_norm(out_ch, max_groups)
        self.film = FiLM(emb_ch, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip: nn.Module = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = F.silu(self.norm1(x))
        h = _resample(h, self.resample)
        x = _resample(x, self.resample)
        h = self.conv1(h)
        h = F.silu(self.film(self.norm2(h), emb))
        h = self.conv2(self.dropout(h))
        return (h + self.skip(x)) * SKIP_SCALE


class FrameAttention(nn.Module):
    """Attention over the pixels of one frame (``cross=False``) or of the other frame (``cross=True``)."""

    def __init__(self, ch: int, heads: int, max_groups: int, cross: bool) -> None:
        super().__init__()
        self.cross = cross
        self.norm = group_norm(ch, max_groups)
        self.attn = Attention(ch, heads)
        zero_init(self.attn.proj)

    def forward(self, x: Tensor) -> Tensor:
        n, c, height, width = x.shape
        tokens = to_tokens(self.norm(x))
        context = None
        if self.cross:  # frames are interleaved (cond, target) per sample: swap them
            context = tokens.view(n // 2, 2, height * width, c).flip(1).reshape(n, height * width, c)
        out = self.attn(tokens, context)
        return (x + from_tokens(out, height, width)) * SKIP_SCALE


class XUNetBlock(nn.Module):
    """ResBlock, then (at attention resolutions) self-attention and cross-frame attention."""

    def __init__(self, in_ch: int, out_ch: int, config: XUNetConfig, use_attn: bool) -> None:
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, config.emb_ch, config.dropout, config.norm_groups)
        self.attn = (
            nn.Sequential(
                FrameAttention(out_ch, config.heads, config.norm_groups, cross=False),
                FrameAttention(out_ch, config.heads, config.norm_groups, cross=True),
            )
            if use_attn
            else nn.Identity()
        )

    @property
    def attends(self) -> bool:
        return not isinstance(self.attn, nn.Identity)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return self.attn(self.res(x, emb))


class Stage(NamedTuple):
    """One step of the UNet's forward: a block at resolution ``level``; ``kind`` says how it uses skips."""

    block: nn.Module
    level: int
    kind: Literal["down", "middle", "up"]  # down: its output is a skip; up: it reads one


class XUNet(nn.Module):
    """3DiM X-UNet backbone; :class:`~novelview.models.wrapper.ConditionedModel` puts the common call signature in
    front of it."""

    def __init__(self, config: XUNetConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        levels = len(c.ch_mult)
        widths = [c.ch * m for m in c.ch_mult]
        self.size_multiple = 2 ** (levels - 1)

        self.noise_embed = NoiseLevelEmbedding(c.emb_ch)
        # One projection per level: rays are traced at each level's own resolution (exact pixel centres).
        self.pose_proj = nn.ModuleList(PoseProjection(c, c.emb_ch) for _ in widths)
        self.conv_in = nn.Conv2d(c.in_channels, c.ch, 3, padding=1)

        res = c.image_size
        skips = [c.ch]
        ch = c.ch
        self.down = nn.ModuleList()
        for i, width in enumerate(widths):
            level = nn.Module()
            level.blocks = nn.ModuleList()
            for _ in range(c.num_res_blocks):
                level.blocks.append(XUNetBlock(ch, width, c, res in c.attn_resolutions))
                ch = width
                skips.append(ch)
            if i != levels - 1:
                level.downsample = ResBlock(ch, ch, c.emb_ch, c.dropout, c.norm_groups, resample="down")
                skips.append(ch)
                res //= 2
            self.down.append(level)

        self.middle = XUNetBlock(ch, ch, c, res in c.attn_resolutions)

        self.up = nn.ModuleList()
        for i in reversed(range(levels)):
            level = nn.Module()
            level.blocks = nn.ModuleList()
            for _ in range(c.num_res_blocks + 1):
                level.blocks.append(XUNetBlock(ch + skips.pop(), widths[i], c, res in c.attn_resolutions))
                ch = widths[i]
            if i != 0:
                level.upsample = ResBlock(ch, ch, c.emb_ch, c.dropout, c.norm_groups, resample="up")
                res *= 2
            self.up.insert(0, level)  # self.up[i] serves level i
        assert not skips

        self.stages = self._stages()
        # The condition frame is dropped right after the last stage with cross-frame attention (-1: none has
        # any, so only channel concatenation, if any, mixes the frames and it is dropped after conv_in).
        attending = [n for n, s in enumerate(self.stages) if isinstance(s.block, XUNetBlock) and s.block.attends]
        self.last_cross_attention = attending[-1] if attending else -1

        self.norm_out = group_norm(ch, c.norm_groups)
        self.conv_out = zero_init(nn.Conv2d(ch, c.out_channels, 3, padding=1))

    def _stages(self) -> list[Stage]:
        stages = []
        for i, level in enumerate(self.down):
            stages += [Stage(block, i, "down") for block in level.blocks]
            if hasattr(level, "downsample"):
                stages.append(Stage(level.downsample, i + 1, "down"))
        stages.append(Stage(self.middle, len(self.down) - 1, "middle"))
        for i in reversed(range(len(self.up))):
            stages += [Stage(block, i, "up") for block in self.up[i].blocks]
            if hasattr(self.up[i], "upsample"):
                stages.append(Stage(self.up[i].upsample, i - 1, "middle"))
        return stages

    def pose_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        return [(height >> i, width >> i) for i in range(len(self.config.ch_mult))]

    def forward(self, target_in: Tensor, cond_image: Tensor, logsnr: Tensor, rays: list[RayFeatures]) -> Tensor:
        """``target_in [B, in_channels, H, W]`` (noisy view first), the condition view, noise level, ray features
        per level. The condition frame reads the condition view in place of the noisy one, and the target's other
        input channels unchanged, so both frames go through the same ``conv_in``."""
        # Embedding maps, one per level: [B*2, emb_ch, h, w] (frame axis folded into batch, cond first).
        frame_logsnr = torch.stack([torch.full_like(logsnr, LOGSNR_MAX), logsnr], dim=1).flatten()
        noise = self.noise_embed(frame_logsnr)[:, :, None, None]
        embs = [F.silu(noise + proj(r)) for proj, r in zip(self.pose_proj, rays)]
        cond_in = torch.cat([cond_image, target_in[:, 3:]], dim=1)
        h = self.conv_in(torch.stack([cond_in, target_in], dim=1).flatten(0, 1))
        skips = [h]
        if self.last_cross_attention == -1:
            h, skips, embs = _targets_only(h, skips, embs)
        for n, stage in enumerate(self.stages):
            x = torch.cat([h, skips.pop()], dim=1) if stage.kind == "up" else h
            h = stage.block(x, embs[stage.level])
            if stage.kind == "down":
                skips.append(h)
            if n == self.last_cross_attention:
                h, skips, embs = _targets_only(h, skips, embs)
        # h is the target frame alone now: per-frame norms make dropping the condition frame exact.
        return self.conv_out(F.silu(self.norm_out(h)))


def _targets_only(h: Tensor, skips: list[Tensor], embs: list[Tensor]) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """Drop the condition frame once nothing later attends to it; frames are interleaved (cond, target)."""
    return h[1::2], [s[1::2] for s in skips], [e[1::2] for e in embs]


__all__ = ["XUNet", "XUNetConfig"]
