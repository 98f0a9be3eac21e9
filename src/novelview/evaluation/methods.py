"""What gets evaluated: the model under test and the baselines, behind one ``predict`` interface.

Every method answers the same question -- given one posed condition view, what do these target cameras see? --
so the protocol can score them identically:

* ``model``: a diffusion checkpoint, sampled with the run's sampler / steps / guidance (a regression checkpoint
  is a one-step predictor and ignores them);
* ``copy-condition``: the condition view itself, for every target (what a model that ignores the pose gets);
* ``white-background``: an all-white image (what a model that outputs nothing gets; on white-background data it
  scores deceptively well on full-image PSNR, which is why masked metrics exist);
* ``checkpoint:<name>``: any further checkpoint (``--baseline-checkpoint``), typically a regression model;
* ``model-mean-of-K``: the pixel mean of K samples of the model (``--samples K``), its estimate of the posterior
  mean E[target | condition] -- the quantity a regression model predicts, so the fair one to compare in PSNR.
  A single posterior sample has, in expectation, twice the squared error of that mean (the error of the mean
  plus the sample's own variance), so sample-vs-regression PSNR is not a test of how well the model learned.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from novelview.errors import ConfigError
from novelview.sampling import SamplingSettings, View


class Method(Protocol):
    name: str

    def predict(self, source: View, target_poses: Tensor, target_K: Tensor, generator: torch.Generator) -> Tensor:
        """``[N, 3, H, W]`` in [-1, 1]: one image per target camera, from the single ``source`` view."""
        ...

    def describe(self) -> dict[str, object]:
        ...


@dataclass
class CopyCondition:
    name: str = "copy-condition"

    def predict(self, source: View, target_poses: Tensor, target_K: Tensor, generator: torch.Generator) -> Tensor:
        return source.image[None].expand(target_poses.shape[0], *source.image.shape).clone()

    def describe(self) -> dict[str, object]:
        return {"kind": "baseline", "what": "the condition view, unchanged, for every target"}


@dataclass
class WhiteBackground:
    name: str = "white-background"

    def predict(self, source: View, target_poses: Tensor, target_K: Tensor, generator: torch.Generator) -> Tensor:
        return torch.ones(target_poses.shape[0], *source.image.shape, dtype=source.image.dtype)

    def describe(self) -> dict[str, object]:
        return {"kind": "baseline", "what": "an all-white image (the background) for every target"}


@dataclass
class CheckpointMethod:
    """A loaded checkpoint (via :class:`novelview.pipeline.Pipeline`), sampled per :class:`SamplingSettings`."""

    name: str
    path: Path
    settings: SamplingSettings = field(default_factory=SamplingSettings)
    device: str = "cpu"

    def __post_init__(self) -> None:
        from novelview.pipeline import Pipeline

        self.pipe = Pipeline.from_checkpoint(self.path, device=self.device)
        self.settings.check(self.pipe.config.diffusion)

    @property
    def image_size(self) -> int:
        return self.pipe.image_size

    @property
    def is_regression(self) -> bool:
        return self.pipe.is_regression

    @property
    def lifts(self) -> bool:
        """Whether the checkpoint is 3D-aware (has a lifting module, so ``settings.strength`` below 1 applies)."""
        return self.pipe.lifts

    @property
    def guidance(self) -> float:
        g = self.settings.guidance
        return self.pipe.default_guidance() if g is None else g

    def views(
        self, source: View, target_poses: Tensor, target_K: Tensor, generator: torch.Generator,
        settings: SamplingSettings,
    ) -> Tensor:
        """Views of the checkpoint through the pipeline (its autocast included), sampled per ``settings`` with
        noise from ``generator``; on the CPU."""
        return self.pipe.generate(source, target_poses, settings, target_K=target_K, generator=generator).float().cpu()

    def predict(self, source: View, target_poses: Tensor, target_K: Tensor, generator: torch.Generator) -> Tensor:
        """Each target conditioned on the source only (targets are batched)."""
        return self.views(source, target_poses, target_K, generator, replace(self.settings, stochastic=False))

    def orbit(
        self, source: View, target_poses: Tensor, target_K: Tensor, generator: torch.Generator, stochastic: bool = True
    ) -> Tensor:
        """Views generated one after another with 3DiM stochastic conditioning (or independently)."""
        return self.views(source, target_poses, target_K, generator, replace(self.settings, stochastic=stochastic))

    def describe(self) -> dict[str, object]:
        cfg = self.pipe.config
        out: dict[str, object] = {
            "kind": "checkpoint",
            "path": str(self.path),
            "objective": cfg.objective,
            "model": cfg.model,
            "image_size": cfg.image_size,
        }
        if not self.is_regression:
            out.update(sampler=self.settings.sampler, steps=self.settings.steps, guidance=self.guidance,
                       strength=self.settings.strength, prediction=cfg.diffusion.prediction)
        return out


@dataclass
class SampleMean:
    """The pixel mean of ``samples`` independent samples of a diffusion checkpoint, each target conditioned on the
    source only.

    Drawn without guidance (w = 1): guided sampling draws from a sharpened distribution whose mean is not
    E[target | condition]. The first draw uses the same noise as the model's own single sample.
    """

    model: CheckpointMethod
    samples: int
    name: str = ""

    def __post_init__(self) -> None:
        if self.samples < 2:
            raise ConfigError(f"--samples must be at least 2 to average samples, got {self.samples}")
        if self.model.is_regression:
            raise ConfigError("--samples averages samples of a diffusion checkpoint; a regression checkpoint "
                              "predicts one image, so leave --samples out")
        self.name = self.name or f"{self.model.name}-mean-of-{self.samples}"
        self._settings = replace(self.model.settings, stochastic=False, guidance=1.0)

    def predict(self, source: View, target_poses: Tensor, target_K: Tensor, generator: torch.Generator) -> Tensor:
        total = torch.zeros(())
        for _ in range(self.samples):
            total = total + self.model.views(source, target_poses, target_K, generator, self._settings)
        return total / self.samples

    def describe(self) -> dict[str, object]:
        return {"kind": "sample-mean", "of": self.model.name, "samples": self.samples, "guidance": 1.0,
                "sampler": self.model.settings.sampler, "steps": self.model.settings.steps,
                "what": "pixel mean of independent samples: the model's estimate of E[target | condition]"}


__all__ = ["CheckpointMethod", "CopyCondition", "Method", "SampleMean", "WhiteBackground"]
