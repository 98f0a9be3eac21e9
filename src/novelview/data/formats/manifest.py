"""Dataset manifest: one Parquet file listing a dataset's objects, views, cameras and files.

Opening a dataset folder reads every object's pose files and image headers: milliseconds per object, an hour
for Objaverse's 800k objects, and again in every process. The manifest holds what that reading produces in one
compact file, ``DIR/.novelview/manifest.parquet``, written by `novelview data synth`, `data render` and
`data index` (never by training, so that any number of processes on any number of nodes only read it, and a
read-only dataset works). :func:`~novelview.data.formats.open_dataset` uses it when it is present and current.

**Columns**, one row per object in the order the folder reader lists them: ``name``; ``folder`` (relative to
the dataset root); ``height``, ``width`` (of the images on disk); ``images``, ``masks``, ``depths`` (paths
relative to the object folder, one per view; masks and depths null where the object has none);
``depth_scale``; ``poses`` (float32, 12 numbers per view: the top 3x4 rows of the OpenCV camera-to-world
matrix, or all 16 when some bottom row is not exactly ``0 0 0 1``); ``intrinsics`` (float32 ``fx fy cx cy``,
once when every view of the object shares them, else once per view); ``distortion`` (JSON, null for pinhole
objects); ``splits`` (int8 per view: 0 train, 1 val, 2 test, -1 none; null for objects whose files name
no splits, see ``Scene.view_splits``); the object's camera measurements
(:data:`~novelview.data.formats.scene.CAMERA_SUMMARY_FIELDS`, from which the camera statistics of any subset
follow without reading a pose); and ``stamp``, a hash of the name, size and modification time of everything
under the object folder. The schema's ``novelview`` metadata (JSON) holds the format, the reader options, the
dataset's settings and the state of the root folder.

**Currency.** A manifest is used only while the folder matches it: the root folder's modification time (objects
added, removed, renamed, or rewritten through a rename as our writers do), the size and time of every file
directly in the root (``dataset.json``, ``cameras.json``, ...) and, for datasets of up to
:data:`FULL_CHECK_VIEWS` views, every object's stamp (any file added, removed or edited inside an object).
Beyond that size the per-object check would cost seconds per million files at every start, so edits made inside
object folders of a large dataset are only seen by ``verify="full"`` (`novelview data index DIR --check`).
An out-of-date manifest is reported by :class:`ManifestStale`; ``open_dataset`` then reads the folder itself.
Copies made with ``cp -a`` or ``rsync -a`` keep modification times, so a copied manifest stays current.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from novelview import cameras
from novelview.data.atomic import TMP_MARKER
from novelview.data.formats.scene import CAMERA_SUMMARY_FIELDS, VIEW_SPLITS, Scene, camera_summary
from novelview.errors import DataError

MANIFEST_DIR = ".novelview"
MANIFEST_FILE = "manifest.parquet"
MANIFEST_VERSION = 1
#: Up to this many views, opening checks every object's files against the manifest (about 4 stats per view).
FULL_CHECK_VIEWS = 100_000
_PATH_COLUMNS = ("images", "masks", "depths")
#: Objects per Parquet row group: reading holds one group's decoding buffers at a time.
ROW_GROUP_OBJECTS = 8_192
_SCENES_KEPT = 256  # Scene records kept per sequence: a training item asks for its object several times


class ManifestStale(DataError):
    """The manifest no longer describes its folder, or cannot be read; the message says why."""


def manifest_path(root: str | Path) -> Path:
    return Path(root) / MANIFEST_DIR / MANIFEST_FILE


# ---------------------------------------------------------------------------------------------------------
# Stamps: what the folder looked like when the manifest was written
# ---------------------------------------------------------------------------------------------------------


def folder_stamp(folder: str | Path) -> int:
    """A hash of the relative path, size and modification time of every file and folder under ``folder``
    (the manifest's own folder aside). Symbolic links are followed for their target's size and time, but
    linked folders are not descended into."""
    digest = hashlib.blake2b(digest_size=8)
    pending = [(str(folder), "")]
    while pending:
        here, prefix = pending.pop()
        try:
            with os.scandir(here) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as err:
            digest.update(f"{prefix}\0{err.errno}\n".encode())
            continue
        for entry in entries:
            if not prefix and entry.name == MANIFEST_DIR:
                continue
            try:
                st = entry.stat()
                size, mtime = st.st_size, st.st_mtime_ns
            except OSError:  # a dangling link
                size, mtime = -1, -1
            name = prefix + entry.name
            digest.update(f"{name}\0{size}\0{mtime}\n".encode("utf-8", "surrogateescape"))
            if entry.is_dir(follow_symlinks=False):
                pending.append((entry.path, name + "/"))
    return int.from_bytes(digest.digest(), "little", signed=True)


def root_stamp(root: str | Path) -> dict[str, Any]:
    """The root folder's modification time and the size and time of each file directly in it."""
    root = Path(root)
    files = {}
    with os.scandir(root) as listing:
        for entry in listing:
            if entry.name != MANIFEST_DIR and entry.is_file():
                st = entry.stat()
                files[entry.name] = [st.st_size, st.st_mtime_ns]
    return {"mtime_ns": root.stat().st_mtime_ns, "files": dict(sorted(files.items()))}


def _root_changes(root: Path, recorded: dict[str, Any]) -> str | None:
    """What changed at the top of ``root`` since ``recorded`` (None: nothing)."""
    try:
        mtime = root.stat().st_mtime_ns
    except OSError as err:
        return f"cannot read the folder ({err.strerror})"
    if mtime != recorded.get("mtime_ns"):
        return "entries were added, removed or renamed at the top of the folder"
    for name, (size, file_mtime) in recorded.get("files", {}).items():
        try:
            st = (root / name).stat()
        except OSError:
            return f"{name} is gone"
        if (st.st_size, st.st_mtime_ns) != (size, file_mtime):
            return f"{name} changed"
    return None


def reader_options(reader_args: dict[str, Any]) -> dict[str, Any]:
    """``reader_args`` as the JSON a manifest records (dataclasses such as ``ImpliedCameras`` as dicts)."""
    try:
        return json.loads(json.dumps(reader_args, default=lambda v: asdict(v) if is_dataclass(v) else _refuse(v)))
    except TypeError as err:
        raise DataError(f"reader options {sorted(reader_args)} cannot be recorded in a manifest ({err})") from None


def _refuse(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON")


# ---------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------


def _relative(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:  # a Blender frame may name a file beside its scene folder ("../images/x.png")
        return Path(os.path.relpath(path, base)).as_posix()


def _path_lists(scenes: Sequence[Scene], attr: str) -> pa.Array:
    rows = []
    for scene in scenes:
        paths = getattr(scene, attr)
        rows.append(None if paths is None else [_relative(p, scene.root) for p in paths])
    return pa.array(rows, pa.list_(pa.string()))


def table_from_scenes(scenes: Sequence[Scene], root: Path) -> pa.Table:
    """The manifest table of ``scenes`` read from ``root`` (stamps taken now, from the files)."""
    for scene in scenes:
        if scene.root is None:
            raise DataError(f"scene {scene.name}: no folder, so it cannot be indexed")
    k = torch.cat([s.intrinsics for s in scenes]).numpy()
    pinhole = (k[:, 0, 1] == 0) & (k[:, 1, 0] == 0) & (k[:, 2] == [0, 0, 1]).all(-1)
    if not pinhole.all():
        raise DataError("intrinsics with skew cannot be recorded in a manifest")
    distortion = [None if s.distortion is None else
                  json.dumps([None if d is None else asdict(d) for d in s.distortion]) for s in scenes]
    return manifest_table(
        names=[s.name for s in scenes],
        folders=[_relative(s.root, root) for s in scenes],
        image_hw=np.array([s.image_size for s in scenes], dtype=np.int32).reshape(-1, 2),
        images=_path_lists(scenes, "image_paths"),
        masks=_path_lists(scenes, "mask_paths"),
        depths=_path_lists(scenes, "depth_paths"),
        poses=torch.cat([s.poses for s in scenes]).numpy(),
        intrinsics=np.stack([k[:, 0, 0], k[:, 1, 1], k[:, 0, 2], k[:, 1, 2]], axis=-1),
        depth_scale=[s.depth_scale for s in scenes],
        distortion=distortion,
        view_splits=[s.view_splits for s in scenes],
        summary=camera_summary(scenes),
        stamps=[folder_stamp(s.root) for s in scenes],
    )


def manifest_table(
    *,
    names: Sequence[str],
    folders: Sequence[str],
    image_hw: np.ndarray,
    images: pa.Array,
    poses: np.ndarray,
    intrinsics: np.ndarray,
    summary: dict[str, np.ndarray],
    stamps: Sequence[int],
    masks: pa.Array | None = None,
    depths: pa.Array | None = None,
    depth_scale: Sequence[float | None] | None = None,
    distortion: Sequence[str | None] | None = None,
    view_splits: Sequence[Sequence[str] | None] | None = None,
) -> pa.Table:
    """A manifest table from columns: ``images``/``masks``/``depths`` list arrays of relative paths (one list per
    object; masks and depths may be null rows or None), ``poses [M, 4, 4]`` and ``intrinsics [M, 4]``
    (``fx fy cx cy``) for the M views in object order, ``summary`` the per-object camera measurements,
    ``view_splits`` each object's split labels (or None)."""
    n = len(names)
    images = images.cast(pa.list_(pa.string()))
    counts = pc.list_value_length(images).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    if poses.shape != (offsets[-1], 4, 4) or intrinsics.shape != (offsets[-1], 4):
        raise DataError(f"manifest columns disagree: {offsets[-1]} views, poses {poses.shape}, "
                        f"intrinsics {intrinsics.shape}")
    poses = np.asarray(poses, dtype=np.float32)
    per_view = 12 if (poses[:, 3] == np.array([0, 0, 0, 1], dtype=np.float32)).all() else 16
    pose_values = poses[:, :3].reshape(-1) if per_view == 12 else poses.reshape(-1)
    columns: dict[str, Any] = {
        "name": pa.array(list(names), pa.string()),
        "folder": pa.array(list(folders), pa.string()),
        "height": pa.array(image_hw[:, 0], pa.int32()),
        "width": pa.array(image_hw[:, 1], pa.int32()),
        "images": images,
        "masks": _optional_paths(masks, n),
        "depths": _optional_paths(depths, n),
        "depth_scale": pa.array(list(depth_scale) if depth_scale is not None else [None] * n, pa.float64()),
        "poses": pa.ListArray.from_arrays(pa.array((offsets * per_view).astype(np.int32)), pa.array(pose_values)),
        "intrinsics": _intrinsics_column(np.asarray(intrinsics, dtype=np.float32), offsets),
        "distortion": pa.array(list(distortion) if distortion is not None else [None] * n, pa.string()),
        "splits": _splits_column(view_splits, n),
    }
    for key in CAMERA_SUMMARY_FIELDS:
        columns[f"camera_{key}"] = pa.array(np.asarray(summary[key]))
    columns["stamp"] = pa.array(np.asarray(stamps, dtype=np.int64))
    return pa.table(columns)


_SPLIT_CODES = {name: code for code, name in enumerate(VIEW_SPLITS)}


def _splits_column(view_splits: Sequence[Sequence[str] | None] | None, n: int) -> pa.Array:
    rows = [None] * n if view_splits is None else [
        None if labels is None else [_SPLIT_CODES.get(label, -1) for label in labels] for labels in view_splits]
    return pa.array(rows, pa.list_(pa.int8()))


def _split_labels(codes: pa.Array) -> list[str] | None:
    """A row of the ``splits`` column as the labels ``Scene.view_splits`` holds."""
    values = codes.as_py()
    return None if values is None else [VIEW_SPLITS[c] if 0 <= c < len(VIEW_SPLITS) else "" for c in values]


def _optional_paths(paths: pa.Array | None, n: int) -> pa.Array:
    if paths is None:
        return pa.nulls(n, pa.list_(pa.string()))
    return paths.cast(pa.list_(pa.string()))


def _intrinsics_column(k: np.ndarray, offsets: np.ndarray) -> pa.Array:
    """``fx fy cx cy`` once for objects whose views all share them, else per view."""
    first = np.repeat(offsets[:-1], np.diff(offsets))
    same_view = (k == k[first]).all(-1)
    shared = np.logical_and.reduceat(same_view, offsets[:-1]) if len(k) else np.zeros(0, bool)
    keep = np.where(np.repeat(shared, np.diff(offsets)), np.arange(len(k)) == first, True)
    kept = np.where(shared, 1, np.diff(offsets))
    value_offsets = np.concatenate([[0], np.cumsum(kept)]) * 4
    return pa.ListArray.from_arrays(pa.array(value_offsets.astype(np.int32)), pa.array(k[keep].reshape(-1)))


def save_manifest(root: Path, table: pa.Table, meta: dict[str, Any]) -> Path:
    """Write ``table`` (with ``meta`` as its ``novelview`` metadata) to ``root``'s manifest, atomically."""
    path = manifest_path(root)
    path.parent.mkdir(exist_ok=True)
    views = int(pc.sum(pc.list_value_length(table.column("images"))).as_py() or 0)
    if not views:
        raise DataError(f"{root}: no views to record in a manifest")
    per_view = sum(len(chunk.values) for chunk in table.column("poses").chunks) // views
    meta = {"version": MANIFEST_VERSION, **meta, "objects": table.num_rows, "views": views, "pose_values": per_view}
    table = table.replace_schema_metadata({b"novelview": json.dumps(meta).encode()})
    tmp = path.with_name(f".{path.name}{TMP_MARKER}{secrets.token_hex(4)}")
    try:
        pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP_OBJECTS,
                       use_dictionary=[f"{c}.list.element" for c in _PATH_COLUMNS], write_statistics=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# ---------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------


def read_metadata(root: str | Path) -> dict[str, Any] | None:
    """The ``novelview`` metadata of ``root``'s manifest; None when there is none (ManifestStale if unreadable)."""
    path = manifest_path(root)
    if not path.is_file():
        return None
    try:
        meta = json.loads((pq.read_schema(path).metadata or {})[b"novelview"])
    except (OSError, pa.ArrowException, KeyError, ValueError) as err:
        raise ManifestStale(f"{path} is unreadable ({type(err).__name__}: {err})") from None
    if meta.get("version") != MANIFEST_VERSION:
        raise ManifestStale(f"{path} has manifest version {meta.get('version')}; this novelview reads "
                            f"version {MANIFEST_VERSION}")
    return meta


def load_manifest(
    root: str | Path, format: str = "auto", reader_args: dict[str, Any] | None = None, verify: str = "auto"
) -> ManifestScenes | None:
    """The scenes of ``root``'s manifest if it is current, None if there is none or it records another format or
    other reader options; :class:`ManifestStale` (saying what changed) if the folder no longer matches it.

    ``verify``: ``"auto"`` checks every object's files up to :data:`FULL_CHECK_VIEWS` views and only the top of
    the folder beyond; ``"full"`` always checks every object; ``"top"`` only the top of the folder.
    """
    if verify not in ("auto", "full", "top"):
        raise DataError(f"verify must be auto, full or top, got {verify!r}")
    root = Path(root)
    meta = read_metadata(root)
    if meta is None or format not in ("auto", meta["format"]):
        return None
    if reader_options(reader_args or {}) != meta.get("reader_args", {}):
        return None
    path = manifest_path(root)
    change = _root_changes(root, meta.get("root", {}))
    if change:
        raise ManifestStale(f"{path} is out of date: {change}")
    try:
        scenes = ManifestScenes(root, _Columns.read(path, meta), meta["format"], meta.get("settings", {}))
    except (OSError, pa.ArrowException, KeyError, ValueError) as err:
        raise ManifestStale(f"{path} is unreadable ({type(err).__name__}: {err})") from None
    if verify == "full" or (verify == "auto" and scenes.num_views <= FULL_CHECK_VIEWS):
        changed = scenes.changed_objects()
        if changed:
            more = f" (and {len(changed) - 1} more objects)" if len(changed) > 1 else ""
            raise ManifestStale(f"{path} is out of date: object {changed[0]} changed{more}")
    return scenes


def _one_chunk(column: pa.ChunkedArray) -> pa.Array:
    """The array of a column read from one row group (one chunk as a rule)."""
    if column.num_chunks == 1:
        return column.chunk(0)
    return pa.concat_arrays(column.chunks) if column.num_chunks else pa.array([], column.type)


@dataclass
class _PathLists:
    """A column of per-object path lists, kept as Arrow/numpy arrays (12 million Path objects would not fit)."""

    valid: np.ndarray  # [N] bool
    offsets: np.ndarray  # [N + 1] into indices
    indices: np.ndarray  # [L] into names
    names: pa.Array  # distinct relative paths

    def paths(self, i: int, folder: Path) -> list[Path] | None:
        if not self.valid[i]:
            return None
        return [folder / self.names[int(k)].as_py() for k in self.indices[self.offsets[i] : self.offsets[i + 1]]]


class _PathListsReader:
    """Fills a :class:`_PathLists` row group by row group; each group brings its own dictionary of names."""

    def __init__(self, objects: int, capacity: int) -> None:
        self.valid = np.empty(objects, dtype=bool)
        self.counts = np.empty(objects, dtype=np.int64)
        self.indices = np.empty(capacity, dtype=np.int32)  # untouched pages of an unused tail cost no memory
        self.filled = 0
        self.parts: list[tuple[int, int, pa.Array]] = []

    def add(self, column: pa.ChunkedArray, row: int) -> None:
        arr = _one_chunk(column)
        values = arr.flatten()
        if not pa.types.is_dictionary(values.type):
            values = values.dictionary_encode()
        self.valid[row : row + len(arr)] = arr.is_valid().to_numpy(zero_copy_only=False)
        self.counts[row : row + len(arr)] = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False)
        end = self.filled + len(values)
        self.indices[self.filled : end] = values.indices.to_numpy(zero_copy_only=False)
        self.parts.append((self.filled, end, values.dictionary))
        self.filled = end

    def finish(self) -> _PathLists:
        dictionaries = [d for _, _, d in self.parts]
        names = dictionaries[0] if dictionaries else pa.array([], pa.string())
        if any(not d.equals(names) for d in dictionaries):
            names = pc.unique(pa.concat_arrays(dictionaries))
            for lo, hi, d in self.parts:
                self.indices[lo:hi] = pc.index_in(d, value_set=names).to_numpy(zero_copy_only=False)[self.indices[lo:hi]]
        offsets = np.concatenate([[0], np.cumsum(self.counts)])
        return _PathLists(self.valid, offsets, self.indices[: self.filled], names)


_NUMBERS = ("height", "width", "depth_scale", "stamp", *(f"camera_{key}" for key in CAMERA_SUMMARY_FIELDS))


@dataclass
class _Columns:
    """A manifest's arrays, shared by every subset of its scenes."""

    names: pa.ChunkedArray
    folders: pa.ChunkedArray
    view_offsets: np.ndarray  # [N + 1]
    image_hw: np.ndarray  # [N, 2]
    images: _PathLists
    masks: _PathLists
    depths: _PathLists
    depth_scale: np.ndarray  # [N], NaN = none
    poses: np.ndarray  # [M, 12 or 16]
    k_offsets: np.ndarray  # [N + 1] rows of k_values
    k_values: np.ndarray  # [*, 4]
    distortion: pa.ChunkedArray
    splits: pa.ChunkedArray
    summary: dict[str, np.ndarray]
    stamps: np.ndarray

    @classmethod
    def read(cls, path: Path, meta: dict[str, Any]) -> _Columns:
        """Read row group by row group into arrays of their final size: decoding a whole million-object file
        at once would need several times its size in passing."""
        source = pq.ParquetFile(path, read_dictionary=[f"{c}.list.element" for c in _PATH_COLUMNS])
        n, views, per_view = int(meta["objects"]), int(meta["views"]), int(meta["pose_values"])
        if source.metadata.num_rows != n:
            raise ValueError(f"{source.metadata.num_rows} rows but its metadata says {n} objects")
        schema = source.schema_arrow
        has_splits = "splits" in schema.names
        if not has_splits and meta.get("format") in ("blender", "colmap"):  # their files may name splits
            raise ManifestStale(f"{path} was written before manifests recorded the views' splits")
        numbers = {c: np.empty(n, dtype=schema.field(c).type.to_pandas_dtype()) for c in _NUMBERS}
        numbers["depth_scale"] = np.empty(n, dtype=np.float64)
        poses = np.empty((views, per_view), dtype=np.float32)
        paths = {c: _PathListsReader(n, views) for c in _PATH_COLUMNS}
        strings: dict[str, list[pa.Array]] = {"name": [], "folder": [], "distortion": [], "splits": []}
        k_counts, k_parts = np.empty(n, dtype=np.int64), []
        row = view = 0
        for group in range(source.num_row_groups):
            table = source.read_row_group(group)
            rows = table.num_rows
            for c, out in numbers.items():
                out[row : row + rows] = table.column(c).to_numpy()
            stored = _one_chunk(table.column("poses")).flatten().to_numpy().reshape(-1, per_view)
            poses[view : view + len(stored)] = stored
            for c, reader in paths.items():
                reader.add(table.column(c), row)
            k = _one_chunk(table.column("intrinsics"))
            k_counts[row : row + rows] = pc.list_value_length(k).to_numpy() // 4
            k_parts.append(k.flatten().to_numpy().reshape(-1, 4).copy())
            for c, chunks in strings.items():
                if c == "splits" and not has_splits:  # formats whose files never name splits
                    chunks.append(pa.nulls(rows, pa.list_(pa.int8())))
                else:
                    chunks.extend(table.column(c).chunks)
            row, view = row + rows, view + len(stored)
        images = paths["images"].finish()
        return cls(
            names=pa.chunked_array(strings["name"], pa.string()),
            folders=pa.chunked_array(strings["folder"], pa.string()),
            view_offsets=images.offsets,
            image_hw=np.stack([numbers["height"], numbers["width"]], axis=-1),
            images=images,
            masks=paths["masks"].finish(),
            depths=paths["depths"].finish(),
            depth_scale=numbers["depth_scale"],
            poses=poses,
            k_offsets=np.concatenate([[0], np.cumsum(k_counts)]),
            k_values=np.concatenate(k_parts) if k_parts else np.empty((0, 4), np.float32),
            distortion=pa.chunked_array(strings["distortion"], pa.string()),
            splits=pa.chunked_array(strings["splits"], pa.list_(pa.int8())),
            summary={key: numbers[f"camera_{key}"] for key in CAMERA_SUMMARY_FIELDS},
            stamps=numbers["stamp"],
        )

    def scene(self, i: int, root: Path, format: str) -> Scene:
        """Object ``i`` as the folder reader would have returned it."""
        lo, hi = int(self.view_offsets[i]), int(self.view_offsets[i + 1])
        folder = root / self.folders[i].as_py()
        stored = self.poses[lo:hi]
        poses = np.zeros((hi - lo, 4, 4), dtype=np.float32)
        poses[:, 3, 3] = 1.0
        poses.reshape(hi - lo, 16)[:, : stored.shape[1]] = stored
        fx, fy, cx, cy = self.k_values[self.k_offsets[i] : self.k_offsets[i + 1]].T
        k = np.zeros((hi - lo, 3, 3), dtype=np.float32)
        k[:, 0, 0], k[:, 1, 1], k[:, 0, 2], k[:, 1, 2], k[:, 2, 2] = fx, fy, cx, cy, 1.0
        lenses = self.distortion[i].as_py()
        scale = float(self.depth_scale[i])
        return Scene(
            name=self.names[i].as_py(),
            image_paths=self.images.paths(i, folder) or [],
            poses=torch.from_numpy(poses),
            intrinsics=torch.from_numpy(k),
            image_size=(int(self.image_hw[i, 0]), int(self.image_hw[i, 1])),
            mask_paths=self.masks.paths(i, folder),
            depth_paths=self.depths.paths(i, folder),
            depth_scale=None if np.isnan(scale) else scale,
            root=folder,
            format=format,
            distortion=None if lenses is None else [None if d is None else cameras.Distortion(**d)
                                                    for d in json.loads(lenses)],
            view_splits=_split_labels(self.splits[i]),
        )


class ManifestScenes(Sequence[Scene]):
    """The scenes of a manifest, each built when it is asked for (a million Scene records would take minutes
    and gigabytes). Otherwise it behaves like the list ``open_dataset`` returns from a folder: ``len``,
    indexing, slicing, iteration, and ``format``, ``root``, ``settings``, ``problems``, ``num_views``."""

    def __init__(self, root: Path, columns: _Columns, format: str, settings: dict[str, Any],
                 index: np.ndarray | None = None) -> None:
        self.root = root
        self.format = format
        self.settings = settings
        self.problems: list[str] = []
        self._columns = columns
        self._index = np.arange(len(columns.names)) if index is None else np.asarray(index, dtype=np.int64)
        self._kept: dict[int, Scene] = {}

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, item: Any) -> Any:
        if isinstance(item, slice):
            return self.subset(self._index[item], relative=False)
        i = int(item)
        if not -len(self) <= i < len(self):
            raise IndexError(f"scene {item} out of range for {len(self)} scenes")
        row = int(self._index[i])
        scene = self._kept.get(row)
        if scene is None:
            if len(self._kept) >= _SCENES_KEPT:
                self._kept.pop(next(iter(self._kept)))
            scene = self._kept[row] = self._columns.scene(row, self.root, self.format)
        return scene

    def __iter__(self) -> Iterator[Scene]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"ManifestScenes({self.root}, {len(self)} objects, {self.num_views} views)"

    def subset(self, indices: Sequence[int] | np.ndarray, relative: bool = True) -> ManifestScenes:
        """The scenes at ``indices`` (positions in this sequence; ``relative=False``: manifest rows)."""
        rows = self._index[np.asarray(indices, dtype=np.int64)] if relative else np.asarray(indices)
        return ManifestScenes(self.root, self._columns, self.format, self.settings, rows)

    def view_counts(self) -> np.ndarray:
        offsets = self._columns.view_offsets
        return offsets[self._index + 1] - offsets[self._index]

    @property
    def num_views(self) -> int:
        return int(self.view_counts().sum())

    def name_order(self) -> np.ndarray:
        """Positions that sort these scenes by name (as Python sorts strings; stable)."""
        names = self._columns.names.take(pa.array(self._index))
        return pc.sort_indices(names).to_numpy()

    def camera_summary(self) -> dict[str, np.ndarray]:
        """The stored camera measurements of these scenes (see :func:`~novelview.data.formats.scene.camera_summary`)."""
        return {key: values[self._index] for key, values in self._columns.summary.items()}

    def changed_objects(self) -> list[str]:
        """Names of the objects whose files differ from when the manifest was written."""
        c = self._columns
        return [c.names[int(i)].as_py() for i in self._index
                if folder_stamp(self.root / c.folders[int(i)].as_py()) != c.stamps[i]]


__all__ = [
    "FULL_CHECK_VIEWS",
    "MANIFEST_DIR",
    "MANIFEST_FILE",
    "ManifestScenes",
    "ManifestStale",
    "folder_stamp",
    "load_manifest",
    "manifest_path",
    "manifest_table",
    "read_metadata",
    "reader_options",
    "root_stamp",
    "save_manifest",
    "table_from_scenes",
]
