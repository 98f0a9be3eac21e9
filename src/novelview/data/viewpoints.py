"""Where the cameras of a generated dataset go (shared by `data synth` and `data render`).

Cameras sit on a sphere of ``radius`` around the origin, look at it with world +z up (all pose math in
:mod:`novelview.cameras`), and share one square pinhole camera of horizontal field of view ``fov_deg``.
"""

from __future__ import annotations

import math

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from novelview import cameras
from novelview.errors import ConfigError

Mode = Literal["random", "orbit"]


@dataclass(frozen=True)
class CameraDistribution:
    """Random: azimuth uniform in ``azimuth_range``, elevation uniform in ``elevation_range`` (degrees).
    Orbit: evenly spaced azimuths at the middle of the elevation range."""

    radius: float = 2.5
    fov_deg: float = 40.0
    elevation_range: tuple[float, float] = (-10.0, 45.0)
    azimuth_range: tuple[float, float] = (0.0, 360.0)
    mode: Mode = "random"

    def __post_init__(self) -> None:
        lo, hi = self.elevation_range
        if not -90 < lo <= hi < 90:
            raise ConfigError(f"elevation range must satisfy -90 < min <= max < 90, got {self.elevation_range}")
        if not 1.0 < self.radius < math.inf:
            raise ConfigError(f"camera radius must be finite and exceed 1 (objects fill the unit sphere), "
                              f"got {self.radius}")
        if not 0 < self.fov_deg < 180:
            raise ConfigError(f"field of view must be in (0, 180) degrees, got {self.fov_deg}")
        if self.mode not in ("random", "orbit"):
            raise ConfigError(f"camera mode must be 'random' or 'orbit', got {self.mode!r}")

    def angles(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``(azimuth, elevation)`` in degrees for ``n`` views."""
        if self.mode == "orbit":
            a0, a1 = self.azimuth_range
            azimuth = a0 + (a1 - a0) * np.arange(n) / n
            elevation = np.full(n, 0.5 * sum(self.elevation_range))
        else:
            azimuth = rng.uniform(*self.azimuth_range, size=n)
            elevation = rng.uniform(*self.elevation_range, size=n)
        return azimuth, elevation

    def poses(self, rng: np.random.Generator, n: int) -> Tensor:
        """``[n, 4, 4]`` float64 OpenCV camera-to-world poses."""
        az, el = self.angles(rng, n)
        az_t = torch.from_numpy(az).double()
        return cameras.spherical_to_pose(az_t, torch.from_numpy(el).double(), torch.full_like(az_t, self.radius))

    def intrinsics(self, size: int) -> Tensor:
        """``[3, 3]`` float64 K for square images of ``size`` pixels."""
        focal = cameras.focal_from_fov(torch.tensor(self.fov_deg, dtype=torch.float64), size)
        return cameras.intrinsics(focal, size / 2.0, size / 2.0)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["elevation_range"] = list(self.elevation_range)
        out["azimuth_range"] = list(self.azimuth_range)
        out.update(look_at=[0.0, 0.0, 0.0], world_up=list(cameras.WORLD_UP), convention="opencv_c2w")
        return out


__all__ = ["CameraDistribution"]
