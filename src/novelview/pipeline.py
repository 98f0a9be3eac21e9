"""The Python API: load a checkpoint once, then turn one picture into novel views or an orbit.

    from novelview import Pipeline
    pipe = Pipeline.from_checkpoint()                              # shipped checkpoint, a checkpoint or run dir
    side = pipe.synthesize("in.png", azimuth=90, elevation=0)[0]   # PIL image
    frames = pipe.orbit("in.png", n_views=24)                      # list of PIL images, frame 0 = the input

Cameras. The input picture is assumed to be taken by the *canonical camera* of the training data: azimuth 0,
elevation = the data's mean elevation, at the data's radius and field of view (``config.json`` -> ``data``),
each overridable (``input_elevation=``, ``input_pose=``, ``fov_deg=``). ``azimuth`` / ``elevation`` arguments are
always *relative to the input view* (degrees); absolute cameras are given as 4x4 OpenCV camera-to-world
matrices in the same world frame as ``input_pose`` (the canonical one by default: object at the origin, +z up).

A view of a dataset is an input with a known camera: ``pipe.dataset_view("data/chair", view=3)`` is its picture
at the model's size, its own pose and intrinsics, and the frame of its capture (the point its cameras look at
and their up), so relative turns go around the object at the input's real elevation, and absolute target
cameras are in the dataset's own world frame.

Generated views come back as :class:`PosedViews`, a list of pictures that also holds their cameras:
``views.save_transforms("out/")`` writes them as a nerfstudio / instant-ngp capture.

Thin by design: camera math lives in ``cameras``, pixels in ``images``, the denoising in ``sampling``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from novelview import cameras, images
from novelview.checkpoint import CheckpointConfig, load_model
from novelview.devices import resolve_device
from novelview.errors import ConfigError, DataError, NovelviewError, PoseError
from novelview.images import Crop, ImageSource
from novelview.sampling import DEFAULT_GUIDANCE, Progress, SamplingSettings, View, generate

#: Camera of the training distribution when a checkpoint's config.json does not record one (procedural data).
DEFAULT_CAMERA = {"radius": 2.5, "fov_deg": 40.0, "elevation_mean": 17.5}

PoseLike = Tensor | np.ndarray | Sequence[Any]
Angles = float | Sequence[float] | Tensor
#: How 4x4 camera-to-world matrices in a pose file orient the camera: OpenCV (+z forward, +y down; ours) or
#: OpenGL / Blender / NeRF (-z forward, +y up).
POSE_CONVENTIONS = ("opencv", "opengl")


@dataclass(frozen=True)
class CapturedView:
    """A view of a dataset as a pipeline input (:meth:`Pipeline.dataset_view`)."""

    view: View  # the picture at the model's size, its camera in the dataset's world frame, K at that size
    frame: cameras.CaptureFrame  # the point the capture's cameras look at and their up: turns go about these
    scene: str
    index: int

    @property
    def elevation(self) -> float:
        """The view's elevation in degrees above the capture's horizon."""
        local = cameras.object_frame_transform(self.frame) @ self.view.pose.double()
        return float(cameras.pose_to_spherical(local)[1])


class PosedViews(list):
    """Generated pictures (a ``list`` of PIL images) with their cameras: ``poses [N, 4, 4]`` OpenCV
    camera-to-world in the input's world frame, ``K [3, 3]`` pixels at the pictures' size."""

    def __init__(self, pictures: Sequence[Image.Image], poses: Tensor, K: Tensor) -> None:
        super().__init__(pictures)
        self.poses = poses.detach().cpu().float()
        self.K = K.detach().cpu().float()

    def enlarged(self, factor: int, resample: str = "nearest") -> PosedViews:
        """The pictures ``factor`` times larger, with intrinsics to match."""
        pictures = [images.enlarge(p, factor, resample=resample) for p in self]  # type: ignore[arg-type]
        if not pictures:
            return PosedViews([], self.poses, self.K)
        old = (self[0].height, self[0].width)
        return PosedViews(pictures, self.poses, cameras.resize_intrinsics(self.K, old, (pictures[0].height,
                                                                                        pictures[0].width)))

    def save_transforms(self, folder: str | Path) -> Path:
        """Write the pictures and cameras as a nerfstudio / instant-ngp ``transforms.json`` (OpenGL matrices,
        ``fl_x fl_y cx cy w h``) with ``images/frame_NNN.png``, atomically; returns the json's path. A folder
        written before by this method is replaced."""
        from novelview.data.formats.blender import write_transforms

        return write_transforms(folder, list(self), self.poses, self.K)


def _as_float_tensor(x: Angles, name: str = "angles") -> Tensor:
    if isinstance(x, (str, bytes)) or (isinstance(x, (list, tuple)) and any(isinstance(v, (str, bytes)) for v in x)):
        raise ConfigError(f"{name} must be a number or a list of numbers, got {x!r}")
    try:
        t = torch.as_tensor(x if isinstance(x, Tensor) else np.asarray(x, dtype=np.float64),
                            dtype=torch.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number or a list of numbers, got {x!r}") from None
    if t.numel() == 0:
        raise ConfigError(f"{name}: an empty list gives no target camera")
    if not torch.isfinite(t).all():
        raise ConfigError(f"{name} must be finite numbers, got {t.tolist()}")
    return t


def _number(value: Any, name: str) -> float:
    """A real number from the API (numpy and torch scalars welcome; strings and lists refused, naming the
    argument)."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    elif isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    return float(value)


