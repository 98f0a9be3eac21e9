"""Dataset manifest: round trip for every format, out-of-date manifests, identical splits and pairs, CLI."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from novelview import cameras
from novelview.cli import app, main
from novelview.data.formats import (
    ManifestScenes,
    Scene,
    camera_statistics,
    manifest_status,
    open_dataset,
    write_manifest,
)
from novelview.data.formats import manifest as manifest_module
from novelview.data.formats.blender import write_blender
from novelview.data.formats.colmap import write_colmap
from novelview.data.formats.srn import format_pose
from novelview.data.synthetic import SynthConfig, generate, object_name
from novelview.data.views import MultiViewDataset

IDENTITY_GL = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 3.0], [0, 0, 0, 1]]
SCENE_FIELDS = ("name", "image_paths", "image_size", "mask_paths", "depth_paths", "depth_scale", "root", "format",
                "distortion")


def assert_same_scene(a: Scene, b: Scene) -> None:
    for field in SCENE_FIELDS:
        assert getattr(a, field) == getattr(b, field), field
    for field in ("poses", "intrinsics"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.dtype == y.dtype and torch.equal(x, y), field


# ---------------------------------------------------------------------------------------------------------
# Every format round-trips
# ---------------------------------------------------------------------------------------------------------


def _srn(root: Path, synth_dir: Path) -> dict[str, Any]:
    shutil.copytree(synth_dir, root)  # masks, depth maps and dataset.json
    return {}


def _blender(root: Path, synth_dir: Path) -> dict[str, Any]:
    write_blender(list(open_dataset(synth_dir, manifest=False)), root)  # RGBA masks, depth maps
    lensed = root / "lensed"  # frames of their own size, intrinsics and lens
    (lensed / "images").mkdir(parents=True)
    Image.new("RGB", (8, 6), "red").save(lensed / "images" / "a.png")
    Image.new("RGB", (12, 16), "blue").save(lensed / "images" / "b.png")
    frames = [{"file_path": "images/a.png", "fl_x": 10.0, "cx": 4.0, "cy": 3.0, "transform_matrix": IDENTITY_GL},
              {"file_path": "images/b.png", "fl_x": 20.0, "fl_y": 21.0, "cx": 6.0, "cy": 8.0,
               "camera_model": "OPENCV_FISHEYE", "k1": 0.05, "transform_matrix": IDENTITY_GL}]
    (lensed / "transforms.json").write_text(json.dumps({"camera_model": "OPENCV", "k1": -0.1, "frames": frames}))
    return {}


def _colmap(root: Path, synth_dir: Path) -> dict[str, Any]:
    write_colmap(list(open_dataset(synth_dir, manifest=False)), root)
    return {}


def _rings(root: Path, synth_dir: Path) -> dict[str, Any]:
    for obj in ("a", "b"):
        (root / obj).mkdir(parents=True)
        for i in (0, 1, 3):
            Image.new("RGB", (16, 12), (40 * i, 90, 0)).save(root / obj / f"{i:03d}.png")
    (root / "b" / "cameras.json").write_text(json.dumps({"radius": 3.0}))
    return {"elevation_deg": 15.0}


def _mvc(root: Path, synth_dir: Path) -> dict[str, Any]:
    for item in ("shirt", "coat"):
        (root / item).mkdir(parents=True)
        for name in ("1", "3"):
            Image.new("RGB", (10, 14), "green").save(root / item / f"{name}.jpg")
    return {}


BUILDERS: dict[str, Callable[[Path, Path], dict[str, Any]]] = {
    "srn": _srn, "blender": _blender, "colmap": _colmap, "ring": _rings, "mvc": _mvc}


@pytest.mark.parametrize("fmt", list(BUILDERS))
def test_manifest_round_trips(fmt: str, synth_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / fmt
    reader_args = BUILDERS[fmt](root, synth_dir)
    write_manifest(root, **reader_args)
    folder = open_dataset(root, manifest=False, **reader_args)
    indexed = open_dataset(root, **reader_args)
    assert isinstance(indexed, ManifestScenes) and not isinstance(folder, ManifestScenes)
    assert indexed.format == folder.format == fmt
    assert indexed.settings == folder.settings and indexed.problems == []
    assert len(indexed) == len(folder) >= 2 and indexed.num_views == folder.num_views
    for a, b in zip(folder, indexed):
        assert_same_scene(a, b)
    assert_same_scene(indexed[-1], folder[-1])
    assert [s.name for s in indexed[1:]] == [s.name for s in folder[1:]]
    assert camera_statistics(indexed) == camera_statistics(folder)
    if reader_args:  # a manifest made with other reader options describes another reading of the folder
        assert not isinstance(open_dataset(root), ManifestScenes)


def test_lensed_blender_scene_keeps_its_lenses(tmp_path: Path, synth_dir: Path) -> None:
    _blender(tmp_path / "bl", synth_dir)
    write_manifest(tmp_path / "bl")
    scenes = open_dataset(tmp_path / "bl")
    lensed = [s for s in scenes if s.name == "lensed"][0]
    assert isinstance(scenes, ManifestScenes)
    assert lensed.distortion == [cameras.Distortion(k1=-0.1), cameras.Distortion("fisheye", k1=0.05)]
    assert not torch.equal(lensed.intrinsics[0], lensed.intrinsics[1])  # stored per view


# ---------------------------------------------------------------------------------------------------------
# Out-of-date manifests
# ---------------------------------------------------------------------------------------------------------


def test_edited_object_is_detected_read_from_the_folder_and_reindexed(
    synth_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert isinstance(open_dataset(synth_copy), ManifestScenes)  # a copy keeping modification times stays current
    moved = cameras.spherical_to_pose(10.0, 20.0, 2.5)
    (synth_copy / "obj_00001" / "pose" / "000002.txt").write_text(format_pose(moved))
    with caplog.at_level(logging.WARNING, logger="novelview.data"):
        scenes = open_dataset(synth_copy)
    assert not isinstance(scenes, ManifestScenes)
    assert "object obj_00001 changed" in caplog.text and f"novelview data index {synth_copy}" in caplog.text
    assert torch.allclose(scenes[1].poses[2].double(), moved.double(), atol=1e-6)
    current, description = manifest_status(synth_copy)
    assert current is False and "obj_00001" in description
    write_manifest(synth_copy)
    fresh = open_dataset(synth_copy)
    assert isinstance(fresh, ManifestScenes) and torch.equal(fresh[1].poses, scenes[1].poses)


@pytest.mark.parametrize("change, words", [
    ("add", "added, removed or renamed"),
    ("remove", "added, removed or renamed"),
    ("settings", "dataset.json changed"),
    ("corrupt", "unreadable"),
])
def test_changes_at_the_top_are_seen_without_reading_objects(
    synth_copy: Path, change: str, words: str, caplog: pytest.LogCaptureFixture
) -> None:
    if change == "add":
        shutil.copytree(synth_copy / "obj_00000", synth_copy / "obj_00003")
    elif change == "remove":
        shutil.rmtree(synth_copy / "obj_00002")
    elif change == "settings":  # same size, new time
        settings = synth_copy / "dataset.json"
        settings.write_text(settings.read_text().replace('"seed": 3', '"seed": 4'))
    else:
        manifest = synth_copy / ".novelview" / "manifest.parquet"
        manifest.write_bytes(manifest.read_bytes()[:100])
    current, description = manifest_status(synth_copy, verify="top")
    assert current is False and words in description
    with caplog.at_level(logging.WARNING, logger="novelview.data"):
        scenes = open_dataset(synth_copy)
    assert not isinstance(scenes, ManifestScenes) and words in caplog.text
    assert len(scenes) == {"add": 4, "remove": 2}.get(change, 3)


def test_large_datasets_check_only_the_top_of_the_folder(synth_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above FULL_CHECK_VIEWS an edit inside an object folder is trusted on open (checking every file would cost
    seconds per million files at every start) and found by the full check of `data index --check`."""
    monkeypatch.setattr(manifest_module, "FULL_CHECK_VIEWS", 5)
    pose = synth_copy / "obj_00000" / "pose" / "000001.txt"
    pose.write_text(format_pose(cameras.spherical_to_pose(30.0, 5.0, 2.5)))
    assert isinstance(open_dataset(synth_copy), ManifestScenes)
    assert manifest_status(synth_copy, verify="full")[0] is False


