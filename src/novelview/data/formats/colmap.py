"""COLMAP sparse models: ``<scene>/images/`` + ``<scene>/sparse/0/{cameras,images}.{txt,bin}``.

Reading follows COLMAP's documented output (https://colmap.github.io/format.html):

* ``cameras.txt``: ``CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]`` per line; ``cameras.bin`` the same as
  little-endian ``uint64 count``, then per camera ``int32 id, int32 model_id, uint64 width, uint64 height,
  float64 params[]``.
* ``images.txt``: two lines per image, ``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME`` then its 2-D points
  (possibly an empty line, which still counts); ``images.bin``: ``uint64 count``, then per image ``int32 id,
  float64 qvec[4], float64 tvec[3], int32 camera_id``, the NUL-terminated name, ``uint64 n`` and ``n`` points of
  ``float64 x, float64 y, int64 point3D_id``. ``points3D`` is not needed and not read.
* The quaternion and translation map world to camera (``x_cam = R x_world + t``) in OpenCV axes (+x right,
  +y down, +z forward), and pixel centres sit at ``(u + 0.5, v + 0.5)``: our conventions, so poses are only
  inverted (:func:`novelview.cameras.pose_from_world_to_camera`) and ``K`` is used as stored.

A scene folder holds ``images/`` and a model in ``sparse/<n>/`` (the one with the most registered images when
there are several; binary files preferred over text ones beside them, as COLMAP does), ``sparse/``,
nerfstudio's ``colmap/sparse/<n>/``, or the folder itself; a dataset root is a scene folder or a folder of
them. ``NAME`` is relative to ``images/`` (subfolders allowed). Optional masks follow COLMAP's convention,
``masks/<NAME>.png`` (0 = background); they are used when every registered image has one. Views are ordered by
name. Intrinsics refer to the camera's ``WIDTH x HEIGHT`` and are rescaled when the image on disk has another
size (images downscaled after reconstruction).

Splits: COLMAP has no place for them, so a scene names them in text files beside ``images/``: ``train.txt``,
``val.txt``, ``test.txt``, one image ``NAME`` per line (as in ``images.txt``; a bare file name is enough when no
other image has it). With only ``test.txt`` (and ``val.txt``) the images they leave out train; with ``train.txt``
as well, an image in no list is in no split. A listed name that is not a registered image is an error.

Camera models: ``SIMPLE_PINHOLE``, ``PINHOLE``, ``SIMPLE_RADIAL``, ``RADIAL``, ``OPENCV``, ``OPENCV_FISHEYE``,
``SIMPLE_RADIAL_FISHEYE``, ``RADIAL_FISHEYE``, and ``FULL_OPENCV`` when its rational terms ``k4 k5 k6`` are zero
(distorted views are undistorted on load, see :class:`novelview.cameras.Distortion`). ``FOV``,
``THIN_PRISM_FISHEYE`` and rational ``FULL_OPENCV`` lenses are refused with a message naming the camera; undistort
such captures with ``colmap image_undistorter`` first.

Writing (:func:`write_colmap`): one scene folder per scene, images copied, masks as 8-bit PNGs, one ``PINHOLE`` /
``OPENCV`` / ``FULL_OPENCV`` (when ``k3`` is used) / ``OPENCV_FISHEYE`` camera per view, text or binary, and an
empty ``points3D`` file so COLMAP tools open it. A lens with an r^8 term (``k4`` of the ``opencv`` model) has no
COLMAP equivalent and is refused.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from novelview import cameras
from novelview.data.atomic import atomic_directory
from novelview.data.formats.scene import (
    VIEW_SPLITS,
    Problems,
    Scene,
    SceneCollection,
    aspect_differs,
    image_header,
    list_subdirs,
    read_scene_folders,
    splits_from_lists,
)
from novelview.errors import DataError, NovelviewError, PoseError
from novelview.images import mask_channel

# model id -> (name, number of parameters), as in COLMAP's src/colmap/sensor/models.h
CAMERA_MODELS: dict[int, tuple[str, int]] = {
    0: ("SIMPLE_PINHOLE", 3),
    1: ("PINHOLE", 4),
    2: ("SIMPLE_RADIAL", 4),
    3: ("RADIAL", 5),
    4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8),
    6: ("FULL_OPENCV", 12),
    7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5),
    10: ("THIN_PRISM_FISHEYE", 12),
}
_PARAM_COUNT = {name: n for name, n in CAMERA_MODELS.values()}
_MODEL_ID = {name: i for i, (name, _) in CAMERA_MODELS.items()}


@dataclass
class Camera:
    model: str
    width: int
    height: int
    params: tuple[float, ...]


@dataclass
class Registered:
    quaternion: tuple[float, float, float, float]  # (w, x, y, z), world to camera
    translation: tuple[float, float, float]
    camera_id: int
    name: str


# ---------------------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------------------


def _data_lines(path: Path) -> list[tuple[int, str]]:
    """``(line number, line)`` of every line that is not a comment (COLMAP writes UTF-8; a BOM is skipped)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    return [(n + 1, line) for n, line in enumerate(text.splitlines()) if not line.lstrip().startswith("#")]


