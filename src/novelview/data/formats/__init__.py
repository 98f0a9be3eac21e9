"""Dataset readers: every on-disk format becomes a list of :class:`Scene` records.

Formats (see each module's docstring for the exact layout):

* ``srn``     -- ``<object>/rgb``, ``<object>/pose``, ``<object>/intrinsics.txt`` (the 3DiM reference, `data synth`)
* ``blender`` -- NeRF ``transforms_{train,val,test}.json``
* ``colmap``  -- ``<scene>/images`` + ``<scene>/sparse/0/{cameras,images}.{txt,bin}`` (COLMAP sparse models)
* ``ring``    -- ``<object>/000.png..005.png``, 60 degrees apart (the DiT reference, Objaverse-style)
* ``mvc``     -- ``<item>/1.jpg + 3.jpg`` (or ``left/right``, ``0/1``) pairs (the DiT reference, MVC)

``open_dataset(path)`` detects the format and raises the first problem as a ``DataError``/``PoseError``
naming the file; ``open_dataset(path, strict=False)`` instead skips broken views/objects and lists every
problem in ``collection.problems`` (what `novelview data info` prints). A current manifest
(:mod:`~novelview.data.formats.manifest`, written by :func:`write_manifest`) replaces reading the folder.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from novelview import cameras
from novelview.data.formats.blender import find_scenes as _blender_scenes
from novelview.data.formats.blender import read_blender
from novelview.data.formats.colmap import find_scenes as _colmap_scenes
from novelview.data.formats.colmap import read_colmap
from novelview.data.formats.manifest import (
    MANIFEST_DIR,
    ManifestScenes,
    ManifestStale,
    load_manifest,
    manifest_path,
    read_metadata,
    reader_options,
    root_stamp,
    save_manifest,
    table_from_scenes,
)
from novelview.data.formats.pairs import ImpliedCameras, is_mvc_dataset, is_ring_dataset, read_mvc, read_rings
from novelview.data.formats.scene import (
    Problems,
    Scene,
    SceneCollection,
    aspect_differs,
    camera_statistics,
    list_subdirs,
)
from novelview.data.formats.srn import find_objects as _srn_objects
from novelview.data.formats.srn import read_srn
from novelview.errors import DataError, NovelviewError
from novelview.images import (
    Crop,
    image_header_size,
    load_mask,
    mask_channel,
    open_image,
    read_rgb,
    remap,
    resize,
    square,
    square_box,
    uint8_to_tensor,
)

FORMATS = ("srn", "blender", "colmap", "ring", "mvc")
_log = logging.getLogger("novelview.data")


def detect_format(path: str | Path) -> str:
    """The format of the dataset at ``path``: one of :data:`FORMATS` (DataError if none matches)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: dataset folder not found")
    if not path.is_dir():
        raise DataError(f"{path}: expected a dataset folder, found a file")
    if not any(p for p in path.iterdir() if not p.name.startswith(".")):
        raise DataError(f"{path}: dataset folder is empty")
    if _blender_scenes(path):
        return "blender"
    if _srn_objects(path):
        return "srn"
    if _colmap_scenes(path):  # before rings: a scene's images/ may well be named 000.png, 001.png, ...
        return "colmap"
    if is_ring_dataset(path):
        return "ring"
    if is_mvc_dataset(path):
        return "mvc"
    nested = [d for d in list_subdirs(path)[:50] if _blender_scenes(d) or _srn_objects(d) or _colmap_scenes(d)]
    hint = ""
    if nested:  # e.g. pixelNeRF's srn_cars/ holding cars_train/, cars_val/, cars_test/
        hint = f"; it holds datasets one level down: point at one of them, e.g. {', '.join(str(d) for d in nested[:3])}"
    raise DataError(
        f"{path}: unrecognised dataset layout; expected SRN (<object>/rgb, pose, intrinsics.txt), "
        "Blender (transforms_*.json), COLMAP (images/ + sparse/0/cameras.txt or .bin), "
        "rings (<object>/000.png, 001.png, ...) or MVC pairs (<item>/1.jpg + 3.jpg)"
        + hint
    )


