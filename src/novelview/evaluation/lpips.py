"""LPIPS (Zhang et al. 2018, AlexNet variant) without torchvision.

torchmetrics ships LPIPS' learned linear heads (``lpips_models/alex.pth``) but builds the AlexNet backbone with
torchvision, which this project does not depend on. The backbone is five conv layers, so we define it here
with the same parameter names as ``torchvision.models.alexnet().features`` and load the user's ImageNet
weights (``--lpips-weights``: a torchvision AlexNet state dict, full model or ``features`` only). Without that
file LPIPS is reported as unavailable; it is never computed with random weights outside the tests.

Images smaller than 64 px are upsampled bilinearly to 64 px first: AlexNet's stride-4 stem and three max-pools
leave nothing of a 16 px image. Papers report LPIPS at 64 px or more, where this does not apply.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from novelview.errors import ConfigError

#: The layers whose ReLU outputs LPIPS compares (indices into ``features``) and their widths.
_TAPS = (1, 4, 7, 9, 11)
_CHANNELS = (64, 192, 384, 256, 256)
# features index -> (in, out, kernel, stride, padding) of torchvision's AlexNet convolutions
_CONVS = {
    0: (3, 64, 11, 4, 2),
    3: (64, 192, 5, 1, 2),
    6: (192, 384, 3, 1, 1),
    8: (384, 256, 3, 1, 1),
    10: (256, 256, 3, 1, 1),
}
MIN_SIZE = 64


def heads_path() -> Path:
    """torchmetrics' shipped AlexNet LPIPS linear heads (v0.1)."""
    import torchmetrics.functional.image.lpips as tm_lpips

    return Path(tm_lpips.__file__).resolve().parent / "lpips_models" / "alex.pth"


def alexnet_features() -> nn.Sequential:
    """``torchvision.models.alexnet().features`` layer for layer (so its state-dict keys match)."""
    layers: list[nn.Module] = []
    for i in range(13):
        if i in _CONVS:
            cin, cout, k, s, p = _CONVS[i]
            layers.append(nn.Conv2d(cin, cout, kernel_size=k, stride=s, padding=p))
        elif i in (2, 5, 12):
            layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
        else:
            layers.append(nn.ReLU(inplace=False))
    return nn.Sequential(*layers)


class LPIPS(nn.Module):
    """``LPIPS(pred, target) -> [B]`` for images in [-1, 1] (lower = more similar)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = alexnet_features()
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in _CHANNELS)
        # LPIPS' input normalisation (its ScalingLayer), applied to [-1, 1] images.
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None], persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None], persistent=False)
        self.requires_grad_(False)
        self.eval()

    def _taps(self, x: Tensor) -> list[Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _TAPS:
                out.append(x / torch.sqrt(1e-8 + (x**2).sum(dim=1, keepdim=True)))  # unit-normalise channels
            if i == _TAPS[-1]:
                break
        return out

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        pred, target = pred.float().clamp(-1, 1), target.float().clamp(-1, 1)
        if min(pred.shape[-2:]) < MIN_SIZE:
            size = (max(MIN_SIZE, pred.shape[-2]), max(MIN_SIZE, pred.shape[-1]))
            pred = F.interpolate(pred, size=size, mode="bilinear", align_corners=False)
            target = F.interpolate(target, size=size, mode="bilinear", align_corners=False)
        a = self._taps((pred - self.shift) / self.scale)
        b = self._taps((target - self.shift) / self.scale)
        return sum(head((fa - fb) ** 2).mean(dim=(1, 2, 3)) for head, fa, fb in zip(self.heads, a, b))


def _load_state(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise ConfigError(f"{path}: LPIPS weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle / zip errors of a foreign file come in many types
        # torch's own message for a foreign pickle advises weights_only=False, which we never do for a user file.
        detail = "not a torch.save file of tensors only" if "Weights only load failed" in str(err) else str(err)[:200]
        raise ConfigError(f"{path}: not a readable torch state dict ({detail})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: expected a state dict (torchvision AlexNet), got {type(state).__name__}")
    return state


def load_lpips(backbone_weights: str | Path, heads: str | Path | None = None) -> LPIPS:
    """LPIPS with AlexNet weights from ``backbone_weights`` (torchvision key format: ``features.0.weight`` ...
    or ``0.weight`` ...) and the linear heads shipped by torchmetrics (or ``heads``)."""
    path = Path(backbone_weights)
    state = _load_state(path)
    features = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}
    model = LPIPS()
    expected = set(model.features.state_dict())
    missing = sorted(expected - set(features))
    if missing:
        raise ConfigError(
            f"{path}: not a torchvision AlexNet state dict (missing {missing[:4]}); "
            "pass the ImageNet weights of torchvision.models.alexnet"
        )
    try:
        model.features.load_state_dict({k: features[k] for k in expected})
    except RuntimeError as err:
        raise ConfigError(f"{path}: AlexNet weights have the wrong shapes ({err})") from None
    head_state = _load_state(Path(heads) if heads is not None else heads_path())
    for i, head in enumerate(model.heads):
        head.weight.copy_(head_state[f"lin{i}.model.1.weight"])
    return model


__all__ = ["LPIPS", "MIN_SIZE", "alexnet_features", "heads_path", "load_lpips"]
