"""SRN format (Scene Representation Networks; the 3DiM reference's data and our procedural datasets).

Layout of one object folder::

    <object>/rgb/000000.png ...       images (any name; matched to poses by file stem)
    <object>/pose/000000.txt ...      4x4 camera-to-world, OpenCV axes: 16 numbers (one line, or 4 lines of
                                      4); 12 numbers are the top 3x4 rows
    <object>/intrinsics.txt           line 1 `f cx cy 0.`, line 2 `0. 0. 0.`, line 3 `1.`, line 4 `H W`,
                                      optional line 5 `1` = poses are world-to-camera (or a bare 3x3 K)
    <object>/mask/000000.png          optional, 8-bit, 255 = object
    <object>/depth/000000.png         optional, 16-bit, depth along the optical axis (z) x depth_scale; 0 = none

The intrinsics refer to images of size ``H W`` (line 4, or the last line as pixelNeRF reads it); when the images
on disk have another size the intrinsics are rescaled to it. A dataset root is either one object folder or a folder of object folders; a
``dataset.json`` at the root (written by `novelview data synth` / `data render`) may give ``depth.scale``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from novelview import cameras
from novelview.data.formats.scene import (
    Problems,
    Scene,
    SceneCollection,
    image_header_size,
    list_images,
    list_subdirs,
    read_pose_file,
)
from novelview.errors import DataError, NovelviewError

#: Default depth PNG scale: stored uint16 = round(depth * 1000), i.e. millimetres when scene units are metres.
DEPTH_SCALE = 1000.0
#: Version of the ``dataset.json`` that `data synth` and `data render` write beside SRN-layout data.
DATASET_FORMAT_VERSION = 1


def is_srn_object(folder: Path) -> bool:
    return (folder / "intrinsics.txt").is_file() or ((folder / "rgb").is_dir() and (folder / "pose").is_dir())


def find_objects(root: Path) -> list[Path]:
    """The object folders of an SRN dataset rooted at ``root`` (``root`` itself if it is one object)."""
    if is_srn_object(root):
        return [root]
    return [d for d in list_subdirs(root) if is_srn_object(d)]


class Intrinsics(NamedTuple):
    """What an SRN ``intrinsics.txt`` says."""

    fx: float
    fy: float
    cx: float
    cy: float
    size: tuple[int, int] | None  # (H, W) the intrinsics refer to; None: the images on disk
    world2cam: bool = False  # SRN's optional 5th line: the pose files hold world-to-camera matrices


def read_intrinsics(path: Path) -> Intrinsics:
    """Parse an SRN ``intrinsics.txt``.

    The SRN layout (scene-representation-networks' ``parse_intrinsics``): ``f cx cy 0.``, the grid barycentre,
    the scale, ``H W``, and optionally a 5th line ``1`` when the poses are world-to-camera. pixelNeRF reads
    ``H W`` from the last line instead; both agree on the files in circulation, and we accept either (line 4 if
    it holds two numbers, else the last line). Also accepted: a bare 3x3 (or 4x4) K matrix, with no image size.
    """
    try:
        lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    except FileNotFoundError:
        raise DataError(f"{path}: intrinsics file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    try:
        rows = [[float(t) for t in ln] for ln in lines]
    except ValueError as err:
        raise DataError(f"{path}: expected numbers ({err})") from None
    matrix = _k_matrix(rows, path)
    if matrix is not None:
        out = Intrinsics(*matrix, size=None)
    else:
        first = rows[0] if rows else []
        if len(first) < 3:
            raise DataError(f"{path}: line 1 must be `f cx cy 0.` (found {len(first)} numbers)")
        f, cx, cy = first[:3]
        hw = rows[3] if len(rows) >= 4 and len(rows[3]) == 2 else rows[-1] if len(rows) >= 2 else None
        size = None
        if hw is not None and len(hw) == 2:
            if min(hw) <= 0 or not all(np.isfinite(hw)):
                raise DataError(f"{path}: the image size line must be `H W`, found {hw}")
            size = (int(round(hw[0])), int(round(hw[1])))
        elif len(rows) >= 4:
            raise DataError(f"{path}: line 4 must be the image size `H W`, found {lines[3]}")
        world2cam = len(rows) >= 5 and len(rows[4]) == 1 and rows[4][0] == 1
        out = Intrinsics(f, f, cx, cy, size, world2cam)
    if not all(np.isfinite([out.fx, out.fy, out.cx, out.cy])) or out.fx <= 0 or out.fy <= 0:
        raise DataError(f"{path}: invalid focal length / principal point {[out.fx, out.fy, out.cx, out.cy]}")
    return out


def _k_matrix(rows: list[list[float]], path: Path) -> tuple[float, float, float, float] | None:
    """``(fx, fy, cx, cy)`` if ``rows`` are a 3x3 or 4x4 intrinsics matrix, else None."""
    n = len(rows)
    if n not in (3, 4) or any(len(r) != n for r in rows):
        return None
    if not np.allclose(rows[2][:3], [0.0, 0.0, 1.0], atol=1e-6) or abs(rows[1][0]) > 1e-6:
        return None
    if abs(rows[0][1]) > 1e-6:
        raise DataError(f"{path}: skewed intrinsics (K[0][1] = {rows[0][1]}) are not supported")
    return rows[0][0], rows[1][1], rows[0][2], rows[1][2]


def _dataset_settings(root: Path) -> dict[str, Any]:
    path = root / "dataset.json"
    if not path.is_file():
        return {}
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(settings, dict):
        raise DataError(f"{path}: expected a JSON object")
    version = settings.get("format_version")
    if isinstance(version, int) and version > DATASET_FORMAT_VERSION:
        raise DataError(f"{path}: dataset format {version} is newer than this novelview reads "
                        f"({DATASET_FORMAT_VERSION}); upgrade novelview")
    return settings


def _reference_size(images: list[Path], size: tuple[int, int] | None) -> tuple[int, int]:
    """(H, W) the scene's one K is rescaled to: the first image with the aspect of intrinsics.txt's ``H W``, so
    that an odd image out is the one reported, not every other view."""
    first = image_header_size(images[0])
    if size is None or first[0] * size[1] == first[1] * size[0]:
        return first
    for path in images[1:]:
        hw = image_header_size(path)
        if hw[0] * size[1] == hw[1] * size[0]:
            return hw
    return first


def read_object(folder: Path, problems: Problems, depth_scale: float | None = None) -> Scene | None:
    """One SRN object folder -> Scene (None, with problems recorded, if it is unusable in lenient mode)."""
    try:
        intr = read_intrinsics(folder / "intrinsics.txt")
    except NovelviewError as err:
        problems.add(err)
        return None
    rgb_dir, pose_dir = folder / "rgb", folder / "pose"
    if not rgb_dir.is_dir():
        problems.add(DataError(f"{rgb_dir}: missing image folder"))
        return None
    images = list_images(rgb_dir)
    if not images:
        problems.add(DataError(f"{rgb_dir}: no images found"))
        return None
    if not pose_dir.is_dir():
        problems.add(DataError(f"{pose_dir}: missing pose folder (one .txt per image)"))
        return None
    pose_files = {p.stem: p for p in pose_dir.glob("*.txt") if not p.name.startswith(".")}
    orphans = sorted(set(pose_files) - {p.stem for p in images})
    if orphans:
        problems.add(
            DataError(
                f"{pose_dir}: {len(orphans)} pose file(s) have no image in {rgb_dir} "
                f"({len(images)} images, {len(pose_files)} poses; e.g. {pose_files[orphans[0]].name})"
            )
        )
    mask_dir, depth_dir = folder / "mask", folder / "depth"
    keep: list[Path] = []
    poses: list[Tensor] = []
    for img in images:
        pose_file = pose_files.get(img.stem)
        if pose_file is None:
            problems.add(
                DataError(f"{img}: no pose file {pose_dir / (img.stem + '.txt')} "
                          f"({len(images)} images, {len(pose_files)} poses)")
            )
            continue
        try:
            pose = read_pose_file(pose_file)
            poses.append(cameras.invert_pose(pose) if intr.world2cam else pose)
        except NovelviewError as err:
            problems.add(err)
            continue
        keep.append(img)
    if not keep:
        return None

    masks = _companions(keep, mask_dir, problems) if mask_dir.is_dir() else None
    depths = _companions(keep, depth_dir, problems) if depth_dir.is_dir() else None
    try:
        disk_hw = _reference_size(keep, intr.size)
    except NovelviewError as err:
        problems.add(err)
        return None
    k = cameras.intrinsics(torch.tensor(intr.fx, dtype=torch.float64), intr.cx, intr.cy, fy=intr.fy)
    if intr.size is not None and intr.size != disk_hw:
        k = cameras.resize_intrinsics(k, intr.size, disk_hw)
    return Scene(
        name=folder.name,
        image_paths=keep,
        poses=torch.stack(poses),
        intrinsics=k.to(torch.float32).expand(len(keep), 3, 3).clone(),
        image_size=disk_hw,
        mask_paths=masks,
        depth_paths=depths,
        depth_scale=(depth_scale or DEPTH_SCALE) if depths is not None else None,
        root=folder,
        format="srn",
    )


def _companions(images: list[Path], folder: Path, problems: Problems) -> list[Path] | None:
    """Files in ``folder`` with the same stems as ``images`` (a mask or depth map per view)."""
    out = []
    for img in images:
        path = folder / (img.stem + ".png")
        if not path.is_file():
            problems.add(DataError(f"{path}: missing (every image in {img.parent} needs one in {folder})"))
            return None
        out.append(path)
    return out


def read_srn(root: str | Path, problems: Problems | None = None) -> SceneCollection:
    """Read an SRN dataset (a folder of object folders, or one object folder)."""
    root = Path(root)
    problems = problems if problems is not None else Problems(strict=True)
    try:
        settings = _dataset_settings(root)
    except NovelviewError as err:
        problems.add(err)
        settings = {}
    depth_scale = settings.get("depth", {}).get("scale") if isinstance(settings.get("depth"), dict) else None
    folders = find_objects(root)
    if not folders:
        problems.add(DataError(f"{root}: no SRN object folders (expected <object>/rgb, <object>/pose, "
                               "<object>/intrinsics.txt)"))
    scenes = []
    for folder in folders:
        scene = read_object(folder, problems, depth_scale)
        if scene is not None:
            scenes.append(scene)
    return SceneCollection(scenes, format="srn", root=root, settings=settings, problems=problems.messages)


# ---------------------------------------------------------------------------------------------------------
# Writing (used by `data synth` and `data render`)
# ---------------------------------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    # 17 significant digits: float64 values survive a write/read round trip exactly.
    return format(float(x), ".17g")


def format_pose(pose: Tensor | np.ndarray) -> str:
    """One line of 16 numbers (row-major 4x4)."""
    return " ".join(_fmt(v) for v in np.asarray(pose, dtype=np.float64).reshape(16)) + "\n"


def format_intrinsics(k: Tensor | np.ndarray, height: int, width: int) -> str:
    """SRN ``intrinsics.txt`` text for a square-pixel camera (SRN stores a single focal length)."""
    k = np.asarray(k, dtype=np.float64)
    if abs(k[0, 0] - k[1, 1]) > 1e-6 * k[0, 0]:
        raise DataError(f"SRN intrinsics need fx == fy, got fx={k[0, 0]} fy={k[1, 1]}")
    return f"{_fmt(k[0, 0])} {_fmt(k[0, 2])} {_fmt(k[1, 2])} 0.\n0. 0. 0.\n1.\n{height} {width}\n"


def write_view(
    folder: Path,
    index: int,
    rgb: np.ndarray,
    pose: Tensor | np.ndarray,
    mask: np.ndarray | None = None,
    depth: np.ndarray | None = None,
) -> None:
    """Write view ``index`` of an object: ``rgb`` uint8 HxWx3 (or HxWx4), ``mask`` uint8 HxW, ``depth`` uint16 HxW
    (already multiplied by the depth scale). Folders are created as needed."""
    stem = f"{index:06d}"
    for sub in ("rgb", "pose") + (("mask",) if mask is not None else ()) + (("depth",) if depth is not None else ()):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(rgb)).save(folder / "rgb" / f"{stem}.png", compress_level=1)
    (folder / "pose" / f"{stem}.txt").write_text(format_pose(pose))
    if mask is not None:
        Image.fromarray(np.ascontiguousarray(mask.astype(np.uint8))).save(folder / "mask" / f"{stem}.png",
                                                                          compress_level=1)
    if depth is not None:
        Image.fromarray(np.ascontiguousarray(depth.astype(np.uint16))).save(folder / "depth" / f"{stem}.png",
                                                                            compress_level=1)


def write_intrinsics(folder: Path, k: Tensor | np.ndarray, height: int, width: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "intrinsics.txt").write_text(format_intrinsics(k, height, width))


def depth_to_uint16(depth: np.ndarray, scale: float = DEPTH_SCALE) -> np.ndarray:
    """Metric depth (0 or inf = background) -> uint16 PNG values; refuses depths that do not fit."""
    d = np.where(np.isfinite(depth), depth, 0.0) * scale
    if d.max(initial=0.0) > 65535:
        raise DataError(f"depth up to {d.max() / scale:.3f} does not fit 16 bits at scale {scale}")
    return np.round(d).astype(np.uint16)


def read_depth(path: Path, scale: float = DEPTH_SCALE) -> Tensor:
    """A depth PNG -> float32 ``[H, W]`` in scene units (0 = background)."""
    from novelview.images import open_image

    img = open_image(path, exif_transpose=False)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / float(scale))


__all__ = [
    "DEPTH_SCALE",
    "depth_to_uint16",
    "find_objects",
    "format_intrinsics",
    "format_pose",
    "is_srn_object",
    "read_depth",
    "Intrinsics",
    "read_intrinsics",
    "read_object",
    "read_srn",
    "write_intrinsics",
    "write_view",
]
