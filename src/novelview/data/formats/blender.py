"""NeRF / Blender format: ``transforms_{train,val,test}.json`` next to the images.

Reading (one scene per folder holding transforms files; a dataset root is one such folder or a folder of them)::

    {"camera_angle_x": 0.69,                      # horizontal FOV in radians
     "camera_angle_y": ..., "fl_x": ..., "fl_y": ..., "cx": ..., "cy": ..., "w": ..., "h": ...,   # optional
     "frames": [{"file_path": "./train/r_0",      # relative to the json; extension optional
                 "transform_matrix": [[...4x4...]],   # camera-to-world, OpenGL axes (+y up, -z forward)
                 ...optional per-frame overrides of the camera keys above...}]}

Poses are validated and converted to OpenCV with :func:`novelview.cameras.opengl_to_opencv`. Frames of all
splits present (train, val, test, or a single ``transforms.json``) become the views of one scene, each labelled
with its split (``Scene.view_splits``): the split its file names, or for a single ``transforms.json`` the
nerfstudio lists ``train_filenames`` / ``val_filenames`` / ``test_filenames`` (paths as in ``file_path``; when no
train list is given, every view the other lists leave out trains). How splits are used is decided by
:class:`novelview.data.views.MultiViewDataset`. Images with alpha are composited on
white when loaded and their alpha is the mask (when every view has alpha), unless every frame names a
nerfstudio ``mask_path`` (single channel, 0 = ignore): then those are the masks. Intrinsics refer to ``w``/``h`` when
given (else to the frame's own image) and are rescaled to the size of the images actually on disk; frames may
differ in size. A ``transform_matrix`` may also be the top 3x4 rows.

Lenses (nerfstudio / instant-ngp): ``camera_model`` ``PINHOLE``, ``SIMPLE_PINHOLE``, ``SIMPLE_RADIAL``,
``RADIAL``, ``OPENCV`` (default) or ``OPENCV_FISHEYE`` (or instant-ngp's ``"is_fisheye": true``) with
``k1 k2 k3 k4 p1 p2`` (top level or per frame; see :class:`novelview.cameras.Distortion`). Distorted views are
undistorted when loaded, to the pinhole camera with the same ``K`` and size (regions outside the photo become
white background). Other models (``EQUIRECTANGULAR``, ...) are refused with a message naming the frame.

Writing (:func:`write_blender`, :class:`BlenderSceneWriter`) produces the same layout as RGBA PNGs (alpha =
mask when known), exact intrinsics (``fl_x fl_y cx cy w h`` besides ``camera_angle_x``) and an optional
per-frame ``depth_file_path`` (16-bit PNG, value / ``depth_scale`` = depth along the optical axis) that our
reader understands and other tools ignore.
:func:`write_transforms` writes posed pictures (a generated orbit) as one nerfstudio / instant-ngp
``transforms.json`` with ``images/frame_NNN.png``, which those tools fit a NeRF or Gaussian splat to.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from novelview import cameras
from novelview.data.formats.scene import (
    IMAGE_SUFFIXES,
    Problems,
    Scene,
    SceneCollection,
    as_4x4,
    image_header,
    list_subdirs,
    read_scene_folders,
    splits_from_lists,
)
from novelview.errors import DataError, NovelviewError

SPLITS = ("train", "val", "test")


def transforms_files(folder: Path) -> list[Path]:
    """The transforms json files of one scene folder, in split order."""
    files = [folder / f"transforms_{s}.json" for s in SPLITS if (folder / f"transforms_{s}.json").is_file()]
    if not files and (folder / "transforms.json").is_file():
        files = [folder / "transforms.json"]
    return files


def is_blender_scene(folder: Path) -> bool:
    return bool(transforms_files(folder))


def find_scenes(root: Path) -> list[Path]:
    if is_blender_scene(root):
        return [root]
    return [d for d in list_subdirs(root) if is_blender_scene(d)]


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list):
        raise DataError(f"{path}: expected an object with a 'frames' list")
    return data


def _resolve_image(json_path: Path, file_path: str, listings: dict[Path, dict[str, Path]] | None = None) -> Path:
    """``file_path`` relative to the json, with or without an image extension (names matched in any case when
    not found as given); Windows separators (colmap2nerf on Windows writes them) are read as ``/``."""
    base = json_path.parent / file_path.replace("\\", "/")
    if base.is_file():
        return base
    for suffix in IMAGE_SUFFIXES:
        candidate = base.with_name(base.name + suffix)
        if candidate.is_file():
            return candidate
    # Photos from cameras are often `.JPG`: match the name, or the name plus an image suffix, in any case.
    # ``listings`` keeps each folder's names (lower-cased) for the whole scene: one listing, not one per frame.
    listings = {} if listings is None else listings
    if base.parent not in listings:
        files = sorted(p for p in base.parent.iterdir() if p.is_file()) if base.parent.is_dir() else []
        listings[base.parent] = {p.name.lower(): p for p in reversed(files)}
    names = listings[base.parent]
    for wanted in (base.name.lower(), *(base.name.lower() + suffix for suffix in IMAGE_SUFFIXES)):
        if wanted in names:
            return names[wanted]
    raise DataError(f"{json_path}: image {file_path!r} not found (looked for {base} with and without an extension)")


def _number(value: Any, what: str, where: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: '{what}' must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise DataError(f"{where}: '{what}' must be finite, got {value!r}")
    return x


def _frame_intrinsics(
    cam: dict[str, Any], disk_hw: tuple[int, int], where: str
) -> Tensor:
    """K at the on-disk image size from NeRF-style camera keys (frame keys already merged over top-level)."""
    h_disk, w_disk = disk_hw
    w = _number(cam["w"], "w", where) if "w" in cam else float(w_disk)
    h = _number(cam["h"], "h", where) if "h" in cam else float(h_disk)
    if "fl_x" in cam:
        fx = _number(cam["fl_x"], "fl_x", where)
    elif "camera_angle_x" in cam:
        angle = _number(cam["camera_angle_x"], "camera_angle_x", where)
        if not 0 < angle < math.pi:
            raise DataError(f"{where}: camera_angle_x must be in (0, pi) radians, got {angle}")
        fx = 0.5 * w / math.tan(0.5 * angle)
    else:
        raise DataError(f"{where}: no camera_angle_x or fl_x (the field of view is unknown)")
    if "fl_y" in cam:
        fy = _number(cam["fl_y"], "fl_y", where)
    elif "camera_angle_y" in cam:
        fy = 0.5 * h / math.tan(0.5 * _number(cam["camera_angle_y"], "camera_angle_y", where))
    else:
        fy = fx
    if fx <= 0 or fy <= 0:
        raise DataError(f"{where}: focal length must be positive, got fl_x={fx} fl_y={fy}")
    cx = _number(cam["cx"], "cx", where) if "cx" in cam else w / 2.0
    cy = _number(cam["cy"], "cy", where) if "cy" in cam else h / 2.0
    k = cameras.intrinsics(torch.tensor(fx, dtype=torch.float64), cx, cy, fy=fy)
    if (round(h), round(w)) != disk_hw:
        k = cameras.resize_intrinsics(k, (h, w), disk_hw)
    return k


_CAMERA_KEYS = ("camera_angle_x", "camera_angle_y", "fl_x", "fl_y", "cx", "cy", "w", "h")
_LENS_KEYS = ("camera_model", "is_fisheye", "k1", "k2", "k3", "k4", "p1", "p2")
# nerfstudio / COLMAP camera models, by the distortion model that covers them (None: no distortion).
_PERSPECTIVE_MODELS = {"PINHOLE": None, "SIMPLE_PINHOLE": None, "SIMPLE_RADIAL": "opencv", "RADIAL": "opencv",
                       "OPENCV": "opencv", "OPENCV_FISHEYE": "fisheye"}


def _frame_distortion(cam: dict[str, Any], where: str) -> cameras.Distortion | None:
    """The frame's lens distortion (nerfstudio ``camera_model`` + ``k1..k4, p1, p2``; instant-ngp
    ``is_fisheye``), or None for a pinhole. Models that are not a perspective lens are refused."""
    name = str(cam.get("camera_model", "OPENCV")).upper()
    if name not in _PERSPECTIVE_MODELS:
        raise DataError(f"{where}: camera_model {cam['camera_model']!r} is not supported (only perspective lenses: "
                        f"{', '.join(_PERSPECTIVE_MODELS)}); convert the images to a pinhole camera first")
    model = "fisheye" if cam.get("is_fisheye") is True else _PERSPECTIVE_MODELS[name]
    coeffs = {k: _number(cam[k], k, where) for k in ("k1", "k2", "k3", "k4", "p1", "p2") if k in cam}
    if model is None:
        return None
    if model == "fisheye":  # the equidistant model has no tangential terms (p1 p2 may be inherited from the top)
        coeffs = {k: v for k, v in coeffs.items() if k not in ("p1", "p2")}
    distortion = cameras.Distortion(model, **coeffs)
    return None if distortion.is_identity else distortion


def _mask_paths(images: list[Path], masks: list[Path | None], alpha: list[bool]) -> list[Path] | None:
    """nerfstudio ``mask_path`` files when every frame has one, else the images' alpha when every view has it
    (an RGB view has no mask to offer), else none."""
    if all(m is not None for m in masks):
        return list(masks)  # type: ignore[arg-type]
    return list(images) if all(alpha) else None


@dataclass
class _Frames:
    """The views of one scene as its frames are read, in file order."""

    images: list[Path] = field(default_factory=list)
    depths: list[Path | None] = field(default_factory=list)
    masks: list[Path | None] = field(default_factory=list)
    poses: list[Tensor] = field(default_factory=list)
    ks: list[Tensor] = field(default_factory=list)
    lenses: list[cameras.Distortion | None] = field(default_factory=list)
    alpha: list[bool] = field(default_factory=list)
    splits: list[str | None] = field(default_factory=list)  # from the file's name; None: transforms.json
    hw: tuple[int, int] | None = None  # the first frame's size: the scene's intrinsics refer to it
    depth_scale: float | None = None


def _read_frame(json_path: Path, i: int, frame: Any, top: dict[str, Any], listings: dict, frames: _Frames,
                split: str | None) -> None:
    """Append frame ``i`` of ``json_path`` to ``frames``; a DataError/PoseError names the frame."""
    where = f"{json_path}: frames[{i}]"
    if not isinstance(frame, dict) or "file_path" not in frame or "transform_matrix" not in frame:
        raise DataError(f"{where}: a frame needs 'file_path' and 'transform_matrix'")
    where = f"{json_path}: frames[{i}] ({frame['file_path']})"
    image = _resolve_image(json_path, str(frame["file_path"]), listings)
    try:
        matrix = as_4x4(torch.tensor(frame["transform_matrix"], dtype=torch.float64))
    except (TypeError, ValueError):
        raise DataError(f"{where}: transform_matrix must be a 4x4 list of numbers") from None
    cameras.validate_pose(matrix, name=where)
    disk_hw, has_alpha = image_header(image)
    cam = {**top, **{k: frame[k] for k in (*_CAMERA_KEYS, *_LENS_KEYS) if k in frame}}
    k = _frame_intrinsics(cam, disk_hw, where)
    lens = _frame_distortion(cam, where)
    depth = mask = None
    if "depth_file_path" in frame:
        depth = _resolve_image(json_path, str(frame["depth_file_path"]), listings)
    if "mask_path" in frame:  # nerfstudio: 0 = ignore, 255 = keep (the object, when masked to it)
        mask = _resolve_image(json_path, str(frame["mask_path"]), listings)
    frames.hw = frames.hw or disk_hw
    if disk_hw != frames.hw:  # other sizes are rescaled on load
        k = cameras.resize_intrinsics(k, disk_hw, frames.hw)
    frames.images.append(image)
    frames.poses.append(cameras.opengl_to_opencv(matrix).to(torch.float32))
    frames.ks.append(k.to(torch.float32))
    frames.lenses.append(lens)
    frames.alpha.append(has_alpha)
    frames.depths.append(depth)
    frames.masks.append(mask)
    frames.splits.append(split)


def _file_split(json_path: Path) -> str | None:
    """``train`` for ``transforms_train.json``; None for a single ``transforms.json``."""
    stem = json_path.stem
    return stem.removeprefix("transforms_") if stem.startswith("transforms_") else None


def _view_splits(folder: Path, frames: _Frames, lists: dict[str, list[str]], where: Path) -> list[str] | None:
    """Each view's split: from its file's name, or from nerfstudio's ``{train,val,test}_filenames`` lists of a
    single ``transforms.json`` (see :func:`~novelview.data.formats.scene.splits_from_lists`); None when neither
    names one."""
    if all(s is not None for s in frames.splits):
        return list(frames.splits)  # type: ignore[arg-type]
    if not lists:
        return None
    names = [Path(os.path.relpath(p, folder)).as_posix() for p in frames.images]
    return splits_from_lists(names, lists, str(where))


def _split_lists(data: dict[str, Any], path: Path) -> dict[str, list[str]]:
    lists = {s: data[f"{s}_filenames"] for s in SPLITS if f"{s}_filenames" in data}
    for split, names in lists.items():
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DataError(f"{path}: {split}_filenames must be a list of file paths")
    return lists


def read_scene(folder: Path, problems: Problems) -> Scene | None:
    n_problems = len(problems.messages)
    frames = _Frames()
    lists: dict[str, list[str]] = {}
    listings: dict[Path, dict[str, Path]] = {}
    for json_path in transforms_files(folder):
        try:
            data = _load_json(json_path)
            lists = _split_lists(data, json_path) if _file_split(json_path) is None else {}
        except NovelviewError as err:
            problems.add(err)
            continue
        top = {k: data[k] for k in (*_CAMERA_KEYS, *_LENS_KEYS) if k in data}
        if "depth_scale" in data:
            frames.depth_scale = float(data["depth_scale"])
        for i, frame in enumerate(data["frames"]):
            try:
                _read_frame(json_path, i, frame, top, listings, frames, _file_split(json_path))
            except NovelviewError as err:
                problems.add(err)
    if not frames.images or frames.hw is None:
        if len(problems.messages) == n_problems:  # nothing else explains why the scene is empty
            problems.add(DataError(f"{folder}: the transforms files list no frames"))
        return None
    try:
        view_splits = _view_splits(folder, frames, lists, folder / "transforms.json")
    except DataError as err:
        problems.add(err)
        view_splits = None
    has_depth = all(d is not None for d in frames.depths)
    return Scene(
        name=folder.name,
        image_paths=frames.images,
        poses=torch.stack(frames.poses),
        intrinsics=torch.stack(frames.ks),
        image_size=frames.hw,
        mask_paths=_mask_paths(frames.images, frames.masks, frames.alpha),
        depth_paths=list(frames.depths) if has_depth else None,  # type: ignore[arg-type]
        depth_scale=frames.depth_scale if has_depth else None,
        root=folder,
        format="blender",
        distortion=frames.lenses if any(d is not None for d in frames.lenses) else None,
        view_splits=view_splits,
    )


def read_blender(root: str | Path, problems: Problems | None = None) -> SceneCollection:
    """Read a Blender/NeRF dataset (one scene folder with transforms_*.json, or a folder of them)."""
    return read_scene_folders(root, problems, find_scenes, read_scene, "blender", "transforms_{train,val,test}.json")


# ---------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------


def _matrix(x: Tensor | np.ndarray) -> list[list[float]]:
    return [[float(v) for v in row] for row in np.asarray(x, dtype=np.float64)]


class BlenderSceneWriter:
    """Write one scene folder view by view, then :meth:`close` writes ``transforms_<split>.json``, or with
    ``split=None`` one ``transforms.json`` (nerfstudio, instant-ngp) with the pictures in ``images/``.

    ``pose`` is OpenCV camera-to-world (converted to OpenGL in the file); ``k`` in pixels for the image given.
    """

    def __init__(self, folder: str | Path, split: str | None = "train", depth_scale: float | None = None) -> None:
        self.folder = Path(folder)
        self.split = split
        self.depth_scale = depth_scale
        self.frames: list[dict[str, Any]] = []
        (self.folder / (split or "images")).mkdir(parents=True, exist_ok=True)

    def add(
        self,
        image: np.ndarray | Image.Image,
        pose: Tensor | np.ndarray,
        k: Tensor | np.ndarray,
        depth: np.ndarray | None = None,
        distortion: cameras.Distortion | None = None,
    ) -> None:
        """``image``: uint8 HxWx3 / HxWx4 (alpha = mask) or a PIL image; ``depth``: uint16 HxW (x depth_scale);
        ``distortion``: the lens the image was taken through (written as nerfstudio keys)."""
        i = len(self.frames)
        img = image if isinstance(image, Image.Image) else Image.fromarray(np.ascontiguousarray(image))
        stem = f"{self.split}/r_{i}" if self.split else f"images/frame_{i:03d}"
        img.save(self.folder / f"{stem}.png", compress_level=1)
        k = np.asarray(k, dtype=np.float64)
        pose_gl = cameras.opencv_to_opengl(torch.as_tensor(np.asarray(pose, dtype=np.float64)))
        frame: dict[str, Any] = {
            # No extension, as in the original NeRF synthetic data; nerfstudio's transforms.json needs one.
            "file_path": f"./{stem}" if self.split else f"{stem}.png",
            "transform_matrix": _matrix(pose_gl),
            "camera_angle_x": 2.0 * math.atan(0.5 * img.width / k[0, 0]),
            "fl_x": float(k[0, 0]),
            "fl_y": float(k[1, 1]),
            "cx": float(k[0, 2]),
            "cy": float(k[1, 2]),
            "w": img.width,
            "h": img.height,
        }
        if distortion is not None:
            frame["camera_model"] = "OPENCV_FISHEYE" if distortion.model == "fisheye" else "OPENCV"
            frame.update({key: getattr(distortion, key) for key in ("k1", "k2", "k3", "k4", "p1", "p2")})
        if depth is not None:
            Image.fromarray(np.ascontiguousarray(depth.astype(np.uint16))).save(
                self.folder / f"{stem}_depth.png", compress_level=1
            )
            frame["depth_file_path"] = f"./{stem}_depth.png"
        self.frames.append(frame)

    def close(self) -> Path:
        """Write the json; camera keys shared by all frames are hoisted to the top level."""
        if not self.frames:
            raise DataError(f"{self.folder}: no views to write")
        top: dict[str, Any] = {}
        for key in (*_CAMERA_KEYS, *_LENS_KEYS):
            values = {json.dumps(f.get(key)) for f in self.frames}
            if len(values) == 1 and key in self.frames[0]:
                top[key] = self.frames[0][key]
        frames = [{k: v for k, v in f.items() if k not in top} for f in self.frames]
        data: dict[str, Any] = {**top, "frames": frames}
        if self.depth_scale is not None:
            data["depth_scale"] = self.depth_scale
        if self.split is None:  # nerfstudio reads the lens model; PINHOLE says there is no distortion to remove
            data = {"camera_model": "OPENCV", **data}
        path = self.folder / (f"transforms_{self.split}.json" if self.split else "transforms.json")
        path.write_text(json.dumps(data, indent=1))
        return path


def write_blender(scenes: list[Scene], out: str | Path, split: str = "train") -> Path:
    """Write scenes as a Blender/NeRF dataset: ``out/<scene.name>/transforms_<split>.json`` + RGBA PNGs.

    Images keep their size; a scene's masks become the alpha channel (so loading composites exactly what the
    source showed when its background was white); depth maps are carried over when present.
    """
    from novelview.images import load_mask, read_rgb

    out = Path(out)
    for scene in scenes:
        writer = BlenderSceneWriter(out / scene.name, split=split, depth_scale=scene.depth_scale)
        for i, path in enumerate(scene.image_paths):
            rgb = np.asarray(read_rgb(path, name=str(path), exif_transpose=False))
            if scene.mask_paths is not None:
                alpha = (load_mask(scene.mask_paths[i], exif_transpose=False)[0].numpy() * 255.0 + 0.5).astype(np.uint8)
                rgb = np.concatenate([rgb, alpha[..., None]], axis=-1)
            depth = None
            if scene.depth_paths is not None:
                with Image.open(scene.depth_paths[i]) as d:
                    depth = np.asarray(d).astype(np.uint16)
            lens = scene.distortion[i] if scene.distortion is not None else None
            k = scene.disk_intrinsics(i, (rgb.shape[0], rgb.shape[1]))  # frames may differ in size
            writer.add(rgb, scene.poses[i], k, depth=depth, distortion=lens)
        writer.close()
    return out


def write_transforms(
    folder: str | Path, pictures: list[Image.Image], poses: Tensor, k: Tensor, overwrite: bool = True
) -> Path:
    """Posed pictures as a nerfstudio / instant-ngp capture: ``folder/transforms.json`` (OpenGL camera-to-world
    ``transform_matrix``, ``fl_x fl_y cx cy w h``) and ``folder/images/frame_NNN.png``; written atomically, with a
    ``dataset.json`` naming novelview as its writer so that ``overwrite`` may replace it later (and nothing else).

    ``poses [N, 4, 4]`` are OpenCV camera-to-world, ``k [3, 3]`` (or ``[N, 3, 3]``) pixels for the pictures' size.
    Returns the json's path.
    """
    from novelview.data.atomic import atomic_directory

    if not pictures or len(pictures) != len(poses):
        raise DataError(f"{folder}: {len(pictures)} pictures but {len(poses)} cameras")
    ks = k.expand(len(poses), 3, 3) if k.ndim == 2 else k
    with atomic_directory(Path(folder), overwrite=overwrite) as tmp:
        writer = BlenderSceneWriter(tmp, split=None)
        for picture, pose, kk in zip(pictures, poses, ks):
            writer.add(picture.convert("RGB"), pose.double(), kk.double())
        writer.close()
        info = {"generator": "novelview transforms", "format": "blender", "views": len(pictures)}
        (tmp / "dataset.json").write_text(json.dumps(info, indent=1) + "\n")
    return Path(folder) / "transforms.json"


__all__ = [
    "BlenderSceneWriter",
    "find_scenes",
    "is_blender_scene",
    "read_blender",
    "read_scene",
    "transforms_files",
    "write_blender",
    "write_transforms",
]
