"""Image collections whose cameras are implied rather than stored (the DiT reference's data).

**Rings** (Objaverse-style, as the DiT reference preprocessed them)::

    <root>/<object>/000.png 001.png ... 005.png

Consecutive views are 60 degrees apart horizontally: the DiT reference's data shows the object turned 60 degrees
*clockwise seen from above* from ``00k`` to ``00k+1``. Turning the object clockwise is the same picture as moving the
camera counter-clockwise seen from above, i.e. **increasing** azimuth in our convention (azimuth runs from +x
towards +y, counter-clockwise seen from +z). So view ``k`` (the number in its file name) has camera azimuth
``start_azimuth_deg + k * azimuth_step_deg`` with ``azimuth_step_deg = +60``. Any number of views >= 2 is
accepted; gaps in the numbering keep their angles. File stems must be zero-padded numbers of one width (3 or
more digits: ``000.png``, ``0000.png``) and view 0 must exist.

**Rings with stored cameras** (Zero-1-to-3 / Objaverse(-XL) Blender renders): when *every* view ``NNN.png`` has
a ``NNN.npy`` beside it, those are its camera and the 60-degree assumption is dropped (those renders are taken
from random viewpoints). Each ``.npy`` holds the 3x4 (or 4x4) world-to-camera matrix ``[R | t]`` those scripts
save (``get_3x4_RT_matrix_from_blender``): Blender camera axes (+y up, looking down -z), world +z up. The
scripts use a 35 mm lens on a 32 mm sensor, so the field of view defaults to ``stored_fov_deg`` = 49.13
degrees (override it in ``cameras.json`` for renders made otherwise). A folder where only some views have an
``.npy`` is an error: mixing stored and assumed cameras would be silently wrong.

**MVC pairs** (Multi-View Clothing, as the DiT reference used it): one folder per item holding two views of it,
taken as 60 degrees apart. Accepted names, first match wins (any image extension):

* ``1.jpg`` + ``3.jpg`` -- the MVC numbering the DiT reference pairs (1 = condition, 3 = the turned view);
* ``left.png`` + ``right.png``;
* ``0.png`` + ``1.png``.

The first view gets azimuth ``start_azimuth_deg``, the second ``start_azimuth_deg + azimuth_step_deg``.

**Implied cameras.** Elevation, distance and field of view are unknown in this data, so documented defaults
are used: elevation 0 degrees, radius 2.5, horizontal FOV 40 degrees, azimuth step +60 degrees -- the same
radius and FOV as `novelview data synth`, so models trained on either see familiar camera statistics. They can
be overridden per dataset or per object with a ``cameras.json`` holding any of the :class:`ImpliedCameras`
fields (an object's file wins over the root's, which wins over the reader arguments), e.g.
``{"elevation_deg": 20, "fov_deg": 49.1, "azimuth_step_deg": -60}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from novelview import cameras
from novelview.data.formats.scene import (
    Problems,
    Scene,
    SceneCollection,
    as_4x4,
    image_header_size,
    list_images,
    list_subdirs,
)
from novelview.errors import DataError, NovelviewError

MVC_PAIRS = (("1", "3"), ("left", "right"), ("0", "1"))
_DIGITS = re.compile(r"^\d+$")


@dataclass(frozen=True)
class ImpliedCameras:
    """Cameras assumed for data that stores none (see the module docstring)."""

    elevation_deg: float = 0.0
    radius: float = 2.5
    fov_deg: float = 40.0
    azimuth_step_deg: float = 60.0
    start_azimuth_deg: float = 0.0
    # Horizontal FOV of rings whose views carry .npy cameras: Zero-1-to-3 / Objaverse renders, 35 mm on 32 mm.
    stored_fov_deg: float = float(np.degrees(2 * np.arctan(16 / 35)))

    def with_file(self, path: Path) -> ImpliedCameras:
        """These settings overridden by a ``cameras.json`` at ``path`` (if it exists)."""
        if not path.is_file():
            return self
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(data, dict):
            raise DataError(f"{path}: expected a JSON object")
        known = {f.name for f in fields(self)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DataError(f"{path}: unknown key(s) {unknown}; allowed: {sorted(known)}")
        try:
            values = {k: float(v) for k, v in data.items()}
        except (TypeError, ValueError):
            raise DataError(f"{path}: all values must be numbers") from None
        out = replace(self, **values)
        if (not -90 < out.elevation_deg < 90 or out.radius <= 0 or not 0 < out.fov_deg < 180
                or not 0 < out.stored_fov_deg < 180):
            raise DataError(f"{path}: need -90 < elevation_deg < 90, radius > 0, 0 < fov_deg < 180 and "
                            f"0 < stored_fov_deg < 180; got {values}")
        return out

    def poses(self, view_numbers: list[float]) -> torch.Tensor:
        az = torch.tensor([self.start_azimuth_deg + k * self.azimuth_step_deg for k in view_numbers],
                          dtype=torch.float64)
        return cameras.spherical_to_pose(az, torch.full_like(az, self.elevation_deg),
                                         torch.full_like(az, self.radius))


# ---------------------------------------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------------------------------------


def ring_views(folder: Path) -> list[Path]:
    """Images of ``folder`` named by zero-padded view numbers of one width (at least 3 digits: ``000.png``,
    ``0000.png``) if view 0 is one of at least two, else []. Unpadded ``0.png`` + ``1.png`` is an MVC pair."""
    views = [p for p in list_images(folder) if _DIGITS.match(p.stem)]
    widths = {len(p.stem) for p in views}
    if len(views) < 2 or len(widths) != 1 or widths.pop() < 3:
        return []
    return views if any(int(p.stem) == 0 for p in views) else []


def mvc_pair(folder: Path) -> list[Path]:
    """The two images of an MVC item folder (see :data:`MVC_PAIRS`), else []."""
    by_stem = {p.stem.lower(): p for p in list_images(folder)}
    for a, b in MVC_PAIRS:
        if a in by_stem and b in by_stem:
            return [by_stem[a], by_stem[b]]
    return []


def _folders(root: Path, test) -> list[Path]:
    if test(root):
        return [root]
    return [d for d in list_subdirs(root) if test(d)]


def is_ring_dataset(root: Path, limit: int = 50) -> bool:
    return bool(ring_views(root)) or any(ring_views(d) for d in list_subdirs(root)[:limit])


def is_mvc_dataset(root: Path, limit: int = 50) -> bool:
    return bool(mvc_pair(root)) or any(mvc_pair(d) for d in list_subdirs(root)[:limit])


# ---------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------


def read_npy_pose(path: Path) -> torch.Tensor:
    """OpenCV camera-to-world pose from a Zero-1-to-3 / Objaverse ``.npy``: a 3x4 or 4x4 world-to-camera
    matrix in Blender camera axes (see the module docstring); validated."""
    try:
        matrix = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable .npy camera ({err})") from None
    if matrix.shape not in ((3, 4), (4, 4)) or not np.issubdtype(matrix.dtype, np.number):
        raise DataError(f"{path}: a camera .npy holds a 3x4 or 4x4 world-to-camera matrix, found "
                        f"{matrix.dtype} of shape {matrix.shape}")
    world_to_camera = as_4x4(torch.from_numpy(matrix[:3].astype(np.float64)))
    cameras.validate_pose(world_to_camera, name=str(path))
    return cameras.opengl_to_opencv(cameras.invert_pose(world_to_camera))


def _stored_poses(folder: Path, images: list[Path]) -> torch.Tensor | None:
    """Poses from ``NNN.npy`` files beside the views if every view has one, None if none has."""
    npys = [p.with_suffix(".npy") for p in images]
    present = [p.is_file() for p in npys]
    if not any(present):
        return None
    if not all(present):
        missing = [p.name for p, ok in zip(images, present) if not ok]
        raise DataError(f"{folder}: {len(missing)} view(s) without a camera .npy ({', '.join(missing[:5])}) while "
                        f"others have one; give every view its camera or none (then 60-degree steps are assumed)")
    return torch.stack([read_npy_pose(p) for p in npys])


def _has_stored_cameras(scene: Scene) -> bool:
    return scene.image_paths[0].with_suffix(".npy").is_file()


def _scene(
    folder: Path, images: list[Path], numbers: list[float], cams: ImpliedCameras, fmt: str, problems: Problems
) -> Scene | None:
    try:
        cams = cams.with_file(folder / "cameras.json")
        hw = image_header_size(images[0])
        stored = _stored_poses(folder, images) if fmt == "ring" else None
    except NovelviewError as err:
        problems.add(err)
        return None
    poses = cams.poses(numbers) if stored is None else stored
    cameras.validate_pose(poses, name=str(folder))
    fov = cams.fov_deg if stored is None else cams.stored_fov_deg
    k = cameras.intrinsics_from_fov(fov, hw[0], hw[1]).to(torch.float32)
    return Scene(
        name=folder.name,
        image_paths=images,
        poses=poses.to(torch.float32),
        intrinsics=k.expand(len(images), 3, 3).clone(),
        image_size=hw,
        root=folder,
        format=fmt,
    )


def _root_cameras(root: Path, cams: ImpliedCameras | None, problems: Problems) -> ImpliedCameras:
    cams = cams or ImpliedCameras()
    try:
        return cams.with_file(root / "cameras.json")
    except NovelviewError as err:
        problems.add(err)
        return cams


def read_rings(root: str | Path, problems: Problems | None = None, implied: ImpliedCameras | None = None,
               **overrides: float) -> SceneCollection:
    """Read ring folders (``000.png..005.png``); ``overrides`` are :class:`ImpliedCameras` fields."""
    root = Path(root)
    problems = problems if problems is not None else Problems(strict=True)
    cams = _root_cameras(root, replace(implied or ImpliedCameras(), **overrides), problems)
    folders = _folders(root, lambda d: bool(ring_views(d)))
    if not folders:
        problems.add(DataError(f"{root}: no ring folders (000.png, 001.png, ...) here or one level below"))
    scenes = []
    for folder in folders:
        views = ring_views(folder)
        scene = _scene(folder, views, [int(p.stem) for p in views], cams, "ring", problems)
        if scene is not None:
            scenes.append(scene)
    stored = sum(_has_stored_cameras(s) for s in scenes)
    return SceneCollection(scenes, format="ring", root=root,
                           settings={"cameras": cams.__dict__, "stored_cameras": stored},
                           problems=problems.messages)


def read_mvc(root: str | Path, problems: Problems | None = None, implied: ImpliedCameras | None = None,
             **overrides: float) -> SceneCollection:
    """Read MVC item folders (two views each); ``overrides`` are :class:`ImpliedCameras` fields."""
    root = Path(root)
    problems = problems if problems is not None else Problems(strict=True)
    cams = _root_cameras(root, replace(implied or ImpliedCameras(), **overrides), problems)
    items = _folders(root, lambda d: bool(mvc_pair(d)))
    if not items:
        names = ", ".join(f"{a}.*+{b}.*" for a, b in MVC_PAIRS)
        problems.add(DataError(f"{root}: no MVC item folders (expected one of: {names})"))
    scenes = []
    for folder in items:
        scene = _scene(folder, mvc_pair(folder), [0, 1], cams, "mvc", problems)
        if scene is not None:
            scenes.append(scene)
    # Item folders without a recognisable pair are reported so `data info` shows them.
    if items and items[0] != root:
        for d in list_subdirs(root):
            if not mvc_pair(d) and list_images(d):
                problems.add(DataError(f"{d}: no recognisable view pair (expected 1+3, left+right or 0+1)"))
    settings: dict[str, Any] = {"cameras": cams.__dict__}
    return SceneCollection(scenes, format="mvc", root=root, settings=settings, problems=problems.messages)


__all__ = ["MVC_PAIRS", "ImpliedCameras", "is_mvc_dataset", "is_ring_dataset", "mvc_pair", "read_mvc",
           "read_npy_pose", "read_rings", "ring_views"]
