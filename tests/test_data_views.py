"""MultiViewDataset: item contract, reproducible pairs, object-level splits, workers, cache, statistics."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from novelview import cameras
from novelview.data.formats import load_view, open_dataset
from novelview.data.synthetic import SynthConfig, generate
from novelview.data.views import MultiViewDataset, split_objects
from novelview.errors import ConfigError

SIZE = 16


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("views") / "ds"
    generate(out, SynthConfig(objects=6, views=5, size=SIZE, seed=11), progress=False)
    return out


def test_item_contract(data_dir: Path) -> None:
    ds = MultiViewDataset(data_dir, size=SIZE, split="all")
    assert len(ds) == 6 * 5
    item = ds[7]
    for key in ("cond_image", "target_image"):
        assert item[key].shape == (3, SIZE, SIZE) and item[key].dtype == torch.float32
        assert item[key].min() >= -1 and item[key].max() <= 1
    for key in ("cond_pose", "target_pose"):
        assert item[key].shape == (4, 4)
        cameras.validate_pose(item[key])
    for key in ("cond_K", "target_K"):
        assert item[key].shape == (3, 3)
    assert isinstance(item["object_index"], int)
    assert item["cond_view"] != item["target_view"]
    # The item is what load_view gives for those views.
    scene = ds.scenes[item["object_index"]]
    img, k = load_view(scene, item["target_view"], SIZE)
    assert torch.equal(img, item["target_image"]) and torch.equal(k, item["target_K"])
    assert torch.equal(scene.poses[item["cond_view"]], item["cond_pose"])


def test_pairs_reproducible_per_seed_and_epoch(data_dir: Path) -> None:
    a = MultiViewDataset(data_dir, size=SIZE, split="all", seed=3)
    b = MultiViewDataset(data_dir, size=SIZE, split="all", seed=3, cache=False)
    pairs = [a.pair(i) for i in range(len(a))]
    assert pairs == [b.pair(i) for i in range(len(b))]
    assert all(c != t for _, c, t in pairs)
    # Every view is the condition exactly once per epoch.
    assert sorted((o, c) for o, c, _ in pairs) == [(o, v) for o in range(6) for v in range(5)]
    a.set_epoch(1)
    epoch1 = [a.pair(i) for i in range(len(a))]
    assert epoch1 != pairs
    assert epoch1 == [b.pair(i, epoch=1) for i in range(len(b))]
    # Resume: a fresh dataset set to the same epoch gives the same items, in any access order.
    c = MultiViewDataset(data_dir, size=SIZE, split="all", seed=3)
    c.set_epoch(1)
    for i in reversed(range(len(c))):
        assert c.pair(i) == epoch1[i]
    other_seed = MultiViewDataset(data_dir, size=SIZE, split="all", seed=4)
    assert [other_seed.pair(i) for i in range(len(a))] != pairs


def test_object_level_split(data_dir: Path) -> None:
    splits = {s: MultiViewDataset(data_dir, size=SIZE, split=s) for s in ("train", "val", "test")}
    names = {s: {sc.name for sc in ds.scenes} for s, ds in splits.items()}
    assert names["train"] and names["val"] and names["test"]
    assert not names["train"] & names["val"] and not names["train"] & names["test"] and not names["val"] & names["test"]
    assert names["train"] | names["val"] | names["test"] == {sc.name for sc in open_dataset(data_dir)}
    # The split does not depend on the pair seed (training runs and the evaluator agree).
    assert {sc.name for sc in MultiViewDataset(data_dir, size=SIZE, split="test", seed=99).scenes} == names["test"]
    # ... nor on the order scenes come in.
    scenes = list(open_dataset(data_dir))[::-1]
    assert {sc.name for sc in MultiViewDataset(scenes, size=SIZE, split="test").scenes} == names["test"]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 10, 37, 100])
def test_split_sizes(n: int) -> None:
    s = split_objects(n)
    assert len(s["train"]) >= 1
    assert sorted(s["train"] + s["val"] + s["test"]) == list(range(n))
    if n >= 3:
        assert len(s["val"]) >= 1 and len(s["test"]) >= 1
    if n >= 30:
        assert abs(len(s["val"]) - round(0.1 * n)) <= 1 and abs(len(s["test"]) - round(0.1 * n)) <= 1
    assert split_objects(n, split_seed=0) == s
    with pytest.raises(ConfigError):
        split_objects(n, val_fraction=0.6, test_fraction=0.5)


def test_tiny_dataset_trains(tmp_path: Path) -> None:
    generate(tmp_path / "one", SynthConfig(objects=1, views=2, size=8), progress=False)
    ds = MultiViewDataset(tmp_path / "one", size=8)
    assert len(ds.scenes) == 1 and len(ds) == 2
    assert len(MultiViewDataset(tmp_path / "one", size=8, split="test")) == 0


def test_dataloader_workers_match_single_process(data_dir: Path) -> None:
    ds = MultiViewDataset(data_dir, size=SIZE, split="train", seed=5)
    ds.set_epoch(2)
    single = list(DataLoader(ds, batch_size=4, num_workers=0))
    multi = list(DataLoader(ds, batch_size=4, num_workers=2))
    assert len(single) == len(multi)
    for a, b in zip(single, multi):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_preload_decodes_every_view_so_items_never_read_the_disk(data_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    ds = MultiViewDataset(copy, size=SIZE, split="all", preload=True)
    for png in copy.glob("*/rgb/*.png"):
        png.write_bytes(b"")  # nothing left on disk to decode
    fresh = MultiViewDataset(data_dir, size=SIZE, split="all")
    for i in range(len(ds)):
        item, expected = ds[i], fresh[i]
        for key in ("cond_image", "target_image", "cond_pose", "target_pose", "cond_K", "target_K"):
            assert torch.equal(item[key], expected[key]), (i, key)
    item = ds[0]
    item["cond_image"].add_(5)  # callers may modify what they get without corrupting the cache
    assert ds[0]["cond_image"].max() <= 1


def test_camera_stats(data_dir: Path) -> None:
    stats = MultiViewDataset(data_dir, size=SIZE, split="all").camera_stats()
    assert stats["radius"] == pytest.approx(2.5, abs=1e-5)
    assert stats["fov_deg"] == pytest.approx(40.0, abs=1e-3)
    assert -10 <= stats["elevation_min"] <= stats["elevation_mean"] <= stats["elevation_max"] <= 45
    assert stats["views"] == 30