def open_dataset(
    path: str | Path, format: str = "auto", strict: bool = True, manifest: bool = True, **reader_args: Any
) -> SceneCollection | ManifestScenes:
    """Read a dataset into a :class:`SceneCollection` (a ``list[Scene]``).

    ``format``: ``"auto"`` or one of :data:`FORMATS`. ``reader_args`` go to the reader (e.g. the
    :class:`~novelview.data.formats.pairs.ImpliedCameras` fields ``elevation_deg=20`` for rings/MVC).
    Strict (default): raise the first problem. Lenient: skip what is broken, list it in ``.problems``.
    Every scene returned has at least two views (a pair is the unit of novel view synthesis).

    ``manifest``: when the folder has a current manifest made for this format and these reader options, return
    its :class:`~novelview.data.formats.manifest.ManifestScenes` (the same scenes, built on access) instead of
    reading the folder; an out-of-date one is reported as a warning and the folder is read.
    """
    path = Path(path)
    if manifest and path.is_dir():
        try:
            found = load_manifest(path, format, reader_args)
        except ManifestStale as err:
            _log.warning("%s; reading the folder instead (`novelview data index %s` rewrites the manifest)",
                         err, path)
        else:
            if found is not None:
                return found
    problems = Problems(strict=strict)
    fmt = detect_format(path) if format == "auto" else format
    readers = {"srn": read_srn, "blender": read_blender, "colmap": read_colmap, "ring": read_rings, "mvc": read_mvc}
    if fmt not in readers:
        raise DataError(f"unknown dataset format {format!r}; choose auto or one of {', '.join(FORMATS)}")
    if reader_args and fmt not in ("ring", "mvc"):
        raise DataError(f"format {fmt} takes no reader options (got {sorted(reader_args)})")
    collection: SceneCollection = readers[fmt](path, problems=problems, **reader_args)
    usable = []
    for scene in collection:
        if scene.num_views < 2:
            problems.add(DataError(f"{scene.root or scene.name}: only {scene.num_views} usable view; novel view "
                                   "synthesis needs at least 2 per object"))
        else:
            usable.append(scene)
    collection[:] = usable
    collection.problems = problems.messages
    if not usable and not problems.messages:
        problems.add(DataError(f"{path}: no usable objects found"))
    return collection


def write_manifest(path: str | Path, format: str = "auto", **reader_args: Any) -> Path:
    """Read the dataset at ``path`` from its folder (strictly: the first problem is raised and nothing is
    written) and write its manifest, ``path/.novelview/manifest.parquet``. Returns the manifest's path.

    Do not change the dataset while it is being indexed: a change made during the reading may go unnoticed.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    options = reader_options(reader_args)
    folder = root / MANIFEST_DIR
    created = not folder.exists()
    folder.mkdir(exist_ok=True)  # before the root is stamped: creating it changes the root's time
    try:
        stamp = root_stamp(root)
        scenes = open_dataset(root, format=format, manifest=False, **reader_args)
        meta = {"format": scenes.format, "reader_args": options, "settings": scenes.settings, "root": stamp}
        return save_manifest(root, table_from_scenes(scenes, root), meta)
    except BaseException:
        if created and not any(folder.iterdir()):
            folder.rmdir()
        raise


def manifest_status(path: str | Path, verify: str = "auto") -> tuple[bool | None, str]:
    """``(current, description)`` of the manifest at ``path``: current True/False, or None when there is none."""
    try:
        meta = read_metadata(path)
        if meta is None:
            return None, f"none (`novelview data index {path}` writes one)"
        scenes = load_manifest(path, meta["format"], meta.get("reader_args"), verify=verify)
    except ManifestStale as err:
        return False, f"{err}; `novelview data index {path}` rewrites it"
    assert scenes is not None
    return True, f"current ({len(scenes)} objects, {scenes.num_views} views; {manifest_path(path)})"


# ---------------------------------------------------------------------------------------------------------
# Loading views
# ---------------------------------------------------------------------------------------------------------


def _undistort(scene: Scene, i: int, img: Image.Image, fill: int) -> Image.Image:
    """View ``i``'s stored pixels (RGB or mask) as the pinhole camera of its intrinsics would see them."""
    distortion = scene.distortion[i] if scene.distortion is not None else None
    if distortion is None:
        return img
    k = scene.disk_intrinsics(i, (img.height, img.width))
    key = tuple(float(v) for v in k[:2].flatten())
    return remap(img, _undistortion_map(key, img.height, img.width, distortion), fill)


@functools.lru_cache(maxsize=8)
def _undistortion_map(k_rows: tuple[float, ...], height: int, width: int, lens: cameras.Distortion) -> Tensor:
    """Cached: the views of one capture usually share their camera, and the map is the costly part."""
    k = torch.tensor([*k_rows, 0.0, 0.0, 1.0], dtype=torch.float64).reshape(3, 3)
    return cameras.undistortion_map(k, height, width, lens).float()


def view_intrinsics(scene: Scene, i: int, disk_hw: tuple[int, int], size: int | None, crop: Crop = "center") -> Tensor:
    """K of view ``i`` after the image (actually ``disk_hw`` on disk) is squared and resized to ``size``."""
    k = scene.disk_intrinsics(i, disk_hw)
    top, left, side = square_box(disk_hw[0], disk_hw[1], crop)
    k = cameras.crop_intrinsics(k, top, left)
    if size is not None:
        k = cameras.resize_intrinsics(k, (side, side), (size, size))
    return k.float()