def _camera(model: str, width: float, height: float, params: list[float], where: str) -> Camera:
    if model not in _PARAM_COUNT:
        raise DataError(f"{where}: unknown camera model {model!r}; COLMAP's are {', '.join(_PARAM_COUNT)}")
    if len(params) != _PARAM_COUNT[model]:
        raise DataError(f"{where}: camera model {model} takes {_PARAM_COUNT[model]} parameters, got {len(params)}")
    if not (math.isfinite(width) and math.isfinite(height) and width >= 1 and height >= 1
            and width == int(width) and height == int(height)):
        raise DataError(f"{where}: width and height must be positive integers, got {width} x {height}")
    if not all(math.isfinite(v) for v in params):
        raise DataError(f"{where}: camera parameters contain NaN or infinite values: {params}")
    return Camera(model, int(width), int(height), tuple(params))


def read_cameras_text(path: Path) -> dict[int, Camera]:
    out = {}
    for number, line in _data_lines(path):
        tokens = line.split()
        if not tokens:
            continue
        where = f"{path}: line {number}"
        if len(tokens) < 4:
            raise DataError(f"{where}: expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS[], got {line!r}")
        try:
            camera_id, width, height = int(tokens[0]), float(tokens[2]), float(tokens[3])
            params = [float(t) for t in tokens[4:]]
        except ValueError:
            raise DataError(f"{where}: expected numbers in {line!r}") from None
        out[camera_id] = _camera(tokens[1], width, height, params, f"{path}: camera {camera_id} (line {number})")
    return out


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def read_images_text(path: Path) -> dict[int, Registered]:
    lines = _data_lines(path)
    out = {}
    # Two lines per image; the second (2-D points) may be empty and still counts, so lines are not skipped.
    while lines and not lines[-1][1].strip():
        lines.pop()
    for n in range(0, len(lines), 2):
        number, line = lines[n]
        tokens = line.split(maxsplit=9)
        if len(tokens) != 10:
            raise DataError(f"{path}: line {number}: expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME, got "
                            f"{line!r} (each image takes two lines: its pose, then its 2-D points, possibly empty)")
        try:
            image_id = int(tokens[0])
            q = tuple(float(t) for t in tokens[1:5])
            t = tuple(float(v) for v in tokens[5:8])
            camera_id = int(tokens[8])
        except ValueError:
            raise DataError(f"{path}: line {number}: expected numbers in {line!r}") from None
        points_line = lines[n + 1][1] if n + 1 < len(lines) else ""
        points = points_line.split()
        if len(points) % 3 or not all(_is_number(v) for v in points):
            raise DataError(f"{path}: line {number + 1}: the line after image {image_id} should list its 2-D points "
                            f"(X Y POINT3D_ID triples, or nothing), got {points_line!r}; each image takes two lines")
        out[image_id] = Registered(q, t, camera_id, tokens[9].strip())  # type: ignore[arg-type]
    return out


def _unpack(f: BinaryIO, fmt: str, path: Path) -> tuple:
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise DataError(f"{path}: file ends early (truncated or not a COLMAP binary model)")
    return struct.unpack(fmt, data)


def read_cameras_binary(path: Path) -> dict[int, Camera]:
    out = {}
    with open(path, "rb") as f:
        (count,) = _unpack(f, "<Q", path)
        for _ in range(count):
            camera_id, model_id, width, height = _unpack(f, "<iiQQ", path)
            if model_id not in CAMERA_MODELS:
                raise DataError(f"{path}: camera {camera_id} has unknown model id {model_id}")
            model, n = CAMERA_MODELS[model_id]
            params = list(_unpack(f, f"<{n}d", path))
            out[camera_id] = _camera(model, width, height, params, f"{path}: camera {camera_id}")
    return out


