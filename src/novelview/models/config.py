"""The fields every model config has: image size, output head, how cameras are encoded, what the wrapper adds.

Each backbone's config (:class:`~novelview.models.dit.DiTConfig`, :class:`~novelview.models.xunet.XUNetConfig`,
:class:`~novelview.models.lifting.PixelNeRFConfig`) subclasses :class:`BackboneConfig` and adds its architecture
fields. Configs arrive from JSON (``config.json``, ``--override``), so every field is type-checked on creation and a
wrong value is a :class:`~novelview.errors.ConfigError` that names it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from novelview import cameras
from novelview.errors import ConfigError

#: Field of view assumed for the ray bounds of a model configured without them (our generated data's).
DEFAULT_FOV_DEG = 40.0
#: logSNR range the noise-level embedding resolves; the clean condition frame is told ``LOGSNR_MAX``.
LOGSNR_MIN, LOGSNR_MAX = -20.0, 20.0
POSE_MODES = ("rays", "plucker")
# Upper bounds of model configs (config.json and --override are user input): far above every preset, and low
# enough that a typo such as depth=100000000 is refused at once instead of allocating for minutes.
MAX_IMAGE_SIZE = 1024
MAX_FREQS = 32
MAX_WIDTH = 4096  # channels of any layer
MAX_DEPTH = 64  # blocks of one stack or level
MAX_SAMPLES = 1024  # points per ray of the lifting module


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_TYPE_CHECKS = {
    "int": _is_int,
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "str | None": lambda v: v is None or isinstance(v, str),
    "tuple[int, ...]": lambda v: isinstance(v, (tuple, list)) and all(_is_int(x) for x in v),
}


@dataclass
class BackboneConfig:
    """Fields common to every backbone. Subclasses set ``family`` and add their architecture fields."""

    family: ClassVar[str] = ""

    preset: str | None = None  # the preset this config came from (informational; build_model sets it)
    image_size: int = 64
    learn_variance: bool = False  # 6 output channels: prediction, then variance interpolation v in [-1, 1]
    cond_concat: bool = False  # also concatenate the condition view onto the target's input channels
    # Self-conditioning (Chen et al. 2022): the target also reads the previous x0 estimate (3 more channels).
    self_condition: bool = False
    pose_mode: str = "rays"  # "rays" (origin + direction) or "plucker"
    pos_freqs: int = 15  # Fourier octaves of ray origins / Plücker moments (3DiM: 15)
    dir_freqs: int = 8  # Fourier octaves of ray directions (3DiM: 8)
    pose_scale: float = 1.0  # camera translations are divided by this (see models/embeddings.py)
    dropout: float = 0.0
    # 3D-aware conditioning (models/lifting.py, GeNVS): the condition view(s) lifted into a feature field and
    # volume-rendered at the target camera; the target reads that feature image as more input channels.
    lift: bool = False
    lift_channels: int = 16  # feature channels of the rendered image (RGB and opacity come on top)
    lift_width: int = 64  # width of the image encoder's output and of the point MLP
    lift_samples: int = 16  # points per target ray between near and far
    lift_resolution: int = 0  # side of the rendered feature image; 0 = half the image size (then upsampled)
    lift_freqs: int = 6  # Fourier octaves of the point positions
    # The lifter's RGB render (upsampled) is added to the network's first three output channels, so an
    # x0-predicting model starts from the render and learns a correction to it (x0-prediction only).
    render_skip: bool = False
    # Distances along the target's rays (world units) between which the scene lies; training sets them from its
    # cameras (cameras.scene_ray_bounds); 0, 0 = those of cameras pose_scale away with a 40 degree view.
    near: float = 0.0
    far: float = 0.0

    @property
    def out_channels(self) -> int:
        return 6 if self.learn_variance else 3

    @property
    def lift_image_channels(self) -> int:
        """Channels of the rendered feature image: features, RGB, opacity (0 without lifting)."""
        return self.lift_channels + 4 if self.lift else 0

    @property
    def in_channels(self) -> int:
        """Channels of the target's input: noisy image, then condition view, x0 estimate and feature image."""
        return 3 * (1 + int(self.cond_concat) + int(self.self_condition)) + self.lift_image_channels

    @property
    def render_size(self) -> int:
        return self.lift_resolution or max(1, self.image_size // 2)

    def ray_bounds(self) -> tuple[float, float]:
        """``(near, far)`` along the target rays, in world units."""
        if self.far > 0:
            return self.near, self.far
        return cameras.scene_ray_bounds(self.pose_scale, self.pose_scale, DEFAULT_FOV_DEG)

    def __post_init__(self) -> None:
        self._check_types()
        self.validate()

    def _check_types(self) -> None:
        """Options arrive from JSON (``--override``, config.json): a wrong type is a user error, named here."""
        for f in dataclasses.fields(self):
            check = _TYPE_CHECKS.get(str(f.type))
            value = getattr(self, f.name)
            if check is not None and not check(value):
                raise ConfigError(f"model option {f.name}={value!r}: expected {f.type}")

    def validate(self) -> None:
        if not 8 <= self.image_size <= MAX_IMAGE_SIZE:
            raise ConfigError(f"image_size must lie in [8, {MAX_IMAGE_SIZE}], got {self.image_size}")
        if self.pose_mode not in POSE_MODES:
            raise ConfigError(f"pose_mode must be one of {', '.join(POSE_MODES)}, got {self.pose_mode!r}")
        if not all(0 <= f <= MAX_FREQS for f in (self.pos_freqs, self.dir_freqs, self.lift_freqs)):
            raise ConfigError(f"pos_freqs, dir_freqs and lift_freqs must lie in [0, {MAX_FREQS}]")
        if not self.pose_scale > 0:
            raise ConfigError(f"pose_scale must be positive, got {self.pose_scale}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must lie in [0, 1), got {self.dropout}")
        if min(self.lift_channels, self.lift_resolution) < 0 or min(self.lift_width, self.lift_samples) < 1:
            raise ConfigError("lift_channels and lift_resolution must be >= 0, lift_width and lift_samples >= 1")
        if max(self.lift_channels, self.lift_width) > MAX_WIDTH or self.lift_resolution > MAX_IMAGE_SIZE:
            raise ConfigError(f"lift_channels and lift_width must be at most {MAX_WIDTH}, lift_resolution at most "
                              f"{MAX_IMAGE_SIZE}")
        if self.lift_samples > MAX_SAMPLES:
            raise ConfigError(f"lift_samples must be at most {MAX_SAMPLES}, got {self.lift_samples}")
        if self.render_skip and not self.lift:
            raise ConfigError("render_skip adds the lifter's render to the output: it needs lift=true")
        if (self.near or self.far) and not 0 <= self.near < self.far:
            raise ConfigError(f"need 0 <= near < far (or both 0 for automatic bounds), got {self.near}, {self.far}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists); :func:`novelview.models.presets.config_from_dict` inverts it."""
        out: dict[str, Any] = {"family": self.family}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


__all__ = ["LOGSNR_MAX", "LOGSNR_MIN", "MAX_DEPTH", "MAX_IMAGE_SIZE", "MAX_WIDTH", "POSE_MODES", "BackboneConfig"]