def test_nothing_is_written_when_indexing_fails(synth_copy: Path) -> None:
    shutil.rmtree(synth_copy / ".novelview")
    (synth_copy / "obj_00001" / "pose" / "000003.txt").write_text("nan " * 16)
    with pytest.raises(Exception, match="000003.txt"):
        write_manifest(synth_copy)
    assert not (synth_copy / ".novelview").exists()


# ---------------------------------------------------------------------------------------------------------
# Splits and pairs
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def named(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Objects whose folder-reader order (natural) differs from their sorted names."""
    root = tmp_path_factory.mktemp("named") / "ds"
    names = ["obj_2", "obj_10", "Obj_b", "obj_é", "obj_1", "obj_01", "z", "a", "obj_3", "obj_20", "é", "B"]
    generate(root, SynthConfig(objects=len(names), views=3, size=8, seed=2), progress=False, manifest=False)
    for i, name in enumerate(names):
        (root / object_name(i)).rename(root / name)
    write_manifest(root)
    return root


@pytest.mark.parametrize("split", ["train", "val", "test", "all"])
def test_manifest_and_folder_give_the_same_splits_and_pairs(named: Path, split: str) -> None:
    folder = MultiViewDataset(named, size=8, split=split, seed=4, manifest=False)
    indexed = MultiViewDataset(named, size=8, split=split, seed=4)
    assert isinstance(indexed.scenes, ManifestScenes) and not isinstance(folder.scenes, ManifestScenes)
    assert indexed.split_indices == folder.split_indices and len(indexed) == len(folder) > 0
    assert [s.name for s in indexed.all_scenes] == [s.name for s in folder.all_scenes]
    assert [s.name for s in indexed.scenes] == [s.name for s in folder.scenes]
    for epoch in (0, 1):
        assert [indexed.pair(i, epoch) for i in range(len(indexed))] == [folder.pair(i, epoch) for i in range(len(folder))]
    assert indexed.camera_stats() == folder.camera_stats()
    a = next(iter(DataLoader(folder, batch_size=len(folder))))
    b = next(iter(DataLoader(indexed, batch_size=len(indexed))))
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_index_check_and_synth_without_manifest(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "ds"
    result = runner.invoke(app, ["data", "synth", str(out), "--objects", "2", "--views", "2", "--size", "8",
                                 "--quiet", "--no-manifest"])
    assert result.exit_code == 0, result.output
    assert not (out / ".novelview").exists()
    result = runner.invoke(app, ["data", "index", str(out), "--check"])
    assert result.exit_code == 1 and "manifest: none" in result.output
    result = runner.invoke(app, ["data", "index", str(out)])
    assert result.exit_code == 0 and "indexed 2 objects, 4 views (srn)" in result.output, result.output
    result = runner.invoke(app, ["data", "index", str(out), "--check"])
    assert result.exit_code == 0 and "manifest: current (2 objects, 4 views" in result.output
    result = runner.invoke(app, ["data", "info", str(out), "--quick"])
    assert "manifest:   current" in result.output
    with pytest.raises(SystemExit) as exit_:
        main(["data", "index", str(tmp_path / "missing")])
    assert exit_.value.code == 2 and "error: " in capsys.readouterr().err
