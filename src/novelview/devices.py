"""Which torch device to run on: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, checked before any work."""

from __future__ import annotations

import torch

from novelview.errors import ConfigError


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; a device this machine lacks is a ConfigError."""
    if isinstance(name, torch.device):
        device = name
    elif not isinstance(name, str):
        raise ConfigError(f"device must be a name such as 'cpu', 'cuda' or 'auto', got {name!r}")
    elif name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ConfigError(f"device {name!r}: not a device; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name}: this machine has no CUDA device (torch {torch.__version__}); use cpu or "
                          "auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device


__all__ = ["resolve_device"]
