"""Diffusion Transformer with cross-attention to the condition view (the DiT seed, made pose-aware).

Two token streams, each a patchified image plus a fixed 2-D sin-cos position embedding plus the
patchified per-pixel pose embedding of its camera (both cameras in the condition camera's frame):

* the **condition stream** (clean view) is refined by ``cond_depth`` blocks of its own
  (self-attention + MLP), then layer-normalised once; it is computed once per forward, not per block, and
  modulated by the *target's* noise level, so what it extracts can depend on how noisy the target is;
* the **target stream** (noisy view) runs ``depth`` blocks of self-attention, cross-attention to the
  refined condition tokens, and MLP.

Every block is adaLN-Zero modulated by the noise-level embedding (Peebles & Xie, facebookresearch/DiT), and
the final layer is zero-initialised, so a fresh model predicts exactly zero. Fixes over the DiT reference: the
position table is a (non-persistent) buffer that follows ``.to(device)``; there are no aliased modules, so
no duplicate keys in ``state_dict``; the noise level is embedded once (the reference scaled timesteps twice);
the cameras are an input at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from novelview.errors import ConfigError
from novelview.models.config import MAX_DEPTH, MAX_WIDTH, BackboneConfig
from novelview.models.embeddings import NoiseLevelEmbedding, PoseProjection, RayFeatures
from novelview.models.layers import Attention, Mlp, modulate, to_tokens, zero_init


@dataclass
class DiTConfig(BackboneConfig):
    family: ClassVar[str] = "dit"

    patch_size: int = 4
    hidden: int = 384
    depth: int = 6  # target-stream blocks (self-attention, cross-attention, MLP)
    cond_depth: int = 2  # condition-stream blocks (self-attention, MLP); 0 = raw patch embeddings
    heads: int = 6
    mlp_ratio: float = 4.0
    qk_norm: bool = True  # RMS-normalise queries and keys (bounded logits under bf16)

    def validate(self) -> None:
        super().validate()
        if min(self.patch_size, self.hidden, self.heads) < 1 or not self.mlp_ratio > 0:
            raise ConfigError("patch_size, hidden and heads must be >= 1 and mlp_ratio positive")
        if self.image_size % self.patch_size:
            raise ConfigError(f"image_size {self.image_size} must be divisible by patch_size {self.patch_size}")
        if self.hidden % self.heads:
            raise ConfigError(f"hidden {self.hidden} must be divisible by heads {self.heads}")
        if self.hidden % 4:
            raise ConfigError(f"hidden {self.hidden} must be divisible by 4 (2-D sin-cos position embedding)")
        if self.depth < 1 or self.cond_depth < 0:
            raise ConfigError("depth must be >= 1 and cond_depth >= 0")
        if self.hidden > MAX_WIDTH or max(self.depth, self.cond_depth) > MAX_DEPTH or self.mlp_ratio > 16:
            raise ConfigError(f"model too large: hidden must be at most {MAX_WIDTH}, depth and cond_depth at most "
                              f"{MAX_DEPTH}, mlp_ratio at most 16")


def sincos_2d(dim: int, grid: int) -> Tensor:
    """Fixed 2-D sin-cos position embedding ``[grid*grid, dim]``: half the channels per axis (as MAE / DiT)."""
    quarter = dim // 4
    omega = 1.0 / 10_000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    coords = torch.arange(grid, dtype=torch.float64)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")

    def axis(pos: Tensor) -> Tensor:
        out = pos.reshape(-1, 1) * omega[None]
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)

    return torch.cat([axis(yy), axis(xx)], dim=1).float()


class DiTBlock(nn.Module):
    """adaLN-Zero transformer block: self-attention, optional cross-attention to a context, MLP."""

    def __init__(self, config: DiTConfig, cross: bool) -> None:
        super().__init__()
        dim = config.hidden
        self.cross = cross
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, config.heads, qk_norm=config.qk_norm)
        if cross:
            self.norm_cross = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
            self.cross_attn = Attention(dim, config.heads, qk_norm=config.qk_norm)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * config.mlp_ratio), config.dropout)
        # shift, scale, gate per sub-layer; zero-init so every block starts as the identity (adaLN-Zero).
        self.modulation = nn.Sequential(nn.SiLU(), zero_init(nn.Linear(dim, (9 if cross else 6) * dim)))

    def forward(self, x: Tensor, c: Tensor, context: Tensor | None = None) -> Tensor:
        mods = [m[:, None] for m in self.modulation(c).chunk(9 if self.cross else 6, dim=1)]
        x = torch.addcmul(x, mods[2], self.attn(modulate(self.norm1(x), mods[0], mods[1])))
        if self.cross:
            x = torch.addcmul(x, mods[8], self.cross_attn(modulate(self.norm_cross(x), mods[6], mods[7]), context))
        return torch.addcmul(x, mods[5], self.mlp(modulate(self.norm2(x), mods[3], mods[4])))


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm and a zero-initialised linear map to patch pixels."""

    def __init__(self, dim: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Sequential(nn.SiLU(), zero_init(nn.Linear(dim, 2 * dim)))
        self.linear = zero_init(nn.Linear(dim, patch_size * patch_size * out_channels))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.modulation(c)[:, None].chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DiT(nn.Module):
    """Pose-conditional DiT backbone; :class:`~novelview.models.wrapper.ConditionedModel` puts the common call
    signature in front of it."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        p, dim = c.patch_size, c.hidden
        self.grid = c.image_size // p
        self.size_multiple = p

        self.noise_embed = NoiseLevelEmbedding(dim)
        # One pose projection for both streams: the same rays mean the same thing in either stream.
        self.pose_proj = PoseProjection(c, dim, patch=p)
        self.target_patch = nn.Conv2d(c.in_channels, dim, p, stride=p)
        self.cond_patch = nn.Conv2d(3, dim, p, stride=p)
        self.register_buffer("pos_embed", sincos_2d(dim, self.grid)[None], persistent=False)

        self.cond_blocks = nn.ModuleList(DiTBlock(c, cross=False) for _ in range(c.cond_depth))
        self.cond_norm = nn.LayerNorm(dim, eps=1e-6)
        self.blocks = nn.ModuleList(DiTBlock(c, cross=True) for _ in range(c.depth))
        self.final = FinalLayer(dim, p, c.out_channels)
        self._init_weights()

    def _init_weights(self) -> None:
        # DiT: xavier-uniform linear layers and patch embeddings, N(0, 0.02) noise MLP; then re-zero the
        # adaLN-Zero modulations and the output layer that the blanket init just overwrote.
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.xavier_uniform_(m.weight.view(m.weight.shape[0], -1))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for m in self.noise_embed.mlp:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
        for block in [*self.cond_blocks, *self.blocks]:
            zero_init(block.modulation[-1])
        zero_init(self.final.modulation[-1])
        zero_init(self.final.linear)

    def _unpatchify(self, x: Tensor) -> Tensor:
        b, p, g, ch = x.shape[0], self.config.patch_size, self.grid, self.config.out_channels
        x = x.view(b, g, g, p, p, ch).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(b, ch, g * p, g * p)

    def pose_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        return [(height, width)]

    def forward(self, target_in: Tensor, cond_image: Tensor, logsnr: Tensor, rays: list[RayFeatures]) -> Tensor:
        """``target_in [B, in_channels, H, W]`` (noisy view first), the condition view, noise level, ray features."""
        c = self.config
        b, _, height, width = target_in.shape
        if height != c.image_size or width != c.image_size:
            raise ValueError(f"this DiT was built for {c.image_size}x{c.image_size} images, got {height}x{width}")
        emb = self.noise_embed(logsnr)
        pose = to_tokens(self.pose_proj(rays[0])).unflatten(0, (b, 2))
        x = to_tokens(self.target_patch(target_in)) + self.pos_embed + pose[:, 1]
        y = to_tokens(self.cond_patch(cond_image)) + self.pos_embed + pose[:, 0]
        for block in self.cond_blocks:
            y = block(y, emb)
        y = self.cond_norm(y)
        for block in self.blocks:
            x = block(x, emb, y)
        return self._unpatchify(self.final(x, emb))


__all__ = ["DiT", "DiTConfig", "sincos_2d"]
