"""The in-memory record every dataset reader produces, and helpers the readers share."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from novelview import cameras
from novelview.data.atomic import is_temporary
from novelview.errors import DataError, NovelviewError

#: The splits a capture's files may assign its views to.
VIEW_SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


@dataclass
class Scene:
    """One object seen from several cameras.

    ``poses`` are OpenCV camera-to-world matrices (validated on read); ``intrinsics`` are in pixels for
    ``image_size`` = (H, W), the size of the images on disk.
    """

    name: str
    image_paths: list[Path]
    poses: Tensor  # [V, 4, 4] float32
    intrinsics: Tensor  # [V, 3, 3] float32
    image_size: tuple[int, int]  # (H, W)
    mask_paths: list[Path] | None = None
    # Additions beyond the architecture's minimum (all optional):
    depth_paths: list[Path] | None = None  # 16-bit PNG depth along the optical axis; 0 = background
    depth_scale: float | None = None  # stored value / depth_scale = depth in scene units
    root: Path | None = None  # the object's folder (or the json file's folder)
    format: str = ""  # "srn" | "blender" | "colmap" | "ring" | "mvc"
    # Per-view lens distortion (None: a pinhole view); removed when the view is loaded, so ``intrinsics``
    # describe the loaded (undistorted) pixels.
    distortion: list[cameras.Distortion | None] | None = None
    # The split each view belongs to when the files name them (:data:`VIEW_SPLITS`; "" = in none of them), or
    # None when they do not: Blender's transforms_{train,val,test}.json, nerfstudio's *_filenames lists, COLMAP
    # split lists. See :mod:`novelview.data.views` for how they are used.
    view_splits: list[str] | None = None

    def __post_init__(self) -> None:
        n = len(self.image_paths)
        if self.poses.shape != (n, 4, 4):
            raise DataError(f"scene {self.name}: {n} images but poses of shape {tuple(self.poses.shape)}")
        if self.intrinsics.shape != (n, 3, 3):
            raise DataError(f"scene {self.name}: {n} images but intrinsics of shape {tuple(self.intrinsics.shape)}")
        for label, paths in (("masks", self.mask_paths), ("depth maps", self.depth_paths),
                             ("distortion entries", self.distortion), ("split labels", self.view_splits)):
            if paths is not None and len(paths) != n:
                raise DataError(f"scene {self.name}: {n} images but {len(paths)} {label}")
        if self.view_splits is not None and not set(self.view_splits) <= {*VIEW_SPLITS, ""}:
            raise DataError(f"scene {self.name}: view split labels must be one of {VIEW_SPLITS} (or empty), got "
                            f"{sorted(set(self.view_splits) - {*VIEW_SPLITS, ''})}")

    @property
    def num_views(self) -> int:
        return len(self.image_paths)

    def views_in(self, split: str) -> list[int]:
        """Indices of the views the files put in ``split`` (empty when they name no splits)."""
        return [i for i, s in enumerate(self.view_splits or []) if s == split]

    def take(self, views: Sequence[int]) -> Scene:
        """The same scene with only ``views`` (in the order given)."""
        idx = [int(v) for v in views]

        def pick(values: list | None) -> list | None:
            return None if values is None else [values[i] for i in idx]

        return replace(self, image_paths=pick(self.image_paths), poses=self.poses[idx], intrinsics=self.intrinsics[idx],
                       mask_paths=pick(self.mask_paths), depth_paths=pick(self.depth_paths),
                       distortion=pick(self.distortion), view_splits=pick(self.view_splits))

    def disk_intrinsics(self, i: int, disk_hw: tuple[int, int]) -> Tensor:
        """K (float64) of view ``i`` for its image as stored, ``disk_hw`` pixels (``intrinsics`` refer to
        ``image_size``; views stored at another size, Blender frames of their own size included, are rescaled)."""
        k = self.intrinsics[i].double()
        if tuple(disk_hw) != tuple(self.image_size):
            k = cameras.resize_intrinsics(k, self.image_size, disk_hw)
        return k


class SceneCollection(list):
    """``list[Scene]`` plus what was learned while reading: the format, the root, the dataset's own
    settings (``dataset.json`` when present) and the problems found (only non-empty in lenient mode)."""

    def __init__(
        self,
        scenes: list[Scene] = (),  # type: ignore[assignment]
        format: str = "",
        root: Path | None = None,
        settings: dict[str, Any] | None = None,
        problems: list[str] | None = None,
    ) -> None:
        super().__init__(scenes)
        self.format = format
        self.root = root
        self.settings = settings or {}
        self.problems = problems or []

    @property
    def num_views(self) -> int:
        return sum(s.num_views for s in self)


class Problems:
    """Collects user errors. Strict: the first one is raised as is (so its type and message survive).
    Lenient (``novelview data info``): every problem is recorded and reading continues."""

    def __init__(self, strict: bool = True) -> None:
        self.strict = strict
        self.messages: list[str] = []

    def add(self, err: NovelviewError) -> None:
        if self.strict:
            raise err
        self.messages.append(str(err))

    def __bool__(self) -> bool:
        return bool(self.messages)


def read_scene_folders(
    root: str | Path,
    problems: Problems | None,
    find: Callable[[Path], list[Path]],
    read: Callable[[Path, Problems], Scene | None],
    format: str,
    expected: str,
) -> SceneCollection:
    """The reader of a format whose scenes are folders: ``find(root)`` lists them (``root`` itself or its
    subfolders), ``read`` turns one into a Scene; ``expected`` describes the layout when none is found."""
    root = Path(root)
    problems = problems if problems is not None else Problems(strict=True)
    folders = find(root)
    if not folders:
        problems.add(DataError(f"{root}: no {expected} here or one level below"))
    scenes = [s for s in (read(f, problems) for f in folders) if s is not None]
    return SceneCollection(scenes, format=format, root=root, problems=problems.messages)


# ---------------------------------------------------------------------------------------------------------
# Shared parsing helpers
# ---------------------------------------------------------------------------------------------------------


def natural_key(path: Path) -> tuple:
    """Sort ``2.png`` before ``10.png``."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name))


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, naturally sorted, hidden and temporary files skipped."""
    if not folder.is_dir():
        return []
    return sorted(
        (
            p
            for p in folder.iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            and not is_temporary(p)
        ),
        key=natural_key,
    )


def list_subdirs(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and not is_temporary(p)),
        key=natural_key,
    )


def read_numbers(path: Path) -> list[float]:
    """All whitespace-separated numbers of a small text file; errors name the file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    try:
        return [float(tok) for tok in text.split()]
    except ValueError as err:
        raise DataError(f"{path}: expected numbers only ({err})") from None