def load_view_uint8(scene: Scene, i: int, size: int | None, crop: Crop = "center") -> tuple[np.ndarray, Tensor]:
    """``(uint8 [S, S, 3], K [3, 3] at S)`` of view ``i`` (for caches; see :func:`load_view`)."""
    if not 0 <= i < scene.num_views:
        raise IndexError(f"scene {scene.name} has {scene.num_views} views, asked for view {i}")
    path = scene.image_paths[i]
    img = read_rgb(path, name=str(path), exif_transpose=False)  # calibration describes the stored pixels
    img = _undistort(scene, i, img, fill=255)
    k = view_intrinsics(scene, i, (img.height, img.width), size, crop)
    img = square(img, crop)
    if size is not None:
        img = resize(img, size)
    return np.asarray(img, dtype=np.uint8), k


def check_view_header(scene: Scene, i: int) -> None:
    """Read only the header of view ``i``: a readable, non-empty image of a supported format, or a DataError."""
    path = scene.image_paths[i]
    image_header_size(path, name=str(path))


def load_view(scene: Scene, i: int, size: int | None, crop: Crop = "center") -> tuple[Tensor, Tensor]:
    """``(image [3, S, S] in [-1, 1], K [3, 3] in pixels at S)`` of view ``i``: alpha composited on white,
    centre-cropped to a square (or white-padded), resized with area filtering, intrinsics adjusted to match."""
    arr, k = load_view_uint8(scene, i, size, crop)
    return uint8_to_tensor(arr), k


def load_view_mask(scene: Scene, i: int, size: int | None, crop: Crop = "center") -> Tensor | None:
    """Foreground mask ``[1, S, S]`` in [0, 1] of view ``i`` (None when the dataset has none)."""
    if scene.mask_paths is None:
        return None
    path = scene.mask_paths[i]
    if scene.distortion is None or scene.distortion[i] is None:
        return load_mask(path, size, crop, exif_transpose=False)
    mask = mask_channel(open_image(path, name=str(path), exif_transpose=False))
    return load_mask(_undistort(scene, i, mask, fill=0), size, crop)


def _decoded_size(path: Path, problems: Problems) -> tuple[int, int] | None:
    """``(W, H)`` of a fully decoded image, or None (and a problem) when it does not decode."""
    try:
        img = open_image(path, exif_transpose=False)
    except NovelviewError as err:
        problems.add(err)
        return None
    return img.width, img.height


def check_images(collection: SceneCollection, problems: Problems) -> int:
    """Fully decode every image (and mask/depth map) of ``collection``; report each unreadable one.

    Also reports images whose aspect ratio differs from the scene's, where one K serves every view (theirs
    would be wrong; Blender and COLMAP views carry their own). Returns the number of files checked.
    """
    checked = 0
    for scene in collection:
        h0, w0 = scene.image_size
        one_k = scene.format not in ("blender", "colmap")  # their views carry their own K
        for i, path in enumerate(scene.image_paths):
            checked += 1
            size = _decoded_size(path, problems)
            if size is not None and one_k and aspect_differs(size, (w0, h0)):
                problems.add(DataError(f"{path}: image is {size[0]}x{size[1]} but the scene's intrinsics are for "
                                       f"{w0}x{h0} (different aspect ratio)"))
            # A mask or depth map of another shape would be cropped differently from its view: compared with the
            # scene's shape where one K serves all views (so an odd image out is not blamed on its mask), else
            # with its own view.
            reference = (w0, h0) if one_k else size
            for companions in (scene.mask_paths, scene.depth_paths):
                if companions is None or companions[i] == path:
                    continue
                checked += 1
                other = _decoded_size(companions[i], problems)
                if other is not None and reference is not None and aspect_differs(other, reference):
                    problems.add(DataError(f"{companions[i]}: mask/depth map is {other[0]}x{other[1]} but its view "
                                           f"{path.name} is {reference[0]}x{reference[1]} (different aspect ratio)"))
    return checked


__all__ = [
    "FORMATS",
    "check_view_header",
    "ImpliedCameras",
    "ManifestScenes",
    "ManifestStale",
    "Problems",
    "Scene",
    "SceneCollection",
    "camera_statistics",
    "check_images",
    "detect_format",
    "load_view",
    "load_view_mask",
    "load_view_uint8",
    "manifest_status",
    "open_dataset",
    "view_intrinsics",
    "write_manifest",
]