def read_images_binary(path: Path) -> dict[int, Registered]:
    out = {}
    with open(path, "rb") as f:
        (count,) = _unpack(f, "<Q", path)
        for _ in range(count):
            image_id, qw, qx, qy, qz, tx, ty, tz, camera_id = _unpack(f, "<i7di", path)
            name = bytearray()
            while (char := f.read(1)) != b"\0":
                if not char:
                    raise DataError(f"{path}: file ends inside an image name (truncated)")
                name += char
            (n_points,) = _unpack(f, "<Q", path)
            if len(f.read(24 * n_points)) != 24 * n_points:
                raise DataError(f"{path}: file ends early (truncated)")
            try:
                text = name.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{path}: image {image_id}'s name is not UTF-8") from None
            out[image_id] = Registered((qw, qx, qy, qz), (tx, ty, tz), camera_id, text)
    return out


def _model_files(folder: Path) -> tuple[Path, Path] | None:
    """(cameras, images) files of the model in ``folder``: binary preferred when both are there, as COLMAP does."""
    for ext in (".bin", ".txt"):
        cams, images = folder / f"cameras{ext}", folder / f"images{ext}"
        if cams.is_file() and images.is_file():
            return cams, images
    return None


def _read_model(folder: Path) -> tuple[dict[int, Camera], dict[int, Registered]]:
    files = _model_files(folder)
    assert files is not None
    cams, images = files
    if cams.suffix == ".txt":
        return read_cameras_text(cams), read_images_text(images)
    return read_cameras_binary(cams), read_images_binary(images)


def model_folders(scene: Path) -> list[Path]:
    """Folders below ``scene`` holding a COLMAP model, in the order they are looked for."""
    candidates = []
    for sparse in (scene / "sparse", scene / "colmap" / "sparse"):  # the second: nerfstudio's ns-process-data
        candidates += [*(list_subdirs(sparse) if sparse.is_dir() else []), sparse]
    candidates.append(scene)
    return [c for c in candidates if c.is_dir() and _model_files(c) is not None]


def is_colmap_scene(folder: Path) -> bool:
    return (folder / "images").is_dir() and bool(model_folders(folder))


def find_scenes(root: Path) -> list[Path]:
    """``root`` when it is a COLMAP scene, else its subfolders that are."""
    if is_colmap_scene(root):
        return [root]
    return [d for d in list_subdirs(root) if is_colmap_scene(d)] if root.is_dir() else []


# ---------------------------------------------------------------------------------------------------------
# Scenes
# ---------------------------------------------------------------------------------------------------------


def _intrinsics(camera: Camera, where: str) -> tuple[Tensor, cameras.Distortion | None]:
    """``K`` at the camera's own size and its lens (None for a pinhole)."""
    p, model = camera.params, camera.model
    where = f"{where}: camera model {model}"
    if model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL", "SIMPLE_RADIAL_FISHEYE", "RADIAL_FISHEYE"):
        fx = fy = p[0]
        cx, cy, extra = p[1], p[2], p[3:]
    elif model in ("PINHOLE", "OPENCV", "OPENCV_FISHEYE", "FULL_OPENCV"):
        fx, fy, cx, cy, extra = p[0], p[1], p[2], p[3], p[4:]
    else:
        raise DataError(f"{where} is not supported (FOV and thin-prism lenses); undistort the images with "
                        "`colmap image_undistorter` and read its PINHOLE model instead")
    if fx <= 0 or fy <= 0:
        raise DataError(f"{where}: focal length must be positive, got fx={fx} fy={fy}")
    lens: cameras.Distortion | None = None
    if model == "SIMPLE_RADIAL":
        lens = cameras.Distortion("opencv", k1=extra[0])
    elif model == "RADIAL":
        lens = cameras.Distortion("opencv", k1=extra[0], k2=extra[1])
    elif model == "OPENCV":
        lens = cameras.Distortion("opencv", k1=extra[0], k2=extra[1], p1=extra[2], p2=extra[3])
    elif model == "FULL_OPENCV":
        k1, k2, p1, p2, k3, k4, k5, k6 = extra
        if k4 or k5 or k6:
            raise DataError(f"{where} with rational terms k4 k5 k6 = {k4} {k5} {k6} is not supported; undistort "
                            "the images with `colmap image_undistorter` first")
        lens = cameras.Distortion("opencv", k1=k1, k2=k2, k3=k3, p1=p1, p2=p2)
    elif model == "OPENCV_FISHEYE":
        lens = cameras.Distortion("fisheye", k1=extra[0], k2=extra[1], k3=extra[2], k4=extra[3])
    elif model == "SIMPLE_RADIAL_FISHEYE":
        lens = cameras.Distortion("fisheye", k1=extra[0])
    elif model == "RADIAL_FISHEYE":
        lens = cameras.Distortion("fisheye", k1=extra[0], k2=extra[1])
    k = cameras.intrinsics(torch.tensor(fx, dtype=torch.float64), cx, cy, fy=fy)
    return k, None if lens is None or lens.is_identity else lens


