"""Procedural multi-view dataset: random primitive objects rendered by an analytic torch ray caster.

Each object is 1-4 primitives (boxes, spheres, capped cylinders, capped cones) with distinct saturated
colours; every box face has its own colour and cylinder/cone caps differ from their sides, so an object's
orientation is visible in a single view. Objects are centred and scaled to a bounding radius of
:data:`OBJECT_RADIUS` (< 1, so they fit in the unit sphere and inside a 40 degree view from distance 2.5).

Rendering intersects every camera ray with every primitive in closed form, batched over all pixels of many
views at once; shading is Lambertian + ambient with a light direction fixed in the world (so the shading
moves with the view, as it would for a real object). The background is white.

Output (`novelview data synth OUT`): SRN layout, see :mod:`novelview.data.formats.srn`, plus ``dataset.json``::

    OUT/obj_00000/rgb/000000.png      uint8 RGB
    OUT/obj_00000/pose/000000.txt     4x4 OpenCV camera-to-world, one line of 16 numbers
    OUT/obj_00000/intrinsics.txt      `f cx cy 0.` / `0. 0. 0.` / `1.` / `H W`
    OUT/obj_00000/depth/000000.png    uint16: depth along the optical axis (z) x 1000, 0 = background
    OUT/obj_00000/mask/000000.png     uint8: 255 = object
    OUT/obj_00000/object.json         the primitives (for debugging / analytic checks)
    OUT/dataset.json                  generator settings and camera distribution
    OUT/.novelview/manifest.parquet   the dataset's manifest (:mod:`novelview.data.formats.manifest`)

Determinism: object ``i`` and its cameras depend only on ``(seed, i)``, never on the number of objects, and
the same settings give the same bytes (the manifest aside: it records modification times).
"""

from __future__ import annotations

import colorsys
import json
import math
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from novelview import cameras
from novelview.data.atomic import atomic_directory, write_text_atomic
from novelview.data.formats import write_manifest
from novelview.data.formats.srn import (
    DATASET_FORMAT_VERSION,
    DEPTH_SCALE,
    depth_to_uint16,
    write_intrinsics,
    write_view,
)
from novelview.data.viewpoints import CameraDistribution
from novelview.errors import ConfigError

KINDS = ("box", "sphere", "cylinder", "cone")
N_COLOURS = {"box": 6, "sphere": 1, "cylinder": 2, "cone": 2}
OBJECT_RADIUS = 0.8
#: Rays intersected per batch; bounds memory at large image sizes.
RAY_BUDGET = 1 << 18


@dataclass
class Primitive:
    """A solid in its own frame, placed by ``rotation`` (local -> world, columns are the local axes) and
    ``centre``. ``size``: box half-extents [3]; sphere [r]; cylinder [r, half_height]; cone [base radius,
    half_height] (apex at local +z). ``colours``: [n, 3] in [0, 1] (box: faces -x,+x,-y,+y,-z,+z;
    cylinder/cone: side, cap)."""

    kind: str
    centre: np.ndarray
    rotation: np.ndarray
    size: np.ndarray
    colours: np.ndarray

    def bound(self) -> float:
        """Radius of a sphere around ``centre`` containing the primitive."""
        if self.kind == "box":
            return float(np.linalg.norm(self.size))
        if self.kind == "sphere":
            return float(self.size[0])
        return float(math.hypot(self.size[0], self.size[1]))

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "centre": self.centre.tolist(),
            "rotation": self.rotation.tolist(),
            "size": self.size.tolist(),
            "colours": self.colours.tolist(),
        }


@dataclass
class SynthObject:
    primitives: list[Primitive]

    def to_json(self) -> dict[str, Any]:
        return {"primitives": [p.to_json() for p in self.primitives]}