def read_pose_file(path: Path) -> Tensor:
    """A 4x4 camera-to-world matrix stored as 16 numbers (or 12: the top 3x4 rows); validated."""
    numbers = read_numbers(path)
    if len(numbers) not in (12, 16):
        raise DataError(f"{path}: a pose file needs 16 numbers (4x4 camera-to-world) or 12 (its top 3x4 rows), "
                        f"found {len(numbers)}")
    pose = as_4x4(torch.tensor(numbers, dtype=torch.float64).reshape(-1, 4))
    cameras.validate_pose(pose, name=str(path))
    return pose.to(torch.float32)


def as_4x4(matrix: Tensor) -> Tensor:
    """A stored 3x4 ``[R | t]`` as the 4x4 pose it abbreviates; any other shape as given, so that pose
    validation reports what is wrong with it."""
    if tuple(matrix.shape) == (3, 4):
        return cameras.make_pose(matrix[:, :3], matrix[:, 3])
    return matrix


def image_header(path: Path) -> tuple[tuple[int, int], bool]:
    """``((H, W), has_alpha)`` of the stored pixels from the image header, without decoding them (full decoding
    happens on load). Stored, not EXIF-rotated: dataset views are read as stored (see :mod:`novelview.images`).
    """
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as img:
            w, h = img.size
            has_alpha = "A" in img.mode or "transparency" in img.info
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: not a readable image ({err})") from None
    if w == 0 or h == 0:
        raise DataError(f"{path}: image has zero size")
    return (h, w), has_alpha