def _natural(name: str) -> tuple:
    """Sort ``frame_2`` before ``frame_10`` (digits compare as numbers; the pieces alternate text, number)."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def _pose(image: Registered, where: str) -> Tensor:
    q = torch.tensor(image.quaternion, dtype=torch.float64)
    t = torch.tensor(image.translation, dtype=torch.float64)
    if not (torch.isfinite(q).all() and torch.isfinite(t).all()):
        raise PoseError(f"{where}: pose contains NaN or infinite values")
    if abs(q.norm().item() - 1.0) > 1e-3:
        raise PoseError(f"{where}: QW QX QY QZ = {image.quaternion} is not a unit quaternion (norm "
                        f"{q.norm().item():.4f}); COLMAP writes unit quaternions, so the file is damaged or not "
                        "COLMAP's")
    pose = cameras.pose_from_world_to_camera(q / q.norm(), t)
    cameras.validate_pose(pose, name=where)
    return pose


def read_scene(folder: Path, problems: Problems) -> Scene | None:
    models, broken = [], []
    for model in model_folders(folder):
        try:
            models.append((model, *_read_model(model)))
        except NovelviewError as err:  # e.g. sparse/1 of an aborted run: fine as long as another model reads
            broken.append(err)
    if not models or not problems.strict:
        for err in broken:
            problems.add(err)
    if not models:
        return None
    model_dir, cams, registered = max(models, key=lambda m: len(m[2]))  # the largest reconstruction
    images_dir, masks_dir = folder / "images", folder / "masks"
    views: list[tuple[Path, Tensor, Tensor, cameras.Distortion | None, Path]] = []
    scene_hw: tuple[int, int] | None = None
    for image_id, image in registered.items():
        where = f"{model_dir}: image {image_id} ({image.name})"
        try:
            if image.camera_id not in cams:
                raise DataError(f"{where}: camera {image.camera_id} is not in the model's cameras file")
            path = images_dir / image.name
            disk_hw, _ = image_header(path)
            camera = cams[image.camera_id]
            k, lens = _intrinsics(camera, f"{model_dir}: camera {image.camera_id}")
            if aspect_differs(disk_hw, (camera.height, camera.width)):
                raise DataError(f"{path}: image is {disk_hw[1]}x{disk_hw[0]} but its camera {image.camera_id} is "
                                f"{camera.width}x{camera.height} (different aspect ratio: cropped or rotated after "
                                "reconstruction?)")
            if disk_hw != (camera.height, camera.width):
                k = cameras.resize_intrinsics(k, (camera.height, camera.width), disk_hw)
            pose = _pose(image, where)
        except NovelviewError as err:
            problems.add(err)
            continue
        scene_hw = scene_hw or disk_hw
        if disk_hw != scene_hw:  # the scene's intrinsics refer to one size; others are rescaled on load
            k = cameras.resize_intrinsics(k, disk_hw, scene_hw)
        views.append((path, pose.to(torch.float32), k.to(torch.float32), lens, masks_dir / f"{image.name}.png"))
    if not views or scene_hw is None:
        if not registered:
            problems.add(DataError(f"{model_dir}: the model registers no images"))
        return None
    views.sort(key=lambda v: _natural(v[0].relative_to(images_dir).as_posix()))
    masks = [v[4] for v in views]
    lenses = [v[3] for v in views]
    try:
        view_splits = _view_splits(folder, [v[0].relative_to(images_dir).as_posix() for v in views])
    except DataError as err:
        problems.add(err)
        view_splits = None
    return Scene(
        name=folder.name,
        image_paths=[v[0] for v in views],
        poses=torch.stack([v[1] for v in views]),
        intrinsics=torch.stack([v[2] for v in views]),
        image_size=scene_hw,
        mask_paths=masks if all(m.is_file() for m in masks) else None,
        root=folder,
        format="colmap",
        distortion=lenses if any(lens is not None for lens in lenses) else None,
        view_splits=view_splits,
    )


def split_list_files(folder: Path) -> dict[str, Path]:
    """The scene's split lists that exist: ``folder/{train,val,test}.txt``."""
    return {s: folder / f"{s}.txt" for s in VIEW_SPLITS if (folder / f"{s}.txt").is_file()}


