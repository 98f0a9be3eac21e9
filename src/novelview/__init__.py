"""novelview: single-image novel view synthesis with pose-conditional diffusion models.

Quick start::

    from novelview import Pipeline
    pipe = Pipeline.from_checkpoint()            # the shipped default model
    views = pipe.orbit("examples/input.png", n_views=24)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# Heavy modules load on first use so `import novelview` (and the CLI's --help) stays fast.
_LAZY = {
    "Pipeline": ("novelview.pipeline", "Pipeline"),
    "TrainConfig": ("novelview.train", "TrainConfig"),
    "train": ("novelview.train", "train"),
    "build_model": ("novelview.models.presets", "build_model"),
    "MultiViewDataset": ("novelview.data.views", "MultiViewDataset"),
    "DiffusionConfig": ("novelview.diffusion", "DiffusionConfig"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'novelview' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
