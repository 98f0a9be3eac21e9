"""`novelview data render MESH_DIR OUT`: a folder of meshes -> a multi-view dataset.

Same cameras and layout as `novelview data synth` (SRN by default, or Blender/NeRF): per object RGBA images
(alpha = coverage, composited on white when loaded), 16-bit depth along the optical axis x 1000, 8-bit masks,
and ``dataset.json`` with the settings and camera distribution at the top. Or COLMAP (``format="colmap"``):
per object ``images/`` (RGB, already on white), ``masks/`` and a text model in ``sparse/0/``; COLMAP's format
has no place for depth, so none is written.

* **Parallel**: ``workers`` processes, one mesh at a time each, one EGL context per task.
* **Resumable**: each object is written into a temporary folder and renamed when complete; a rerun with the
  same settings skips the objects already there. A different ``size``/``views``/cameras/format in an existing
  ``OUT`` is refused (``overwrite=True`` starts afresh).
* **Robust**: a mesh that fails to load, has no faces or fails to render is reported, listed with the reason
  in ``OUT/failures.txt`` and skipped; the run goes on. Missing EGL is reported up front with what to install.
* **Deterministic**: an object's cameras depend on ``(seed, object name)`` only.
* **Indexed**: at the end the dataset's manifest (``OUT/.novelview/manifest.parquet``) is written, so training
  opens it without reading every object folder.
"""

from __future__ import annotations

import json
import shutil
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from novelview.data.atomic import atomic_directory, check_writable_target, is_temporary, write_text_atomic
from novelview.data.formats import write_manifest
from novelview.data.formats.blender import BlenderSceneWriter
from novelview.data.formats.colmap import ColmapSceneWriter
from novelview.data.formats.srn import (
    DATASET_FORMAT_VERSION,
    DEPTH_SCALE,
    depth_to_uint16,
    write_intrinsics,
    write_view,
)
from novelview.data.synthetic import OBJECT_RADIUS, SynthConfig
from novelview.data.viewpoints import CameraDistribution
from novelview.errors import ConfigError, DataError, NovelviewError
from novelview.images import to_rgb
from novelview.render.mesh import MESH_SUFFIXES, UpAxis, find_meshes, load_mesh

OutputFormat = Literal["srn", "blender", "colmap"]


@dataclass
class RenderConfig:
    """Settings of `novelview data render` (recorded in ``dataset.json``)."""

    views: int = 50
    size: int = 64
    format: OutputFormat = "srn"
    cameras: CameraDistribution = field(default_factory=CameraDistribution)
    seed: int = 0
    antialias: int = 1
    up: UpAxis = "auto"
    light_dir: tuple[float, float, float] = SynthConfig.light_dir
    ambient: float = SynthConfig.ambient
    depth_scale: float = DEPTH_SCALE

    def __post_init__(self) -> None:
        if self.views < 2 or self.size < 4 or self.antialias < 1:  # one view per object teaches nothing
            raise ConfigError(f"need views >= 2, size >= 4, antialias >= 1 (got {self.views}, {self.size}, "
                              f"{self.antialias})")
        if self.format not in ("srn", "blender", "colmap"):
            raise ConfigError(f"output format must be 'srn', 'blender' or 'colmap', got {self.format!r}")
        if self.up not in ("auto", "y", "z"):
            raise ConfigError(f"up axis must be auto, y or z, got {self.up!r}")

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["cameras"] = self.cameras.to_json()
        out["light_dir"] = list(self.light_dir)
        return out

    def identity(self) -> dict[str, Any]:
        """What must match for a rerun to resume into an existing OUT."""
        d = self.to_json()
        return {k: d[k] for k in ("views", "size", "format", "cameras", "seed", "antialias", "up")}


@dataclass
class RenderSummary:
    rendered: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (mesh path, reason)
    manifest: Path | None = None
    manifest_error: str | None = None  # why no manifest was written (the dataset itself is complete)