def _view_splits(folder: Path, names: list[str]) -> list[str] | None:
    """Each view's split from the scene's split lists (None without any): one image name per line, as in
    ``images.txt`` (relative to ``images/``; a bare file name when unambiguous), ``#`` comments and blank lines
    ignored; see :func:`~novelview.data.formats.scene.splits_from_lists` for the rules."""
    files = split_list_files(folder)
    if not files:
        return None
    lists = {}
    for split, path in files.items():
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"{path}: cannot read ({err})") from None
        lines = (line.strip() for line in text.splitlines())
        lists[split] = [line for line in lines if line and not line.startswith("#")]
    return splits_from_lists(names, lists, " / ".join(str(p) for p in files.values()))


def read_colmap(root: str | Path, problems: Problems | None = None) -> SceneCollection:
    """Read a COLMAP scene (``images/`` + ``sparse/``) or a folder of them."""
    return read_scene_folders(root, problems, find_scenes, read_scene, "colmap",
                              "COLMAP scene (images/ next to sparse/0/cameras.txt or .bin)")


# ---------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------


def _camera_record(k: Tensor, lens: cameras.Distortion | None) -> tuple[str, list[float]]:
    fx, fy, cx, cy = (float(v) for v in (k[0, 0], k[1, 1], k[0, 2], k[1, 2]))
    if lens is None:
        return "PINHOLE", [fx, fy, cx, cy]
    if lens.model == "fisheye":
        return "OPENCV_FISHEYE", [fx, fy, cx, cy, lens.k1, lens.k2, lens.k3, lens.k4]
    if lens.k4:  # COLMAP's k4 is a rational term (FULL_OPENCV's denominator): no COLMAP model has an r^8 one
        raise DataError(f"a lens with an r^8 term (k4 = {lens.k4}) has no COLMAP camera model; write the views "
                        "undistorted instead")
    if lens.k3:
        return "FULL_OPENCV", [fx, fy, cx, cy, lens.k1, lens.k2, lens.p1, lens.p2, lens.k3, 0.0, 0.0, 0.0]
    return "OPENCV", [fx, fy, cx, cy, lens.k1, lens.k2, lens.p1, lens.p2]