def as_poses(poses: PoseLike, name: str = "target_poses") -> Tensor:
    """``[N, 4, 4]`` float32 validated camera-to-world poses from one 4x4 or a list / array of them."""
    try:
        t = torch.as_tensor(np.asarray(poses, dtype=np.float64))
    except (TypeError, ValueError) as err:
        raise PoseError(f"{name}: not a 4x4 matrix or a list of them ({err})") from None
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[0] == 0:
        raise PoseError(f"{name}: expected one 4x4 matrix or a list of them, got shape {tuple(t.shape)}")
    cameras.validate_pose(t, name=name)
    return t.float()


class Pipeline:
    """A loaded model plus its noise process and camera defaults; call :meth:`synthesize` or :meth:`orbit`.

    ``autocast``: run the network under bf16 autocast. ``None`` (default) means on CUDA only: on CPU bf16 is
    slower than fp32 for these small convolutional models (see benchmarks/sample.py ``--autocast``).
    ``compile=True`` wraps the network in ``torch.compile`` (pays off for long orbits on GPU).
    """

    def __init__(
        self,
        model: nn.Module,
        config: CheckpointConfig,
        device: str | torch.device = "cpu",
        *,
        compile: bool = False,
        autocast: bool | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = config
        #: What runs the model: the module itself, or its ``torch.compile`` wrapper.
        self.network: Callable[..., Tensor] = torch.compile(self.model) if compile else self.model
        self.autocast = (self.device.type == "cuda") if autocast is None else bool(autocast)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path | None = None,
        device: str | torch.device = "cpu",
        *,
        use_ema: bool = True,
        compile: bool = False,
        autocast: bool | None = None,
    ) -> "Pipeline":
        """Load a checkpoint directory (EMA weights when present), a run directory's latest checkpoint, or the
        shipped default (``None``)."""
        device = resolve_device(device)
        model, config = load_model(path, use_ema=use_ema, device=device)
        return cls(model, config, device, compile=compile, autocast=autocast)

    def __repr__(self) -> str:
        params = sum(p.numel() for p in self.model.parameters())
        what = "regression" if self.is_regression else f"diffusion, {self.config.diffusion.prediction}-prediction"
        return (f"Pipeline({self.config.model_name()}, {self.image_size} px, {what}, {params / 1e6:.2f}M parameters, "
                f"device {self.device})")

    # ----------------------------------------------------------------------------------------- properties

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def is_regression(self) -> bool:
        return self.config.objective == "regression"

    @property
    def lifts(self) -> bool:
        """Whether the model is 3D-aware (a lifting module: several condition views, ``strength`` below 1)."""
        return bool((self.config.model or {}).get("lift", False))

    def camera_defaults(self) -> dict[str, float]:
        """``radius``, ``fov_deg``, ``elevation_mean`` of the training data (fallbacks: :data:`DEFAULT_CAMERA`)."""
        data = self.config.data or {}
        return {k: float(data.get(k, v)) if data.get(k) is not None else v for k, v in DEFAULT_CAMERA.items()}

    def default_guidance(self) -> float:
        """The checkpoint's measured ``sampling.guidance`` if it has one, else :data:`DEFAULT_GUIDANCE` (3);
        1 for a model trained without condition dropout (it has no unconditional branch)."""
        # Guidance needs an unconditional branch; a model trained without condition dropout has none.
        if self.config.diffusion.cond_drop_prob <= 0:
            return 1.0
        return float(self.config.sampling.get("guidance", DEFAULT_GUIDANCE))

    def input_camera(
        self, elevation: float | None = None, radius: float | None = None, fov_deg: float | None = None
    ) -> tuple[Tensor, Tensor]:
        """Canonical input camera ``(pose [4,4], K [3,3])``: azimuth 0 at the data's elevation and radius."""
        d = self.camera_defaults()
        el = d["elevation_mean"] if elevation is None else _number(elevation, "input_elevation")
        r = d["radius"] if radius is None else _number(radius, "radius")
        if not -90.0 < el < 90.0:
            raise PoseError(f"input_elevation must lie inside (-90, 90) degrees, got {el:g}")
        K = self.intrinsics(fov_deg)
        pose = cameras.spherical_to_pose(0.0, el, r).float()
        return pose, K

    def intrinsics(self, fov_deg: float | None = None) -> Tensor:
        fov = self.camera_defaults()["fov_deg"] if fov_deg is None else _number(fov_deg, "fov_deg")
        return cameras.intrinsics_from_fov(fov, self.image_size).float()

    # ----------------------------------------------------------------------------------------- images

    def load(self, image: ImageSource, crop: Crop = "center") -> Tensor:
        """``[3, S, S]`` in [-1, 1]: exactly what the model sees (``images.load_image`` at the model's size)."""
        return images.load_image(image, self.image_size, crop=crop)

    def preprocess(self, image: ImageSource, crop: Crop = "center") -> Image.Image:
        """The input as the model sees it: RGB, alpha on white, centre-cropped (or white-padded) to a square,
        area-resized to the model's resolution."""
        return images.to_pil(self.load(image, crop))

    # ----------------------------------------------------------------------------------------- generation

    def generate(
        self,
        source: View,
        target_poses: Tensor,
        settings: SamplingSettings | None = None,
        *,
        target_K: Tensor | None = None,
        generator: torch.Generator | None = None,
        progress: Progress | None = None,
    ) -> Tensor:
        """Views ``[N, 3, H, W]`` in [-1, 1] of ``source`` (a posed image tensor) at ``target_poses``, by
        :func:`novelview.sampling.generate` with this checkpoint's network, noise process, objective, guidance
        default and autocast. ``target_K`` defaults to the source's intrinsics; ``generator`` to one seeded by
        ``settings.seed``. Output that is not finite raises :class:`NovelviewError`."""
        settings = SamplingSettings() if settings is None else settings
        source = View(source.image.to(self.device), source.pose.to(self.device), source.K.to(self.device))
        target_K = source.K if target_K is None else target_K
        views = generate(
            self.network, self.config.diffusion, source, target_poses.to(self.device), target_K, settings,
            objective=self.config.objective, default_guidance=self.default_guidance(), autocast=self.autocast,
            generator=generator, progress=progress,
        )
        return _finite(views)

    def dataset_view(
        self, data: str | Path | Sequence[Any], object: str | None = None, view: int = 0, crop: Crop = "center"
    ) -> CapturedView:
        """View ``view`` of object (scene) ``object`` of a dataset in any supported format (a folder, or the scenes
        ``open_dataset`` returns) as an input: its picture at the model's size, its own camera and intrinsics, and
        the frame of its capture. ``object`` may be left out when the dataset holds one scene."""
        from novelview.data.formats import load_view, open_dataset

        scenes = open_dataset(data) if isinstance(data, (str, Path)) else data
        scene = _find_scene(scenes, object, data)
        if isinstance(view, bool) or not isinstance(view, (int, np.integer)) or not 0 <= view < scene.num_views:
            raise ConfigError(f"view {view!r}: object {scene.name} has views 0..{scene.num_views - 1}")
        picture, K = load_view(scene, int(view), self.image_size, crop)
        frame = cameras.capture_frame(scene.poses.double())
        source = View(picture, scene.poses[int(view)].float(), K.float())
        return CapturedView(source, frame, scene.name, int(view))

    def input_view(
        self,
        image: ImageSource | CapturedView,
        input_pose: PoseLike | None = None,
        input_elevation: float | None = None,
        fov_deg: float | None = None,
        crop: Crop = "center",
    ) -> View:
        """The input picture as the model sees it, with its camera: a dataset view's own (:meth:`dataset_view`),
        ``input_pose`` (a 4x4 camera-to-world) or else the canonical input camera (:meth:`input_camera`) at
        ``input_elevation``; ``fov_deg`` overrides the data's field of view."""
        if isinstance(image, CapturedView):
            given = [n for n, v in (("input_pose", input_pose), ("input_elevation", input_elevation),
                                    ("fov_deg", fov_deg)) if v is not None]
            if given:
                raise ConfigError(f"a dataset view brings its own camera; drop {', '.join(given)}")
            return image.view
        x = self.load(image, crop)
        if input_pose is not None:
            pose = as_poses(input_pose, "input_pose")
            if pose.shape[0] != 1:
                raise PoseError(f"input_pose: expected one 4x4 matrix, got {pose.shape[0]}")
            pose, K = pose[0], self.intrinsics(fov_deg)
        else:
            pose, K = self.input_camera(input_elevation, None, fov_deg)
        return View(x, pose, K)

    def target_poses(
        self,
        input_pose: Tensor,
        target_poses: PoseLike | None = None,
        azimuth: Angles | None = None,
        elevation: Angles | None = None,
        radius: float | None = None,
        frame: cameras.CaptureFrame | None = None,
    ) -> Tensor:
        """The target cameras ``[N, 4, 4]`` of :meth:`synthesize`: ``target_poses`` as given (validated), or turned
        from ``input_pose`` by relative ``azimuth`` / ``elevation`` (see :meth:`relative_poses`); not both."""
        relative = azimuth is not None or elevation is not None or radius is not None
        if target_poses is not None and relative:
            raise ConfigError("give either target_poses or azimuth/elevation/radius, not both")
        if target_poses is not None:
            return as_poses(target_poses)
        if not relative:
            raise ConfigError("no target camera: give target_poses or azimuth/elevation")
        return self.relative_poses(
            input_pose, 0.0 if azimuth is None else azimuth, 0.0 if elevation is None else elevation, radius, frame
        )

    def relative_poses(
        self,
        input_pose: Tensor,
        azimuth: Angles = 0.0,
        elevation: Angles = 0.0,
        radius: float | None = None,
        frame: cameras.CaptureFrame | None = None,
    ) -> Tensor:
        """Targets turned by relative ``azimuth`` / ``elevation`` (degrees, broadcast) about the object from
        ``input_pose``; at ``radius`` when given, else at the input camera's distance. ``[N, 4, 4]``.

        The object sits at the origin with +z up, unless ``frame`` (a capture's, see :class:`CapturedView`) says
        where it is and which way is up; the targets are returned in the input pose's world frame either way."""
        if frame is None:
            return self._turned(input_pose, azimuth, elevation, radius)
        to_object = cameras.object_frame_transform(frame)
        turned = self._turned((to_object @ input_pose.double()).float(), azimuth, elevation, radius)
        return (cameras.invert_pose(to_object) @ turned.double()).float()

    def elevation_range(self, input_pose: Tensor | None = None, frame: cameras.CaptureFrame | None = None,
                        ) -> tuple[float, float, float]:
        """``(input elevation, lowest, highest)`` in degrees: the relative elevations strictly between lowest and
        highest keep a target inside (-90, 90) from ``input_pose`` (default: the canonical input camera)."""
        pose = self.input_camera()[0] if input_pose is None else input_pose
        if frame is not None:
            pose = cameras.object_frame_transform(frame) @ pose.double()
        el = float(cameras.pose_to_spherical(pose.double())[1])
        return el, -90.0 - el, 90.0 - el

    def _turned(self, input_pose: Tensor, azimuth: Angles, elevation: Angles, radius: float | None) -> Tensor:
        """:meth:`relative_poses` about the origin, +z up."""
        az, el = _as_float_tensor(azimuth, "azimuth"), _as_float_tensor(elevation, "elevation")
        if az.numel() != el.numel() and 1 not in (az.numel(), el.numel()):
            raise ConfigError(f"azimuth has {az.numel()} values and elevation {el.numel()}; give equal lengths "
                              "(or one number for either)")
        az, el = torch.broadcast_tensors(az, el)
        _, _, input_radius = cameras.pose_to_spherical(input_pose.double())
        if not input_radius.item() > 1e-6:
            raise PoseError("input_pose: the camera sits at the world origin, which relative azimuth/elevation turn "
                            "about; give target_poses instead, or an input_pose away from the object")
        # Checked here (not only in cameras) to name the user's numbers once, on one short line.
        bad = el[el.abs() >= 90]
        if bad.numel():
            raise PoseError(f"elevation must lie inside (-90, 90) degrees, got {bad[0].item():g}")
        input_el, lo, hi = self.elevation_range(input_pose)
        outside = (el <= lo) | (el >= hi)
        if outside.any():
            raise PoseError(elevation_error(float(el[int(outside.nonzero()[0])]), input_el))
        base = input_pose.double().expand(az.shape[0], 4, 4)
        poses = cameras.rotate_about_target(base, az, el)
        if radius is not None:
            if not 0 < _number(radius, "radius") < math.inf:
                raise ConfigError(f"radius must be positive and finite, got {radius}")
            a, e, _ = cameras.pose_to_spherical(poses)
            poses = cameras.spherical_to_pose(a, e, torch.full_like(a, float(radius)))
        return poses.float()

    def synthesize(
        self,
        image: ImageSource | CapturedView,
        target_poses: PoseLike | None = None,
        azimuth: Angles | None = None,
        elevation: Angles | None = None,
        radius: float | None = None,
        input_pose: PoseLike | None = None,
        *,
        settings: SamplingSettings | None = None,
        progress: Progress | None = None,
        input_elevation: float | None = None,
        fov_deg: float | None = None,
        crop: Crop = "center",
    ) -> PosedViews:
        """Novel views of the object in ``image`` (a picture, or a :meth:`dataset_view`), one per target camera
        (:meth:`target_poses`), with those cameras (:class:`PosedViews`).

        Targets are either ``target_poses`` (one 4x4 or a list; absolute, in the frame of ``input_pose``) or
        ``azimuth`` / ``elevation`` relative to the input view (scalars or equal-length lists; ``radius`` moves
        the camera closer or further). ``settings`` (default ``SamplingSettings()``: each view conditioned on
        ``image`` only, seed 0, the checkpoint's guidance) says how they are sampled. ``progress(done, total)``
        is called once per denoising step; raising from it aborts.
        """
        source = self.input_view(image, input_pose, input_elevation, fov_deg, crop)
        frame = image.frame if isinstance(image, CapturedView) else None
        poses = self.target_poses(source.pose, target_poses, azimuth, elevation, radius, frame)
        pictures = [images.to_pil(x) for x in self.generate(source, poses, settings, progress=progress)]
        return PosedViews(pictures, poses, source.K)

    def orbit(
        self,
        image: ImageSource | CapturedView,
        n_views: int = 24,
        elevation: float | None = None,
        *,
        radius: float | None = None,
        settings: SamplingSettings | None = None,
        progress: Progress | None = None,
        input_pose: PoseLike | None = None,
        input_elevation: float | None = None,
        fov_deg: float | None = None,
        crop: Crop = "center",
    ) -> PosedViews:
        """``n_views`` frames evenly spaced in azimuth around the object, starting at the input view (a picture,
        or a :meth:`dataset_view`), with their cameras (:class:`PosedViews`).

        ``elevation`` is relative to the input view (default 0: the input's own elevation). When the first
        frame's camera is the input camera (``elevation`` 0, no ``radius``) it *is* the input picture and is not
        generated. ``settings`` defaults to ``SamplingSettings(stochastic=True)``: 3DiM stochastic conditioning
        generates the other frames one after another, each denoising step conditioned on a random one of
        {input} ∪ {frames generated so far}, those nearest the input first (``order="given"``: around the circle,
        as 3DiM; docs/results.md has the measured difference). With ``stochastic=False`` every frame is
        conditioned on the input only, ``settings.batch`` frames at a time.
        """
        if isinstance(n_views, bool) or not isinstance(n_views, (int, np.integer)) or n_views < 1:
            raise ConfigError(f"an orbit needs an integer n_views >= 1, got {n_views!r}")
        n_views = int(n_views)
        settings = SamplingSettings(stochastic=True) if settings is None else settings
        settings.check(self.config.diffusion)  # checked even when no frame needs generating
        source = self.input_view(image, input_pose, input_elevation, fov_deg, crop)
        frame = image.frame if isinstance(image, CapturedView) else None
        azimuths = torch.arange(n_views, dtype=torch.float64) * (360.0 / n_views)
        d_el = 0.0 if elevation is None else _number(elevation, "elevation")
        poses = self.relative_poses(source.pose, azimuths, torch.full_like(azimuths, d_el), radius, frame)
        first_is_input = d_el == 0.0 and radius is None
        targets = poses[1:] if first_is_input else poses
        if first_is_input:  # the picture is the input's: its camera, which need not look exactly at the object
            poses = torch.cat([source.pose[None].to(poses), targets])
        frames: list[Tensor] = [source.image[None]] if first_is_input else []
        if targets.shape[0]:
            frames.append(self.generate(source, targets, settings, progress=progress).cpu())
        return PosedViews([images.to_pil(x) for x in torch.cat(frames)], poses, source.K)