def object_cameras(cfg: RenderConfig, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(poses [V, 4, 4] float64, K [3, 3])`` of object ``name``; independent of the other meshes."""
    rng = np.random.default_rng([cfg.seed, zlib.crc32(name.encode("utf-8"))])
    return cfg.cameras.poses(rng, cfg.views), cfg.cameras.intrinsics(cfg.size)


def is_complete(folder: Path, fmt: OutputFormat) -> bool:
    if fmt == "blender":
        return (folder / "transforms_train.json").is_file()
    if fmt == "colmap":
        return (folder / "sparse" / "0" / "images.txt").is_file()
    return (folder / "intrinsics.txt").is_file() and (folder / "rgb").is_dir()


def render_one(mesh_path: Path, name: str, out: Path, cfg: RenderConfig) -> str:
    """Render one mesh into ``out/name`` atomically. Returns ``name``; raises on failure."""
    from novelview.render.gl import GLRenderer

    mesh = load_mesh(mesh_path, up=cfg.up, radius=OBJECT_RADIUS)
    poses, k = object_cameras(cfg, name)
    with GLRenderer(cfg.size, cfg.antialias, cfg.light_dir, cfg.ambient) as renderer:
        views = renderer.render(mesh, poses, k)
    depth = depth_to_uint16(views.depth, cfg.depth_scale)
    mask = views.mask.astype(np.uint8) * 255
    with atomic_directory(out / name, overwrite=True) as tmp:
        if cfg.format == "srn":
            write_intrinsics(tmp, k, cfg.size, cfg.size)
            for v in range(cfg.views):
                write_view(tmp, v, views.rgba[v], poses[v], mask=mask[v], depth=depth[v])
        elif cfg.format == "colmap":
            colmap = ColmapSceneWriter(tmp)
            for v in range(cfg.views):  # on white exactly as loading the RGBA views of the other layouts does
                colmap.add(np.asarray(to_rgb(Image.fromarray(views.rgba[v]))), poses[v], k, mask=mask[v])
            colmap.close()
        else:
            writer = BlenderSceneWriter(tmp, split="train", depth_scale=cfg.depth_scale)
            for v in range(cfg.views):
                writer.add(views.rgba[v], poses[v], k, depth=depth[v])
            writer.close()
        (tmp / "source.json").write_text(json.dumps({"mesh": str(mesh_path), "triangles": mesh.triangles,
                                                     "normalisation": mesh.transform.tolist()}) + "\n")
    return name


def _render_task(mesh_path: str, name: str, out: str, cfg: RenderConfig) -> tuple[str, str | None]:
    """Worker entry point: never raises, so one bad mesh cannot abort the run."""
    try:
        render_one(Path(mesh_path), name, Path(out), cfg)
        return name, None
    except NovelviewError as err:
        return name, str(err)
    except Exception as err:  # noqa: BLE001 -- a broken mesh may break trimesh/GL in any way; report it
        return name, f"{mesh_path}: {type(err).__name__}: {err}"


def _prepare_out(out: Path, cfg: RenderConfig, overwrite: bool) -> None:
    info_path = out / "dataset.json"
    if overwrite and out.exists():
        check_writable_target(out, overwrite=True)  # only ever deletes a dataset
        shutil.rmtree(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not info_path.is_file():
            raise DataError(f"{out}: not empty and not a rendered dataset (no dataset.json); choose another "
                            "folder")
        try:
            previous = json.loads(info_path.read_text(encoding="utf-8")).get("render", {})
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as err:
            raise DataError(f"{info_path}: unreadable ({err}); pass --overwrite to start afresh") from None
        current = cfg.identity()
        changed = sorted(k for k in set(current) | set(previous) if current.get(k) != previous.get(k))
        if changed:
            detail = ", ".join(f"{k} {previous.get(k)!r} -> {current.get(k)!r}" for k in changed)
            raise DataError(f"{out}: was rendered with other settings ({detail}); use another folder or --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    for leftover in out.iterdir():  # folders of a run that was killed mid-object
        if leftover.is_dir() and is_temporary(leftover):
            shutil.rmtree(leftover, ignore_errors=True)


def _dataset_json(cfg: RenderConfig, mesh_dir: Path, summary: RenderSummary, total: int) -> dict[str, Any]:
    return {
        "format": cfg.format,
        "format_version": DATASET_FORMAT_VERSION,
        "generator": "novelview data render",
        "source": str(mesh_dir),
        "objects": total - len(summary.failed),
        "failed": len(summary.failed),
        "views": cfg.views,
        "image_size": [cfg.size, cfg.size],
        "seed": cfg.seed,
        "cameras": cfg.cameras.to_json(),
        "depth": {"kind": "z", "scale": cfg.depth_scale, "background": 0,
                  "meaning": "uint16 value / scale = depth along the camera's optical axis in scene units"},
        "object_radius": OBJECT_RADIUS,
        "render": cfg.identity(),
        "settings": cfg.to_json(),
    }


def render_dataset(
    mesh_dir: str | Path,
    out: str | Path,
    cfg: RenderConfig,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    manifest: bool = True,
) -> RenderSummary:
    """Render every mesh under ``mesh_dir`` into ``out`` (see the module docstring); ``manifest``: then write
    its manifest."""
    from tqdm.auto import tqdm

    from novelview.render.gl import check_available

    mesh_dir, out = Path(mesh_dir), Path(out)
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    meshes = find_meshes(mesh_dir)
    if not meshes:
        raise DataError(f"{mesh_dir}: no mesh files ({', '.join(MESH_SUFFIXES)}) found")
    check_available()  # fail once, clearly, before any work
    _prepare_out(out, cfg, overwrite)
    summary = RenderSummary()
    todo = []
    for name, path in meshes:
        if (out / name).is_dir() and is_complete(out / name, cfg.format):
            summary.skipped.append(name)
        else:
            todo.append((name, path))
    # Written first so a resumed run can check its settings; rewritten with the counts at the end.
    write_text_atomic(out / "dataset.json", json.dumps(_dataset_json(cfg, mesh_dir, summary, len(meshes)), indent=2))
    paths = dict(todo)
    bar = tqdm(total=len(todo), unit="mesh", desc="render", disable=not progress)
    if workers <= 1:
        results = (_render_task(str(p), n, str(out), cfg) for n, p in todo)
        for name, error in results:
            _record(summary, name, error, paths, bar)
    else:
        # spawn: a fresh process per worker, no GL or torch thread state inherited from this one.
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_render_task, str(p), n, str(out), cfg) for n, p in todo]
            for fut in as_completed(futures):
                name, error = fut.result()
                _record(summary, name, error, paths, bar)
    bar.close()
    failures = out / "failures.txt"
    if summary.failed:
        write_text_atomic(failures, "".join(f"{path}\t{reason}\n" for path, reason in sorted(summary.failed)))
    elif failures.exists():
        failures.unlink()
    write_text_atomic(out / "dataset.json", json.dumps(_dataset_json(cfg, mesh_dir, summary, len(meshes)), indent=2))
    if manifest and (summary.rendered or summary.skipped):
        try:
            summary.manifest = write_manifest(out, format=cfg.format)
        except NovelviewError as err:
            summary.manifest_error = str(err)
    return summary


def _record(summary: RenderSummary, name: str, error: str | None, paths: dict[str, Path], bar: Any) -> None:
    if error is None:
        summary.rendered.append(name)
    else:
        summary.failed.append((str(paths[name]), error.replace("\n", " ")))
        bar.write(f"failed: {error}")
    bar.update(1)


__all__ = ["RenderConfig", "RenderSummary", "is_complete", "object_cameras", "render_dataset", "render_one"]
