"""The evaluation protocol: which (object, condition view, target views) every method is scored on.

Rules (printed in every report and documented in docs/evaluation.md):

* Objects come from the dataset's **object-level split** exactly as training made it
  (:func:`novelview.data.views.split_objects`: objects sorted by name, permuted by ``split_seed``), so
  ``--split test`` means objects the model never saw. ``--objects N`` keeps N of them, chosen by a permutation
  seeded by ``seed`` and listed in split order; without it every object of the split is evaluated.
* For each object a generator seeded by ``(seed, crc32(object name))`` picks the condition view (uniform over the
  object's views; ``--cond-view V`` fixes it to view V of every object instead) and then ``K`` distinct target
  views among the others (all others when ``K`` is None or at least their number), in ascending view order.
  Keying on the name makes an object's views independent of which other objects are evaluated.
* A scene split by its own view splits (:mod:`novelview.data.views`, ``split_by == "views"``) is scored on every
  view of the split: a generator seeded by ``(seed, crc32(name))`` shuffles them into groups of ``K`` targets
  (one group when ``K`` is None), and each group gets its own condition view drawn from the scene's train views
  (``--cond-view V`` fixes it to train view V). Each group is one task; ``group`` numbers them.
* The same tasks are given to every method of a run (the model, each baseline), and the same ``seed`` on the same
  dataset gives the same tasks in any run, so numbers compare across runs and methods.
* The 3D-consistency orbit of an object is its other views (all but the condition; of a scene split by its views,
  the split's views), sorted by azimuth (about the point its cameras look at, around their up) measured
  from the condition view's azimuth, thinned evenly to at most ``orbit_views``: stochastic conditioning then
  generates them in that order, each near views generated before it.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from novelview import cameras
from novelview.data.formats import Scene
from novelview.errors import ConfigError


@dataclass(frozen=True)
class EvalTask:
    """One evaluated object: its condition view and target views (indices into the object's views)."""

    object_index: int  # into the split's scene list
    object_name: str
    cond_view: int
    target_views: tuple[int, ...]
    group: int = 0  # the task's number among its object's tasks (several only for a scene's own view splits)

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["target_views"] = list(self.target_views)
        return out


def object_seed(seed: int, name: str) -> list[int]:
    """Seed material of one object's choices: stable across Python runs (``hash()`` is not)."""
    return [int(seed), zlib.crc32(name.encode("utf-8"))]


def choose_objects(n_objects: int, objects: int | None, seed: int) -> list[int]:
    """Indices of the evaluated objects (ascending): all, or ``objects`` of them chosen by ``seed``."""
    if objects is not None and objects < 1:
        raise ConfigError(f"--objects must be at least 1, got {objects}")
    if objects is None or objects >= n_objects:
        return list(range(n_objects))
    order = np.random.default_rng([int(seed), 0x0B1EC7]).permutation(n_objects)
    return sorted(int(i) for i in order[:objects])


def choose_views(
    num_views: int, name: str, seed: int, targets: int | None, cond_view: int | None = None
) -> tuple[int, tuple[int, ...]]:
    """``(condition view, target views)`` of one object (see the module docstring). ``cond_view`` fixes the
    condition view instead of drawing it (e.g. view 64 of SRN, as the PixelNeRF protocol does)."""
    if num_views < 2:
        raise ConfigError(f"object {name}: needs at least 2 views to evaluate, has {num_views}")
    if targets is not None and targets < 1:
        raise ConfigError(f"--targets-per-object must be at least 1, got {targets}")
    if cond_view is not None and not 0 <= cond_view < num_views:
        raise ConfigError(f"--cond-view {cond_view}: object {name} has views 0..{num_views - 1}")
    rng = np.random.default_rng(object_seed(seed, name))
    drawn = int(rng.integers(num_views))  # drawn even when fixed, so the target draw below stays the same
    cond = drawn if cond_view is None else int(cond_view)
    others = np.array([v for v in range(num_views) if v != cond])
    k = len(others) if targets is None else min(targets, len(others))
    chosen = rng.permutation(others)[:k]
    return cond, tuple(sorted(int(v) for v in chosen))


def view_split_tasks(
    object_index: int,
    name: str,
    pools: tuple[np.ndarray, np.ndarray],
    seed: int,
    targets: int | None,
    cond_view: int | None = None,
) -> list[EvalTask]:
    """The tasks of one scene split by its own views: ``pools`` = (train views, the split's views); see the
    module docstring."""
    conds, held_out = (np.asarray(p, dtype=np.int64) for p in pools)
    if targets is not None and targets < 1:
        raise ConfigError(f"--targets-per-object must be at least 1, got {targets}")
    if cond_view is not None and cond_view not in conds:
        raise ConfigError(f"--cond-view {cond_view}: not a train view of scene {name} (its train views: "
                          f"{_ranges(conds)})")
    rng = np.random.default_rng(object_seed(seed, name))
    order = rng.permutation(held_out)
    size = len(order) if targets is None else targets
    tasks = []
    for group, lo in enumerate(range(0, len(order), size)):
        drawn = int(conds[rng.integers(len(conds))])
        cond = drawn if cond_view is None else int(cond_view)
        tasks.append(EvalTask(object_index, name, cond, tuple(sorted(int(v) for v in order[lo : lo + size])), group))
    return tasks


def _ranges(views: np.ndarray) -> str:
    """``0-99, 120`` for a sorted list of view numbers."""
    parts, start = [], None
    values = [int(v) for v in views]
    for i, v in enumerate(values):
        start = v if start is None else start
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(str(v) if start == v else f"{start}-{v}")
            start = None
    return ", ".join(parts)


def make_protocol(
    scenes: Sequence[Scene],
    objects: int | None = None,
    targets_per_object: int | None = 8,
    seed: int = 0,
    cond_view: int | None = None,
    pools: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
) -> list[EvalTask]:
    """The tasks of a run over ``scenes`` (the split's objects, in split order). ``pools``: per scene, its
    (condition views, target views) when the scenes are split by their own views."""
    if not scenes:
        raise ConfigError("no objects to evaluate")
    chosen = choose_objects(len(scenes), objects, seed)
    if pools is not None:
        return [task for i in chosen
                for task in view_split_tasks(i, scenes[i].name, pools[i], seed, targets_per_object, cond_view)]
    return [
        EvalTask(i, scenes[i].name,
                 *choose_views(scenes[i].num_views, scenes[i].name, seed, targets_per_object, cond_view))
        for i in chosen
    ]


def orbit_views(scene: Scene, cond_view: int, max_views: int, among: Sequence[int] | None = None) -> list[int]:
    """The object's views other than ``cond_view`` (only those ``among``, when given), ordered by azimuth from
    the condition view's, evenly thinned to at most ``max_views`` (see the module docstring)."""
    if max_views < 2:
        raise ConfigError(f"an orbit for the consistency score needs at least 2 views, got {max_views}")
    # Azimuth about the capture's own centre and up: a reconstruction puts the object anywhere, any axis up.
    poses = scene.poses.double()
    azimuth, _, _ = cameras.pose_to_spherical(cameras.object_frame_transform(cameras.capture_frame(poses)) @ poses)
    relative = (azimuth - azimuth[cond_view]) % 360.0
    candidates = range(scene.num_views) if among is None else [int(v) for v in among]
    others = [v for v in candidates if v != cond_view]
    ordered = sorted(others, key=lambda v: (float(relative[v]), v))
    if len(ordered) <= max_views:
        return ordered
    picks = torch.linspace(0, len(ordered) - 1, max_views).round().long().tolist()
    return [ordered[i] for i in picks]


__all__ = ["EvalTask", "choose_objects", "choose_views", "make_protocol", "object_seed", "orbit_views",
           "view_split_tasks"]