def elevation_error(relative: float, input_elevation: float) -> str:
    """The message for a relative elevation that takes a camera out of (-90, 90), with the range that works."""
    return (f"elevation {relative:g}: the input view sits at {input_elevation:.1f} degrees, so the relative elevation "
            f"must lie in ({-90.0 - input_elevation:.1f}, {90.0 - input_elevation:.1f}) to keep the camera inside "
            "(-90, 90)")


def _find_scene(scenes: Sequence[Any], name: str | None, data: Any) -> Any:
    """The scene called ``name`` (the only one when ``name`` is None), or a ConfigError listing a few."""
    where = data if isinstance(data, (str, Path)) else "the dataset"
    if not len(scenes):
        raise DataError(f"{where}: the dataset has no objects")
    if name is None:
        if len(scenes) > 1:
            raise ConfigError(f"{where} holds {len(scenes)} objects; name one with --object (e.g. {scenes[0].name})")
        return scenes[0]
    for scene in scenes:
        if scene.name == name:
            return scene
    names = sorted(s.name for s in scenes)
    listed = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    raise ConfigError(f"{where}: no object named {name!r} (objects: {listed})")


def load_poses(path: str | Path, convention: str = "opencv") -> tuple[Tensor | None, Tensor]:
    """``(input_pose or None, target_poses [N, 4, 4])`` from a JSON pose file: a 4x4 camera-to-world matrix, a list
    of them, or ``{"target_poses": [...], "input_pose": 4x4}``; ``convention`` (:data:`POSE_CONVENTIONS`) says
    how the file's matrices orient the camera, and they come back in ours (OpenCV)."""
    if convention not in POSE_CONVENTIONS:
        raise ConfigError(f"pose convention must be one of {', '.join(POSE_CONVENTIONS)}, got {convention!r}")
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: pose file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable JSON pose file ({err})") from None
    input_pose = None
    if isinstance(data, dict):
        if "target_poses" not in data:
            raise PoseError(f"{path}: expected a list of 4x4 matrices or an object with 'target_poses'")
        if data.get("input_pose") is not None:
            input_pose = as_poses(data["input_pose"], f"{path}: input_pose")
        data = data["target_poses"]
    targets = as_poses(data, str(path))
    if convention == "opengl":
        targets = cameras.opengl_to_opencv(targets)
        input_pose = None if input_pose is None else cameras.opengl_to_opencv(input_pose)
    return input_pose, targets


