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

**Cache.** Decoded, squared and resized images are kept in memory as uint8 (``cache=True``): the datasets are
small, and decoding a PNG on every step would cost more than a training step of a tiny model. ``preload=True``
decodes everything up front (do it before starting DataLoader workers so that they share the memory).
"""

from __future__ import annotations

import bisect
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset

from novelview.data.formats import Scene, camera_statistics, load_view_uint8, open_dataset
from novelview.errors import ConfigError, DataError
from novelview.images import Crop, uint8_to_tensor

SPLITS = ("train", "val", "test", "all")
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_TEST_FRACTION = 0.1


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


class MultiViewDataset(Dataset):
    """Pairs of views of one object with their cameras (see the module docstring and docs/architecture.md).

    ``path`` is a dataset folder in any supported format, or an already-read list of scenes.
    """

    def __init__(
        self,
        path: str | Path | list[Scene],
        size: int,
        split: str = "train",
        seed: int = 0,
        val_fraction: float = DEFAULT_VAL_FRACTION,
        test_fraction: float = DEFAULT_TEST_FRACTION,
        split_seed: int = 0,
        format: str = "auto",
        crop: Crop = "center",
        cache: bool = True,
        preload: bool = False,
        **reader_args: Any,
    ) -> None:
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ConfigError(f"image size must be a positive integer, got {size!r}")
        size = int(size)
        if crop not in ("center", "pad"):
            raise ConfigError(f"crop must be 'center' or 'pad', got {crop!r}")
        scenes = list(path) if isinstance(path, list) else list(open_dataset(path, format=format, **reader_args))
        if not scenes:
            raise DataError(f"{path}: the dataset has no objects")
        self.source = path if not isinstance(path, list) else None
        self.all_scenes = sorted(scenes, key=lambda s: s.name)
        self.split = split
        self.split_indices = split_objects(len(self.all_scenes), split_seed, val_fraction, test_fraction)
        self.scenes: list[Scene] = [self.all_scenes[i] for i in self.split_indices[split]]
        for scene in self.scenes:
            if scene.num_views < 2:
                raise DataError(f"{scene.root or scene.name}: needs at least 2 views to form a pair")
        self.size = size
        self.seed = seed
        self.crop: Crop = crop
        self.epoch = 0
        self.cache_enabled = cache
        self._cache: dict[tuple[int, int], tuple[np.ndarray, Tensor]] = {}
        self._offsets = np.cumsum([0] + [s.num_views for s in self.scenes]).tolist()
        if preload:
            self.preload()

    # -- sizes and bookkeeping -------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._offsets[-1]

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
        obj = bisect.bisect_right(self._offsets, index) - 1
        cond = index - self._offsets[obj]
        n = self.scenes[obj].num_views
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


__all__ = ["DEFAULT_TEST_FRACTION", "DEFAULT_VAL_FRACTION", "MultiViewDataset", "split_objects"]
