"""Training pairs: (condition view, target view, both cameras) of one object, from any dataset format.

**Items.** An epoch has one item per view of the split: item ``i`` uses view ``i`` (in object order) as the
condition and a different view of the same object, drawn at random, as the target. The draw depends only on
``(seed, epoch, i)`` -- a generator seeded by those three numbers -- so resuming training at any step
reproduces exactly the same pairs, whatever the DataLoader worker count or order. Call :meth:`set_epoch` at
the start of every epoch (before the DataLoader iterator is created: with ``persistent_workers=True`` workers
keep the epoch they were started with).

**Splits.** Two schemes (``split_by``; ``"auto"`` picks one, :func:`split_scheme`):

* ``"objects"`` (multi-object datasets): objects, not views, are split, so validation/test objects are never
  seen in training. Objects are sorted by name and permuted by ``split_seed`` (default 0, independent of
  ``seed`` so that training runs with different seeds and the evaluator agree on the split). Default fractions:
  10 % validation, 10 % test, rounded, and at least one object each when there are 3 or more objects; the
  training split always keeps at least one object (a dataset of 1-2 objects is all training).
* ``"views"`` (a single captured scene whose files name its splits: Blender ``transforms_{train,val,test}.json``,
  nerfstudio ``*_filenames``, COLMAP ``train.txt``/``val.txt``/``test.txt``; see ``Scene.view_splits``): the
  train split pairs train views with each other; the val and test splits pair each of their views, as the
  target, with a condition drawn from the train views, so a held-out view is never a condition nor trained on.
  ``"auto"`` chooses it for a one-scene dataset whose files name splits; ``split_by="views"`` applies it to
  every scene of a dataset.

``split="all"`` uses every object and every view.

**Cache.** Decoded, squared and resized images are kept in memory as uint8: decoding a PNG on every step
would cost more than a training step of a tiny model. By default (``cache=None``) the cache is on when the
split's views fit in :data:`CACHE_BUDGET_BYTES` at the training size, and off for larger datasets, which would
otherwise fill the memory as training visits them. ``preload=True`` decodes everything up front (do it before
starting DataLoader workers so that they share the memory).

**Scale.** Opened from a manifest (:mod:`novelview.data.formats.manifest`), the scenes stay columns of arrays
and each is built when an item needs it; the name order, the split, the item offsets and the camera statistics
are computed on those arrays, so a million objects are ready in seconds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset

from novelview.data.formats import ManifestScenes, Scene, camera_statistics, load_view_uint8, open_dataset
from novelview.errors import ConfigError, DataError
from novelview.images import Crop, uint8_to_tensor

SPLITS = ("train", "val", "test", "all")
SPLIT_SCHEMES = ("auto", "objects", "views")
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_TEST_FRACTION = 0.1
#: The default cache is on while a split's decoded views take at most this much memory.
CACHE_BUDGET_BYTES = 2 * 2**30


def split_objects(
    n: int,
    split_seed: int = 0,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> dict[str, list[int]]:
    """Indices (into the name-sorted object list) of each split; see the module docstring for the rules."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(f"split fractions must be in [0, 1) and sum below 1, got val={val_fraction}, "
                          f"test={test_fraction}")
    n_val = int(round(n * val_fraction))
    n_test = int(round(n * test_fraction))
    if n >= 3:
        n_val = max(n_val, 1 if val_fraction > 0 else 0)
        n_test = max(n_test, 1 if test_fraction > 0 else 0)
    while n_val + n_test > max(n - 1, 0):  # keep at least one training object
        if n_test >= n_val and n_test > 0:
            n_test -= 1
        else:
            n_val -= 1
    order = np.random.default_rng([split_seed, 0x5EED]).permutation(n).tolist()
    return {
        "test": sorted(order[:n_test]),
        "val": sorted(order[n_test : n_test + n_val]),
        "train": sorted(order[n_test + n_val :]),
        "all": list(range(n)),
    }


def split_scheme(scenes: Sequence[Scene], split_by: str = "auto") -> str:
    """``"views"`` or ``"objects"``: how ``scenes`` are split (see the module docstring)."""
    if split_by not in SPLIT_SCHEMES:
        raise ConfigError(f"split_by must be one of {SPLIT_SCHEMES}, got {split_by!r}")
    if split_by == "auto":
        return "views" if len(scenes) == 1 and scenes[0].view_splits is not None else "objects"
    if split_by == "views":
        unnamed = [s.name for s in scenes if s.view_splits is None]
        if unnamed:
            raise ConfigError(f"split_by='views': scene {unnamed[0]} names no splits (Blender "
                              "transforms_{train,val,test}.json, nerfstudio *_filenames or COLMAP train.txt/test.txt)")
    return split_by