@dataclass
class SynthConfig:
    """Settings of `novelview data synth` (recorded in ``dataset.json``)."""

    objects: int = 20
    views: int = 50
    size: int = 64
    seed: int = 0
    cameras: CameraDistribution = field(default_factory=CameraDistribution)
    max_primitives: int = 4
    light_dir: tuple[float, float, float] = (0.4, -0.3, 0.85)  # world frame, towards the light
    ambient: float = 0.35
    depth_scale: float = DEPTH_SCALE

    def __post_init__(self) -> None:
        if self.objects < 1 or self.views < 2 or self.size < 4:
            raise ConfigError(f"need objects >= 1, views >= 2 and size >= 4 (got {self.objects}, {self.views}, "
                              f"{self.size})")
        if not 1 <= self.max_primitives:
            raise ConfigError(f"max_primitives must be >= 1, got {self.max_primitives}")

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["cameras"] = self.cameras.to_json()
        out["light_dir"] = list(self.light_dir)
        return out


# ---------------------------------------------------------------------------------------------------------
# Random objects
# ---------------------------------------------------------------------------------------------------------


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _palette(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` distinct saturated colours: hues spread by the golden ratio from a random start."""
    hue0 = rng.random()
    out = []
    for i in range(n):
        hue = (hue0 + i * 0.6180339887498949) % 1.0
        sat = rng.uniform(0.65, 1.0)
        val = rng.uniform(0.75, 1.0)
        out.append(colorsys.hsv_to_rgb(hue, sat, val))
    return np.asarray(out)


def random_object(rng: np.random.Generator, max_primitives: int = 4) -> SynthObject:
    """1..max_primitives random primitives, centred and scaled to bounding radius :data:`OBJECT_RADIUS`."""
    n = int(rng.integers(1, max_primitives + 1))
    kinds = [KINDS[int(rng.integers(len(KINDS)))] for _ in range(n)]
    colours = _palette(rng, sum(N_COLOURS[k] for k in kinds))
    prims: list[Primitive] = []
    used = 0
    for i, kind in enumerate(kinds):
        if kind == "box":
            size = rng.uniform(0.15, 0.5, size=3)
        elif kind == "sphere":
            size = rng.uniform(0.2, 0.5, size=1)
        elif kind == "cylinder":
            size = np.array([rng.uniform(0.1, 0.35), rng.uniform(0.15, 0.5)])
        else:
            size = np.array([rng.uniform(0.15, 0.4), rng.uniform(0.2, 0.5)])
        k = N_COLOURS[kind]
        prim = Primitive(kind, np.zeros(3), _random_rotation(rng), size, colours[used : used + k])
        used += k
        if prims:  # attach to an earlier part, overlapping it a little, so the object is one cluster
            anchor = prims[int(rng.integers(len(prims)))]
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            prim.centre = anchor.centre + direction * (anchor.bound() + prim.bound()) * rng.uniform(0.35, 0.7)
        prims.append(prim)
    middle = np.mean([p.centre for p in prims], axis=0)
    extent = max(np.linalg.norm(p.centre - middle) + p.bound() for p in prims)
    scale = OBJECT_RADIUS / extent
    for p in prims:
        p.centre = (p.centre - middle) * scale
        p.size = p.size * scale
    return SynthObject(prims)


# ---------------------------------------------------------------------------------------------------------
# Ray casting (closed-form intersections in each primitive's local frame)
# ---------------------------------------------------------------------------------------------------------

Hit = tuple[Tensor, Tensor, Tensor]  # t [N] (inf = miss), local normal [N, 3], colour index [N]


def _miss_like(t: Tensor) -> Tensor:
    return torch.full_like(t, math.inf)


def _hit_box(o: Tensor, d: Tensor, half: Tensor) -> Hit:
    """Slab test; the entry face is the axis whose slab is entered last."""
    inv = 1.0 / d
    t1 = (-half - o) * inv
    t2 = (half - o) * inv
    near, axis = torch.minimum(t1, t2).max(dim=-1)
    far = torch.maximum(t1, t2).min(dim=-1).values
    hit = (near <= far) & (near > 0)
    sign = -torch.sign(d.gather(-1, axis[:, None]))
    normal = torch.zeros_like(o).scatter_(-1, axis[:, None], sign)
    face = axis * 2 + (sign[:, 0] > 0).long()
    return torch.where(hit, near, _miss_like(near)), normal, face


def _hit_sphere(o: Tensor, d: Tensor, r: float) -> Hit:
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - r * r
    disc = b * b - c
    s = disc.clamp_min(0).sqrt()
    t = -b - s
    t = torch.where(t > 0, t, -b + s)  # camera inside the sphere: far root
    hit = (disc >= 0) & (t > 0)
    normal = (o + t[:, None] * d) / r
    return torch.where(hit, t, _miss_like(t)), normal, torch.zeros_like(t, dtype=torch.long)


def _hit_cap(o: Tensor, d: Tensor, z: float, r: float) -> Tensor:
    """t of the disc of radius r in the plane local z = const (inf if missed)."""
    t = (z - o[:, 2]) / d[:, 2]
    x = o[:, 0] + t * d[:, 0]
    y = o[:, 1] + t * d[:, 1]
    ok = (x * x + y * y <= r * r) & (t > 0)
    return torch.where(ok, t, _miss_like(t))


def _hit_cylinder(o: Tensor, d: Tensor, r: float, hh: float) -> Hit:
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1]
    c = o[:, 0] ** 2 + o[:, 1] ** 2 - r * r
    disc = b * b - a * c
    t_side = (-b - disc.clamp_min(0).sqrt()) / a.clamp_min(1e-12)
    z = o[:, 2] + t_side * d[:, 2]
    side_ok = (disc >= 0) & (a > 1e-12) & (t_side > 0) & (z.abs() <= hh)
    t_side = torch.where(side_ok, t_side, _miss_like(t_side))
    t_top, t_bottom = _hit_cap(o, d, hh, r), _hit_cap(o, d, -hh, r)
    t_cap = torch.minimum(t_top, t_bottom)
    use_cap = t_cap < t_side
    t = torch.where(use_cap, t_cap, t_side)
    p = o + torch.where(torch.isfinite(t), t, torch.zeros_like(t))[:, None] * d
    side_n = torch.stack([p[:, 0], p[:, 1], torch.zeros_like(t)], dim=-1) / r
    cap_n = torch.zeros_like(o)
    cap_n[:, 2] = torch.where(t_top <= t_bottom, 1.0, -1.0)
    normal = torch.where(use_cap[:, None], cap_n, side_n)
    return t, normal, use_cap.long()


def _hit_cone(o: Tensor, d: Tensor, r: float, hh: float) -> Hit:
    """Apex at local z = +hh, base disc of radius r at z = -hh."""
    k2 = (r / (2.0 * hh)) ** 2
    w = hh - o[:, 2]
    a = d[:, 0] ** 2 + d[:, 1] ** 2 - k2 * d[:, 2] ** 2
    b = o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1] + k2 * w * d[:, 2]
    c = o[:, 0] ** 2 + o[:, 1] ** 2 - k2 * w * w
    disc = b * b - a * c
    s = disc.clamp_min(0).sqrt()
    # Numerically stable roots of a t^2 + 2 b t + c = 0 (a may be ~0 for rays parallel to the surface).
    q = -(b + torch.where(b >= 0, s, -s))
    q = torch.where(q.abs() < 1e-12, torch.full_like(q, 1e-12), q)
    roots = torch.stack([q / torch.where(a.abs() < 1e-12, torch.full_like(a, 1e-12), a), c / q], dim=-1)
    z = o[:, 2:3] + roots * d[:, 2:3]
    ok = (disc[:, None] >= 0) & (roots > 0) & (z >= -hh) & (z <= hh)
    t_side = torch.where(ok, roots, torch.full_like(roots, math.inf)).min(dim=-1).values
    t_base = _hit_cap(o, d, -hh, r)
    use_cap = t_base < t_side
    t = torch.minimum(t_side, t_base)
    p = o + torch.where(torch.isfinite(t), t, torch.zeros_like(t))[:, None] * d
    side_n = torch.stack([p[:, 0], p[:, 1], k2 * (hh - p[:, 2])], dim=-1)
    side_n = torch.nn.functional.normalize(side_n, dim=-1)
    cap_n = torch.zeros_like(o)
    cap_n[:, 2] = -1.0
    return t, torch.where(use_cap[:, None], cap_n, side_n), use_cap.long()


def intersect(prim: Primitive, origins: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """World rays ``[N, 3]`` against one primitive -> ``(t [N], world normal [N, 3], colour [N, 3])``."""
    rot = torch.as_tensor(prim.rotation, dtype=origins.dtype)
    centre = torch.as_tensor(prim.centre, dtype=origins.dtype)
    o = (origins - centre) @ rot  # R^T (o - c) for row vectors
    d = dirs @ rot
    size = [float(s) for s in prim.size]
    if prim.kind == "box":
        t, n, idx = _hit_box(o, d, torch.as_tensor(size, dtype=o.dtype))
    elif prim.kind == "sphere":
        t, n, idx = _hit_sphere(o, d, size[0])
    elif prim.kind == "cylinder":
        t, n, idx = _hit_cylinder(o, d, size[0], size[1])
    elif prim.kind == "cone":
        t, n, idx = _hit_cone(o, d, size[0], size[1])
    else:
        raise ConfigError(f"unknown primitive kind {prim.kind!r}")
    colours = torch.as_tensor(prim.colours, dtype=o.dtype)[idx]
    return t, n @ rot.T, colours


@dataclass
class Rendering:
    """``rgb`` [B, H, W, 3] in [0, 1]; ``depth`` [B, H, W] along the optical axis (0 = background);
    ``mask`` [B, H, W] bool; ``distance`` [B, H, W] along the ray (inf = background)."""

    rgb: Tensor
    depth: Tensor
    mask: Tensor
    distance: Tensor


def render(
    obj: SynthObject,
    poses: Tensor,
    k: Tensor,
    size: int,
    light_dir: tuple[float, float, float] = SynthConfig.light_dir,
    ambient: float = SynthConfig.ambient,
) -> Rendering:
    """Render ``obj`` from ``poses`` ``[B, 4, 4]`` (OpenCV c2w) with intrinsics ``k`` ``[3, 3]`` at ``size``."""
    per_batch = max(1, RAY_BUDGET // (size * size))
    parts = [_render_batch(obj, poses[i : i + per_batch], k, size, light_dir, ambient)
             for i in range(0, len(poses), per_batch)]
    return Rendering(*(torch.cat([getattr(p, f) for p in parts]) for f in ("rgb", "depth", "mask", "distance")))


def _sphere_candidates(origins: Tensor, dirs: Tensor, centre: Tensor, radius: float) -> Tensor:
    """Indices of the rays that pass within ``radius`` of ``centre`` in front of the camera (cheap culling)."""
    oc = origins - centre
    b = (oc * dirs).sum(-1)
    c = (oc * oc).sum(-1) - radius * radius
    disc = b * b - c
    return ((disc >= 0) & (-b + disc.clamp_min(0).sqrt() > 0)).nonzero()[:, 0]


def _render_batch(obj: SynthObject, poses: Tensor, k: Tensor, size: int, light_dir, ambient: float) -> Rendering:
    b = len(poses)
    # Rays in float64 (a few ops) so that pixel directions do not depend on BLAS threading; the intersections
    # run in float32.
    origins, dirs = cameras.pixel_rays(poses.double(), k.double(), size, size)
    forward = poses.double()[:, None, None, :3, 2]
    cos_axis = (dirs * forward).sum(-1).reshape(-1).float()
    origins = origins.reshape(-1, 3).float()
    dirs = dirs.reshape(-1, 3).float()
    n_rays = len(dirs)

    # Only rays through the object's bounding sphere can hit anything; each primitive then tests only the
    # rays through its own bounding sphere. This skips most of the image for most primitives.
    zero = torch.zeros(3)
    bound = max(float(np.linalg.norm(p.centre)) + p.bound() for p in obj.primitives)
    live = _sphere_candidates(origins, dirs, zero, bound * 1.0001)
    o_live, d_live = origins[live], dirs[live]
    best_t = torch.full((len(live),), math.inf)
    best_n = torch.zeros(len(live), 3)
    best_c = torch.ones(len(live), 3)
    for prim in obj.primitives:
        centre = torch.as_tensor(prim.centre, dtype=torch.float32)
        sub = _sphere_candidates(o_live, d_live, centre, prim.bound() * 1.0001)
        if len(sub) == 0:
            continue
        t, n, c = intersect(prim, o_live[sub], d_live[sub])
        closer = t < best_t[sub]
        hit_rows = sub[closer]
        best_t[hit_rows] = t[closer]
        best_n[hit_rows] = n[closer]
        best_c[hit_rows] = c[closer]

    hit = torch.isfinite(best_t)
    rows = live[hit]
    light = torch.nn.functional.normalize(torch.tensor(light_dir, dtype=torch.float32), dim=0)
    n = torch.nn.functional.normalize(best_n[hit], dim=-1)
    n = torch.where(((n * dirs[rows]).sum(-1) > 0)[:, None], -n, n)  # face the camera
    shade = ambient + (1.0 - ambient) * (n @ light).clamp_min(0)

    rgb = torch.ones(n_rays, 3)
    rgb[rows] = best_c[hit] * shade[:, None]
    distance = torch.full((n_rays,), math.inf)
    distance[rows] = best_t[hit]
    depth = torch.zeros(n_rays)
    depth[rows] = best_t[hit] * cos_axis[rows]
    mask = torch.zeros(n_rays, dtype=torch.bool)
    mask[rows] = True
    shape = (b, size, size)
    return Rendering(rgb.reshape(*shape, 3), depth.reshape(shape), mask.reshape(shape), distance.reshape(shape))


# ---------------------------------------------------------------------------------------------------------
# Dataset generation
# ---------------------------------------------------------------------------------------------------------


def object_rngs(seed: int, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for object ``index``'s shape and its cameras."""
    return np.random.default_rng([seed, index, 0]), np.random.default_rng([seed, index, 1])


def object_name(index: int) -> str:
    return f"obj_{index:05d}"


@dataclass
class ObjectViews:
    """Everything written for one object: uint8 ``rgb`` [V, S, S, 3], ``mask`` [V, S, S], uint16 ``depth``
    [V, S, S] (x depth_scale), float64 ``poses`` [V, 4, 4], ``k`` [3, 3]."""

    obj: SynthObject
    rgb: np.ndarray
    mask: np.ndarray
    depth: np.ndarray
    poses: Tensor
    k: Tensor


def render_object(cfg: SynthConfig, index: int) -> ObjectViews:
    """Generate and render object ``index`` of the dataset described by ``cfg``."""
    shape_rng, camera_rng = object_rngs(cfg.seed, index)
    obj = random_object(shape_rng, cfg.max_primitives)
    return render_object_views(obj, cfg.cameras.poses(camera_rng, cfg.views), cfg)


def render_object_views(obj: SynthObject, poses: Tensor, cfg: SynthConfig) -> ObjectViews:
    """Render ``obj`` from ``poses`` with ``cfg``'s intrinsics, size and lighting, ready to write to disk."""
    k = cfg.cameras.intrinsics(cfg.size)
    out = render(obj, poses, k, cfg.size, cfg.light_dir, cfg.ambient)
    return ObjectViews(
        obj=obj,
        rgb=(out.rgb * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).numpy(),
        mask=out.mask.numpy().astype(np.uint8) * 255,
        depth=depth_to_uint16(out.depth.numpy(), cfg.depth_scale),
        poses=poses,
        k=k,
    )


def write_object_views(folder: Path, views: ObjectViews) -> int:
    """Write one rendered object in SRN layout; returns the number of views."""
    size = views.rgb.shape[1]
    write_intrinsics(folder, views.k, size, size)
    for v in range(len(views.rgb)):
        write_view(folder, v, views.rgb[v], views.poses[v], mask=views.mask[v], depth=views.depth[v])
    (folder / "object.json").write_text(json.dumps(views.obj.to_json()) + "\n")
    return len(views.rgb)


def dataset_json(cfg: SynthConfig) -> dict[str, Any]:
    return {
        "format": "srn",
        "format_version": DATASET_FORMAT_VERSION,
        "generator": "novelview data synth",
        "objects": cfg.objects,
        "views": cfg.views,
        "image_size": [cfg.size, cfg.size],
        "seed": cfg.seed,
        "cameras": cfg.cameras.to_json(),
        "depth": {"kind": "z", "scale": cfg.depth_scale, "background": 0,
                  "meaning": "uint16 value / scale = depth along the camera's optical axis in scene units"},
        "object_radius": OBJECT_RADIUS,
        "settings": cfg.to_json(),
    }


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run torch single-threaded here: the per-op work is small, and a second OpenMP thread would fight the
    PNG/file-writing threads for the cores (on a busy 2-core machine it made rendering 4x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _render_and_write(cfg: SynthConfig, index: int, out: str) -> int:
    """One object, start to finish, in a worker process (module level so that spawn can import it)."""
    with _torch_threads(1):
        return write_object_views(Path(out) / object_name(index), render_object(cfg, index))


def generate(
    out: str | Path,
    cfg: SynthConfig,
    overwrite: bool = False,
    progress: bool = True,
    workers: int = 1,
    manifest: bool = True,
) -> Path:
    """Write the procedural dataset to ``out`` atomically (see the module docstring), then its manifest
    (unless ``manifest`` is false).

    ``workers=1``: rendering (torch, one thread) overlaps with PNG encoding and file writes (a small thread
    pool; PIL and file I/O release the GIL), which keeps both cores of a small machine busy. ``workers=N``:
    N spawned processes each render and write whole objects, for machines with many cores. Objects depend only
    on ``(seed, index)``, so the bytes are the same either way.
    """
    from tqdm.auto import tqdm

    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    out = Path(out)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        bar = tqdm(total=cfg.objects * cfg.views, unit="view", desc="synth", disable=not progress)
        if workers == 1:
            _generate_here(cfg, tmp, bar)
        else:
            # spawn: fresh interpreters, no OpenMP thread pool inherited from this process.
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                pending: deque[Future[int]] = deque()
                for i in range(cfg.objects):
                    pending.append(pool.submit(_render_and_write, cfg, i, str(tmp)))
                    while len(pending) > 4 * workers:  # bounded queue, progress in object order
                        bar.update(pending.popleft().result())
                while pending:
                    bar.update(pending.popleft().result())
        bar.close()
        # No timings or dates in here: the same settings must give the same bytes.
        write_text_atomic(tmp / "dataset.json", json.dumps(dataset_json(cfg), indent=2) + "\n")
    if manifest:
        write_manifest(out, format="srn")
    return out


def _generate_here(cfg: SynthConfig, tmp: Path, bar: Any) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool, _torch_threads(1):
        pending: deque[Future[int]] = deque()
        for i in range(cfg.objects):
            views = render_object(cfg, i)
            pending.append(pool.submit(write_object_views, tmp / object_name(i), views))
            while len(pending) > 2:  # bounded queue: memory stays at a few objects
                bar.update(pending.popleft().result())
        while pending:
            bar.update(pending.popleft().result())


__all__ = [
    "KINDS",
    "OBJECT_RADIUS",
    "ObjectViews",
    "Primitive",
    "Rendering",
    "SynthConfig",
    "SynthObject",
    "dataset_json",
    "generate",
    "intersect",
    "object_name",
    "random_object",
    "render",
    "render_object",
    "render_object_views",
    "write_object_views",
]
