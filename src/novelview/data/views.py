"""Training pairs: (condition view, target view, both cameras) of one object, from any dataset format.

**Items.** An epoch has one item per view of the split: item ``i`` uses view ``i`` (in object order) as the
condition and a different view of the same object, drawn at random, as the target. The draw depends only on
``(seed, epoch, i)`` -- a generator seeded by those three numbers -- so resuming training at any step
reproduces exactly the same pairs, whatever the DataLoader worker count or order. Call :meth:`set_epoch` at
the start of every epoch (before the DataLoader iterator is created: with ``persistent_workers=True`` workers
keep the epoch they were started with).

**Splits.** Objects, not views, are split, so validation/test objects are never seen in training. Objects are
sorted by name and permuted by ``split_seed`` (default 0, independent of ``seed`` so that training runs with
different seeds and the evaluator agree on the split). Default fractions: 10 % validation, 10 % test,
rounded, and at least one object each when there are 3 or more objects; the training split always keeps at
least one object (a dataset of 1-2 objects is all training). ``split="all"`` uses every object.

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
        self.split_indices = split_objects(len(self.all_scenes), split_seed, val_fraction, test_fraction)
        self.scenes = _take(self.all_scenes, self.split_indices[split])
        self._counts = _view_counts(self.scenes)
        short = np.flatnonzero(self._counts < 2)
        if len(short):
            scene = self.scenes[int(short[0])]
            raise DataError(f"{scene.root or scene.name}: needs at least 2 views to form a pair")
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

    def set_epoch(self, epoch: int) -> None:
        """Select which pairs this epoch uses (pairs are a function of ``(seed, epoch, index)``)."""
        self.epoch = int(epoch)

    def camera_stats(self) -> dict[str, float]:
        """Camera statistics of this split (radius, fov_deg, elevation mean/min/max, ...) for checkpoints."""
        return camera_statistics(self.scenes)

    # -- pairs ------------------------------------------------------------------------------------------

    def pair(self, index: int, epoch: int | None = None) -> tuple[int, int, int]:
        """``(object_index, cond_view, target_view)`` of item ``index`` in ``epoch`` (default: the current)."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        obj = int(np.searchsorted(self._offsets, index, side="right")) - 1
        cond = index - int(self._offsets[obj])
        n = int(self._counts[obj])
        rng = np.random.default_rng([self.seed, self.epoch if epoch is None else epoch, index])
        target = int(rng.integers(n - 1))
        target += target >= cond  # any view but the condition
        return obj, cond, target

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

    def preload(self) -> None:
        """Decode every view of the split into the cache now."""
        for obj, scene in enumerate(self.scenes):
            for v in range(scene.num_views):
                arr, k = load_view_uint8(scene, v, self.size, self.crop)
                self._cache[(obj, v)] = (arr, k)

    def verify(self, progress: bool = False) -> None:
        """Check every view of the split before it is needed; the first bad one raises :class:`DataError` naming it.

        With the cache on, every view is decoded into it (the decoding training would do anyway, moved up front);
        without it (splits too large to keep), each file's header is read and its size compared with the dataset's
        record, and the pixels are decoded on first use.
        """
        from tqdm.auto import tqdm

        views = [(obj, v) for obj, scene in enumerate(self.scenes) for v in range(scene.num_views)]
        for obj, v in tqdm(views, desc=f"check {self.split} views", unit="view", disable=not progress, leave=False):
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
                f"objects={len(self.scenes)}/{len(self.all_scenes)}, items={len(self)})")


__all__ = ["CACHE_BUDGET_BYTES", "DEFAULT_TEST_FRACTION", "DEFAULT_VAL_FRACTION", "MultiViewDataset", "split_objects"]