def view_pools(scene: Scene, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(condition views, target views)`` of ``scene`` in ``split`` under the ``"views"`` scheme."""
    labels = np.array(scene.view_splits or [""] * scene.num_views)
    everything = np.arange(scene.num_views)
    if split == "all":
        return everything, everything
    train = np.flatnonzero(labels == "train")
    return train, train if split == "train" else np.flatnonzero(labels == split)


def describe_view_splits(scene: Scene) -> str:
    """``"100 train, 100 val, 200 test"`` (and the views in no split) of a scene whose files name splits."""
    labels = scene.view_splits or []
    parts = [f"{labels.count(s)} {s}" for s in ("train", "val", "test")]
    if "" in labels:
        parts.append(f"{labels.count('')} in no split")
    return ", ".join(parts)


def _by_name(scenes: Sequence[Scene]) -> Sequence[Scene]:
    if isinstance(scenes, ManifestScenes):
        return scenes.subset(scenes.name_order())
    return sorted(scenes, key=lambda s: s.name)


def _take(scenes: Sequence[Scene], indices: list[int]) -> Sequence[Scene]:
    if isinstance(scenes, ManifestScenes):
        return scenes.subset(indices)
    return [scenes[i] for i in indices]


def _view_counts(scenes: Sequence[Scene]) -> np.ndarray:
    if isinstance(scenes, ManifestScenes):
        return scenes.view_counts()
    return np.array([s.num_views for s in scenes], dtype=np.int64)


class MultiViewDataset(Dataset):
    """Pairs of views of one object with their cameras (see the module docstring and docs/architecture.md).

    ``path`` is a dataset folder in any supported format (read through its manifest when it has a current one
    and ``manifest`` is true), or already-read scenes (what ``open_dataset`` returns, or a list).
    """

    def __init__(
        self,
        path: str | Path | Sequence[Scene],
        size: int,
        split: str = "train",
        seed: int = 0,
        val_fraction: float = DEFAULT_VAL_FRACTION,
        test_fraction: float = DEFAULT_TEST_FRACTION,
        split_seed: int = 0,
        format: str = "auto",
        crop: Crop = "center",
        cache: bool | None = None,
        preload: bool = False,
        manifest: bool = True,
        split_by: str = "auto",
        **reader_args: Any,
    ) -> None:
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ConfigError(f"image size must be a positive integer, got {size!r}")
        size = int(size)
        if crop not in ("center", "pad"):
            raise ConfigError(f"crop must be 'center' or 'pad', got {crop!r}")
        from_folder = isinstance(path, (str, os.PathLike))
        scenes = open_dataset(path, format=format, manifest=manifest, **reader_args) if from_folder else path
        if not len(scenes):
            where = path if from_folder else getattr(scenes, "root", None) or "the scenes given"
            raise DataError(f"{where}: the dataset has no objects")
        self.source = path if from_folder else None
        self.all_scenes = _by_name(scenes)
        self.split = split
        #: ``"objects"`` or ``"views"`` (see the module docstring).
        self.split_by = split_scheme(self.all_scenes, split_by)
        # Per object of the split: (condition views, target views), or None under the objects scheme (all views).
        self._pools: list[tuple[np.ndarray, np.ndarray]] | None = None
        if self.split_by == "objects":
            self.split_indices = split_objects(len(self.all_scenes), split_seed, val_fraction, test_fraction)
            self.scenes = _take(self.all_scenes, self.split_indices[split])
            self._counts = _view_counts(self.scenes)
        else:
            pools = [view_pools(scene, split) for scene in self.all_scenes]
            self.split_indices = {name: [i for i, scene in enumerate(self.all_scenes)
                                         if len(view_pools(scene, name)[1])] for name in SPLITS}
            self.scenes = _take(self.all_scenes, self.split_indices[split])
            self._pools = [pools[i] for i in self.split_indices[split]]
            self._counts = np.array([len(targets) for _, targets in self._pools], dtype=np.int64)
        self._check_pairs()
        self._offsets = np.concatenate([[0], np.cumsum(self._counts)]).astype(np.int64)
        self.size = size
        self.seed = seed
        self.crop: Crop = crop
        self.epoch = 0
        self.cache_enabled = cache if cache is not None else len(self) * size * size * 3 <= CACHE_BUDGET_BYTES
        self._cache: dict[tuple[int, int], tuple[np.ndarray, Tensor]] = {}
        if preload:
            self.preload()

    # -- sizes and bookkeeping -------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def _check_pairs(self) -> None:
        """Every object of the split can form a pair (DataError naming the first that cannot)."""
        if self._pools is None:
            short = np.flatnonzero(self._counts < 2)
            if len(short):
                scene = self.scenes[int(short[0])]
                raise DataError(f"{scene.root or scene.name}: needs at least 2 views to form a pair")
            return
        for scene, (conds, targets) in zip(self.scenes, self._pools):
            usable = np.setdiff1d(conds, targets) if self.split in ("val", "test") else conds
            if len(usable) < (1 if self.split in ("val", "test") else 2):
                raise DataError(f"{scene.root or scene.name}: its {self.split} views need train views to pair with, "
                                f"but its files name {describe_view_splits(scene)} views")

    def views_of(self, object_index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(condition views, target views)`` of object ``object_index`` of the split: every view twice under the
        objects scheme; under the views scheme the train views, and the split's own views as targets."""
        if self._pools is None:
            everything = np.arange(int(self._counts[object_index]))
            return everything, everything
        return self._pools[object_index]

    def used_views(self, object_index: int) -> np.ndarray:
        """Every view of object ``object_index`` that items of this split read."""
        conds, targets = self.views_of(object_index)
        return np.union1d(conds, targets)

    def set_epoch(self, epoch: int) -> None:
        """Select which pairs this epoch uses (pairs are a function of ``(seed, epoch, index)``)."""
        self.epoch = int(epoch)

    def camera_stats(self) -> dict[str, float]:
        """Camera statistics of the views this split reads (radius, fov_deg, elevation mean/min/max, ...) for
        checkpoints."""
        if self._pools is None:
            return camera_statistics(self.scenes)
        return camera_statistics([scene.take(self.used_views(i)) for i, scene in enumerate(self.scenes)])

    # -- pairs ------------------------------------------------------------------------------------------

    def pair(self, index: int, epoch: int | None = None) -> tuple[int, int, int]:
        """``(object_index, cond_view, target_view)`` of item ``index`` in ``epoch`` (default: the current)."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        obj = int(np.searchsorted(self._offsets, index, side="right")) - 1
        position = index - int(self._offsets[obj])
        rng = np.random.default_rng([self.seed, self.epoch if epoch is None else epoch, index])
        if self._pools is None:
            target = int(rng.integers(int(self._counts[obj]) - 1))
            target += target >= position  # any view but the condition
            return obj, position, target
        conds, targets = self._pools[obj]
        anchor = int(targets[position])
        others = conds[conds != anchor]
        partner = int(others[rng.integers(len(others))])
        # train / all: the item's view is the condition, as above; val / test: it is the held-out target.
        return (obj, partner, anchor) if self.split in ("val", "test") else (obj, anchor, partner)

    def view(self, object_index: int, view_index: int) -> tuple[Tensor, Tensor]:
        """``(image [3, S, S] in [-1, 1], K [3, 3] at S)`` of one view (cached)."""
        arr, k = self._view_uint8(object_index, view_index)
        return uint8_to_tensor(arr), k.clone()

    def _view_uint8(self, obj: int, v: int) -> tuple[np.ndarray, Tensor]:
        key = (obj, v)
        hit = self._cache.get(key)
        if hit is None:
            hit = load_view_uint8(self.scenes[obj], v, self.size, self.crop)
            if self.cache_enabled:
                self._cache[key] = hit
        return hit

    def _views(self) -> list[tuple[int, int]]:
        """``(object, view)`` of every view the split reads."""
        if self._pools is None:
            return [(obj, v) for obj, scene in enumerate(self.scenes) for v in range(scene.num_views)]
        return [(obj, int(v)) for obj in range(len(self.scenes)) for v in self.used_views(obj)]

    def preload(self) -> None:
        """Decode every view of the split into the cache now."""
        for obj, v in self._views():
            self._cache[(obj, v)] = load_view_uint8(self.scenes[obj], v, self.size, self.crop)

    def verify(self, progress: bool = False) -> None:
        """Check every view of the split before it is needed; the first bad one raises :class:`DataError` naming it.

        With the cache on, every view is decoded into it (the decoding training would do anyway, moved up front);
        without it (splits too large to keep), each file's header is read and its size compared with the dataset's
        record, and the pixels are decoded on first use.
        """
        from tqdm.auto import tqdm

        checks = self._views()
        for obj, v in tqdm(checks, desc=f"check {self.split} views", unit="view", disable=not progress, leave=False):
            if self.cache_enabled:
                self._view_uint8(obj, v)
            else:
                check_view_header(self.scenes[obj], v)

    def __getitem__(self, index: int) -> dict[str, Any]:
        obj, cond, target = self.pair(int(index))
        scene = self.scenes[obj]
        cond_image, cond_k = self.view(obj, cond)
        target_image, target_k = self.view(obj, target)
        return {
            "cond_image": cond_image,
            "target_image": target_image,
            "cond_pose": scene.poses[cond].clone(),
            "target_pose": scene.poses[target].clone(),
            "cond_K": cond_k,
            "target_K": target_k,
            "object_index": obj,
            "cond_view": cond,
            "target_view": target,
        }

    def __repr__(self) -> str:
        return (f"MultiViewDataset({self.source!s}, size={self.size}, split={self.split!r}, "
                f"split_by={self.split_by!r}, objects={len(self.scenes)}/{len(self.all_scenes)}, items={len(self)})")


__all__ = [
    "CACHE_BUDGET_BYTES",
    "DEFAULT_TEST_FRACTION",
    "DEFAULT_VAL_FRACTION",
    "SPLIT_SCHEMES",
    "MultiViewDataset",
    "describe_view_splits",
    "split_objects",
    "split_scheme",
    "view_pools",
]