class ColmapSceneWriter:
    """Write one COLMAP scene folder view by view (``images/``, ``masks/``), then :meth:`close` writes the model
    (``sparse/0/``, text or binary). Every view gets its own camera: ``K`` in pixels for the image as written,
    ``pose`` OpenCV camera-to-world."""

    def __init__(self, folder: str | Path, binary: bool = False) -> None:
        self.folder = Path(folder)
        self.binary = binary
        self.cameras: list[tuple[int, str, int, int, list[float]]] = []
        self.images: list[tuple[int, list[float], list[float], int, str]] = []
        (self.folder / "images").mkdir(parents=True, exist_ok=True)

    def add(
        self,
        image: Path | np.ndarray,
        pose: Tensor | np.ndarray,
        k: Tensor | np.ndarray,
        mask: Path | np.ndarray | None = None,
        distortion: cameras.Distortion | None = None,
    ) -> None:
        """``image``: a file (copied as is) or uint8 HxWx3 pixels (saved as PNG); ``mask``: a file (its alpha or
        grey level) or uint8 HxW, written as COLMAP's 8-bit ``masks/<name>.png``."""
        i = len(self.images) + 1
        if isinstance(image, Path):
            name = f"{i - 1:04d}{image.suffix.lower()}"
            shutil.copyfile(image, self.folder / "images" / name)
            height, width = image_header(image)[0]
        else:
            name = f"{i - 1:04d}.png"
            Image.fromarray(np.ascontiguousarray(image)).save(self.folder / "images" / name, compress_level=1)
            height, width = image.shape[:2]
        if mask is not None:
            (self.folder / "masks").mkdir(exist_ok=True)
            target = self.folder / "masks" / f"{name}.png"
            if isinstance(mask, Path):
                with Image.open(mask) as img:
                    mask_channel(img).save(target)
            else:
                Image.fromarray(np.ascontiguousarray(mask.astype(np.uint8))).save(target, compress_level=1)
        model_name, params = _camera_record(torch.as_tensor(np.asarray(k, dtype=np.float64)), distortion)
        self.cameras.append((i, model_name, width, height, params))
        q, t = cameras.pose_to_world_to_camera(torch.as_tensor(np.asarray(pose, dtype=np.float64)))
        self.images.append((i, [float(v) for v in q], [float(v) for v in t], i, name))

    def close(self) -> Path:
        if not self.images:
            raise DataError(f"{self.folder}: no views to write")
        model = self.folder / "sparse" / "0"
        model.mkdir(parents=True, exist_ok=True)
        (_write_binary if self.binary else _write_text)(model, self.cameras, self.images)
        return model


def write_colmap(scenes: list[Scene], out: str | Path, binary: bool = False, overwrite: bool = False) -> Path:
    """Write scenes as COLMAP sparse models: ``out/<scene.name>/images/`` + ``sparse/0/``.

    Each view keeps its image file (copied) and gets its own camera with the view's ``K`` at the size stored on
    disk. Masks, when the scene has them, go to ``masks/<name>.png``. The dataset appears atomically.
    """
    with atomic_directory(out, overwrite=overwrite) as tmp:
        for scene in scenes:
            writer = ColmapSceneWriter(tmp / scene.name, binary=binary)
            for i, src in enumerate(scene.image_paths):
                writer.add(src, scene.poses[i].double(), scene.disk_intrinsics(i, image_header(src)[0]),
                           mask=scene.mask_paths[i] if scene.mask_paths is not None else None,
                           distortion=scene.distortion[i] if scene.distortion is not None else None)
            writer.close()
        # Marks the folder as ours, so that `overwrite=True` may replace it later (and nothing else).
        (tmp / "dataset.json").write_text(json.dumps({"generator": "novelview write_colmap", "format": "colmap"}))
    return Path(out)


def _write_text(model: Path, cams: list, images: list) -> None:
    lines = ["# Camera list with one line of data per camera:", "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]"]
    lines += [f"{cid} {name} {w} {h} {' '.join(repr(p) for p in params)}" for cid, name, w, h, params in cams]
    (model / "cameras.txt").write_text("\n".join(lines) + "\n")
    lines = ["# Image list with two lines of data per image:",
             "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME", "#   POINTS2D[] as (X, Y, POINT3D_ID)"]
    for iid, q, t, cid, name in images:
        lines += [f"{iid} {' '.join(repr(v) for v in q)} {' '.join(repr(v) for v in t)} {cid} {name}", ""]
    (model / "images.txt").write_text("\n".join(lines) + "\n")
    (model / "points3D.txt").write_text("# 3D point list (empty: written by novelview, no reconstruction)\n")


def _write_binary(model: Path, cams: list, images: list) -> None:
    with open(model / "cameras.bin", "wb") as f:
        f.write(struct.pack("<Q", len(cams)))
        for cid, name, w, h, params in cams:
            f.write(struct.pack(f"<iiQQ{len(params)}d", cid, _MODEL_ID[name], w, h, *params))
    with open(model / "images.bin", "wb") as f:
        f.write(struct.pack("<Q", len(images)))
        for iid, q, t, cid, name in images:
            f.write(struct.pack("<i7di", iid, *q, *t, cid) + name.encode("utf-8") + b"\0" + struct.pack("<Q", 0))
    (model / "points3D.bin").write_bytes(struct.pack("<Q", 0))


__all__ = ["CAMERA_MODELS", "ColmapSceneWriter", "find_scenes", "is_colmap_scene", "read_colmap", "split_list_files",
           "write_colmap"]