def convention_warning(poses: Tensor, centre: Tensor | Sequence[float], convention: str, where: str) -> str | None:
    """A warning when most of ``poses`` (already in our OpenCV convention) look away from ``centre``: the file was
    probably written in the other convention, which would paint the object from behind its cameras."""
    away = cameras.facing_away(poses, centre)
    if float(away.double().mean()) <= 0.5:
        return None
    other = "opengl" if convention == "opencv" else "opencv"
    names = {"opencv": "OpenCV", "opengl": "OpenGL/Blender"}
    point = [round(float(c), 3) for c in torch.as_tensor(centre)]
    return (f"{where}: {int(away.sum())} of {len(away)} cameras look away from the object at {point} when read as "
            f"{names[convention]}; if the file holds {names[other]} matrices, pass --poses-convention {other}")


def _finite(views: Tensor) -> Tensor:
    # NaN would become black pixels that look like a result; diverged weights or overflow must fail instead.
    if not bool(torch.isfinite(views).all()):
        raise NovelviewError("the model produced NaN or infinite values instead of an image (weights that "
                             "overflow, or an unstable sampler setting)")
    return views


__all__ = ["DEFAULT_CAMERA", "POSE_CONVENTIONS", "CapturedView", "Pipeline", "PosedViews", "as_poses",
           "convention_warning", "elevation_error", "load_poses"]