def aspect_differs(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether two sizes (same order, H W or W H) differ in aspect ratio by more than a pixel's rounding."""
    return abs(a[0] * b[1] - a[1] * b[0]) > max(b)


def image_header_size(path: Path) -> tuple[int, int]:
    """(H, W) of the stored pixels (see :func:`image_header`)."""
    return image_header(path)[0]


def splits_from_lists(names: Sequence[str], lists: dict[str, Sequence[str]], where: str) -> list[str]:
    """Per-view split labels from lists of view names (nerfstudio's ``*_filenames``, COLMAP split files).

    ``names`` are the views' names (paths relative to the scene); a listed entry matches a view by that name or,
    when unambiguous, by its file name alone. A view named in ``lists[split]`` is in that split; when no train
    list is given every view the other lists leave out trains, else such a view is in no split (``""``). An entry
    that matches no view, or a view listed twice, is a :class:`DataError` naming ``where``.
    """
    index = {n: i for i, n in enumerate(names)}
    by_file: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        by_file.setdefault(n.rsplit("/", 1)[-1], []).append(i)
    labels = [""] * len(names)
    for split in VIEW_SPLITS:
        for entry in lists.get(split, ()):
            key = entry.replace("\\", "/").removeprefix("./")
            i = index.get(key)
            if i is None and len(by_file.get(key.rsplit("/", 1)[-1], [])) == 1:
                i = by_file[key.rsplit("/", 1)[-1]][0]
            if i is None:
                raise DataError(f"{where}: the {split} list names {entry!r}, which is not a view of the scene")
            if labels[i] and labels[i] != split:
                raise DataError(f"{where}: view {names[i]!r} is listed in both {labels[i]} and {split}")
            labels[i] = split
    if "train" not in lists:
        labels = [label or "train" for label in labels]
    return labels


# ---------------------------------------------------------------------------------------------------------
# Statistics (recorded into checkpoints, printed by `novelview data info`)
# ---------------------------------------------------------------------------------------------------------


#: What a manifest stores per object about its cameras; any subset's statistics follow from these columns.
CAMERA_SUMMARY_FIELDS = ("views", "elevation_sum", "elevation_min", "elevation_max", "radius_sum", "radius_min",
                         "radius_max", "fov_sum", "look_at_offset", "up_tilt_deg", "centred")
#: Objects measured in one batched solve (bounds the memory of a million-object summary).
_SUMMARY_BATCH = 4096


def capture_summary(poses: Tensor, fov_deg: Tensor) -> dict[str, np.ndarray]:
    """Per-capture camera measurements (:data:`CAMERA_SUMMARY_FIELDS`) of ``n`` captures of ``V`` views each:
    ``poses [n, V, 4, 4]``, horizontal fields of view ``fov_deg [n, V]``. Each capture is measured in its own
    frame (:func:`cameras.capture_frame`); see :func:`camera_statistics`."""
    poses = poses.double()
    frame = cameras.capture_frame(poses)
    elevation, radius = cameras.capture_spherical(poses, frame)
    fov = fov_deg.double()
    return {
        "views": np.full(poses.shape[0], poses.shape[1], dtype=np.int64),
        "elevation_sum": elevation.sum(-1).numpy(),
        "elevation_min": elevation.amin(-1).numpy(),
        "elevation_max": elevation.amax(-1).numpy(),
        "radius_sum": radius.sum(-1).numpy(),
        "radius_min": radius.amin(-1).numpy(),
        "radius_max": radius.amax(-1).numpy(),
        "fov_sum": fov.sum(-1).numpy(),
        "look_at_offset": frame.point.double().norm(dim=-1).numpy(),
        "up_tilt_deg": frame.up_tilt_deg.numpy(),
        "centred": frame.centred.numpy(),
    }


def camera_summary(scenes: Sequence[Scene]) -> dict[str, np.ndarray]:
    """:func:`capture_summary` of every scene, in order. A manifest-backed sequence hands over the columns it
    stores instead of measuring again."""
    stored = getattr(scenes, "camera_summary", None)
    if callable(stored):
        return stored()
    by_views: dict[int, list[int]] = {}
    for i, s in enumerate(scenes):
        by_views.setdefault(s.num_views, []).append(i)
    out: dict[str, np.ndarray] = {}
    for group in by_views.values():  # one batched solve per view count: datasets have 10^5 objects
        for lo in range(0, len(group), _SUMMARY_BATCH):
            chunk = group[lo : lo + _SUMMARY_BATCH]
            poses = torch.stack([scenes[i].poses for i in chunk])
            fovs = torch.stack([cameras.fov_of(scenes[i].intrinsics.double(), min(scenes[i].image_size))
                                for i in chunk])
            for key, values in capture_summary(poses, fovs).items():
                if key not in out:
                    out[key] = np.empty(len(scenes), dtype=values.dtype)
                out[key][chunk] = values
    return out


def summarise_cameras(summary: dict[str, np.ndarray]) -> dict[str, float]:
    """The statistics of :func:`camera_statistics` from per-object :func:`capture_summary` columns."""
    views = summary["views"]
    if len(views) == 0:
        return {}
    total = int(views.sum())

    def f(x: float) -> float:
        v = float(x)
        return round(v, 6) if math.isfinite(v) else v

    return {
        "radius": f(summary["radius_sum"].sum() / total),
        "radius_min": f(summary["radius_min"].min()),
        "radius_max": f(summary["radius_max"].max()),
        "fov_deg": f(summary["fov_sum"].sum() / total),
        "elevation_mean": f(summary["elevation_sum"].sum() / total),
        "elevation_min": f(summary["elevation_min"].min()),
        "elevation_max": f(summary["elevation_max"].max()),
        "views": total,
        "look_at_offset": f(summary["look_at_offset"].mean()),
        "up_tilt_deg": f(summary["up_tilt_deg"].mean()),
        "forward_facing": int((~summary["centred"].astype(bool)).sum()),
    }


def camera_statistics(scenes: Sequence[Scene]) -> dict[str, float]:
    """Camera distance, horizontal field of view and elevation over all views of ``scenes``.

    Each scene is measured in its own frame (:func:`cameras.capture_spherical`): distances from the point its
    cameras look at and elevation against the up its cameras share, so a real capture whose reconstruction put
    the object away from the origin, or with another axis up, reads like our procedural data (origin, +z up).

    Keys: ``radius`` (mean), ``radius_min``, ``radius_max``, ``fov_deg`` (mean FOV across the centre-cropped
    square the models are trained on, i.e. over ``min(H, W)`` pixels), ``elevation_mean``, ``elevation_min``,
    ``elevation_max`` (degrees), ``views``, ``look_at_offset`` (mean distance of the looked-at points from
    the world origin), ``up_tilt_deg`` (mean angle between the scenes' up and world +z) and
    ``forward_facing`` (scenes without a looked-at point, measured from the origin).
    """
    if not len(scenes):
        return {}
    return summarise_cameras(camera_summary(scenes))


__all__ = [
    "CAMERA_SUMMARY_FIELDS",
    "IMAGE_SUFFIXES",
    "VIEW_SPLITS",
    "Problems",
    "Scene",
    "SceneCollection",
    "as_4x4",
    "camera_statistics",
    "camera_summary",
    "capture_summary",
    "image_header",
    "image_header_size",
    "list_images",
    "list_subdirs",
    "natural_key",
    "read_numbers",
    "read_pose_file",
    "splits_from_lists",
    "summarise_cameras",
]
