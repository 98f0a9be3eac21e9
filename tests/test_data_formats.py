"""Procedural dataset, readers (SRN, Blender, rings, MVC), format detection, bad input and the data CLI."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from novelview import cameras
from novelview.cli import app
from novelview.data import synthetic
from novelview.data.formats import (
    detect_format,
    load_view,
    load_view_mask,
    open_dataset,
)
from novelview.data.formats.blender import write_blender
from novelview.data.formats.pairs import ImpliedCameras
from novelview.data.formats.manifest import MANIFEST_DIR
from novelview.data.formats.srn import read_depth
from novelview.data.synthetic import SynthConfig, generate
from novelview.data.viewpoints import CameraDistribution
from novelview.errors import ConfigError, DataError, PoseError

from conftest import SYNTH_SIZE

SIZE = SYNTH_SIZE  # of the shared synth_dir fixture (conftest.py)


def tree_bytes(root: Path) -> dict[str, str]:
    """Hashes of the dataset's files; the manifest records modification times, so it is left out."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and MANIFEST_DIR not in p.parts}


# ---------------------------------------------------------------------------------------------------------
# data synth
# ---------------------------------------------------------------------------------------------------------


def test_synth_layout(synth_dir: Path) -> None:
    objects = sorted(p.name for p in synth_dir.iterdir() if p.is_dir())
    assert objects == [MANIFEST_DIR, "obj_00000", "obj_00001", "obj_00002"]
    assert (synth_dir / MANIFEST_DIR / "manifest.parquet").is_file()
    obj = synth_dir / "obj_00000"
    lines = (obj / "intrinsics.txt").read_text().splitlines()
    f, cx, cy, zero = (float(x) for x in lines[0].split())
    assert f == pytest.approx(cameras.focal_from_fov(40.0, SIZE).item(), rel=1e-6)
    assert (cx, cy, zero) == (SIZE / 2, SIZE / 2, 0.0)
    assert lines[1].split() == ["0.", "0.", "0."] and lines[2].strip() == "1." and lines[3].split() == [str(SIZE)] * 2
    pose_text = (obj / "pose" / "000000.txt").read_text()
    assert len(pose_text.strip().splitlines()) == 1 and len(pose_text.split()) == 16
    pose = torch.tensor([float(x) for x in pose_text.split()], dtype=torch.float64).reshape(4, 4)
    cameras.validate_pose(pose)
    _, el, r = cameras.pose_to_spherical(pose)
    assert r.item() == pytest.approx(2.5) and -10 <= el.item() <= 45

    rgb = np.asarray(Image.open(obj / "rgb" / "000000.png"))
    mask = np.asarray(Image.open(obj / "mask" / "000000.png"))
    depth_img = Image.open(obj / "depth" / "000000.png")
    depth = np.asarray(depth_img)
    assert rgb.shape == (SIZE, SIZE, 3) and rgb.dtype == np.uint8
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    assert depth.dtype == np.uint16
    assert ((depth > 0) == (mask > 0)).all()
    assert (rgb[mask == 0] == 255).all()  # white background
    assert 0 < (mask > 0).mean() < 0.9
    z = depth[depth > 0] / 1000.0
    assert z.min() > 2.5 - 1.0 and z.max() < 2.5 + 1.0  # object inside the unit sphere, camera at 2.5

    info = json.loads((synth_dir / "dataset.json").read_text())
    assert info["cameras"]["radius"] == 2.5 and info["cameras"]["fov_deg"] == 40.0
    assert info["cameras"]["elevation_range"] == [-10.0, 45.0]
    assert info["depth"]["scale"] == 1000.0 and info["seed"] == 3


def test_synth_is_deterministic(synth_dir: Path, tmp_path: Path) -> None:
    again = generate(tmp_path / "again", SynthConfig(objects=3, views=6, size=SIZE, seed=3), progress=False)
    assert tree_bytes(again) == tree_bytes(synth_dir)
    other = generate(tmp_path / "other", SynthConfig(objects=1, views=6, size=SIZE, seed=4), progress=False)
    assert tree_bytes(other)["obj_00000/rgb/000000.png"] != tree_bytes(synth_dir)["obj_00000/rgb/000000.png"]


def test_synth_workers_write_the_same_bytes(synth_dir: Path, tmp_path: Path) -> None:
    """Spawned rendering processes change the speed, never the dataset."""
    parallel = generate(tmp_path / "par", SynthConfig(objects=3, views=6, size=SIZE, seed=3), progress=False, workers=2)
    assert tree_bytes(parallel) == tree_bytes(synth_dir)
    with pytest.raises(ConfigError, match="--workers"):
        generate(tmp_path / "bad", SynthConfig(objects=1, views=2, size=8), progress=False, workers=0)
    for radius in (float("nan"), float("inf")):  # would write a dataset of NaN poses
        with pytest.raises(ConfigError, match="radius"):
            CameraDistribution(radius=radius)
    assert not (tmp_path / "bad").exists()


def test_synth_object_does_not_depend_on_object_count(synth_dir: Path, tmp_path: Path) -> None:
    one = generate(tmp_path / "one", SynthConfig(objects=1, views=6, size=SIZE, seed=3), progress=False)
    a, b = tree_bytes(one), tree_bytes(synth_dir)
    assert all(a[k] == b[k] for k in a if k.startswith("obj_00000/"))


def test_synth_interrupted_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = synthetic.write_object_views
    calls = []

    def flaky(folder: Path, views: synthetic.ObjectViews) -> int:
        calls.append(folder)
        if len(calls) == 2:
            raise RuntimeError("disk on fire")
        return real(folder, views)

    monkeypatch.setattr(synthetic, "write_object_views", flaky)
    out = tmp_path / "ds"
    with pytest.raises(RuntimeError, match="disk on fire"):
        generate(out, SynthConfig(objects=3, views=2, size=8), progress=False)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # the temporary sibling is gone too


def test_synth_refuses_non_empty_output_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    cfg = SynthConfig(objects=1, views=2, size=8)
    with pytest.raises(DataError, match="not empty.*--overwrite"):
        generate(out, cfg, progress=False)
    assert (out / "keep.txt").exists()
    # --overwrite replaces datasets only: a folder of other files is never deleted.
    with pytest.raises(DataError, match="not a dataset written by novelview"):
        generate(out, cfg, overwrite=True, progress=False)
    assert (out / "keep.txt").read_text() == "precious"
    (out / "keep.txt").unlink()
    generate(out, cfg, progress=False)
    (out / "obj_00000" / "stale.txt").write_text("from the first run")
    generate(out, cfg, overwrite=True, progress=False)
    assert not (out / "obj_00000" / "stale.txt").exists() and (out / "dataset.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_synth_faces_have_distinct_colours() -> None:
    """Boxes are coloured per face so an object's orientation is visible."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        obj = synthetic.random_object(rng)
        colours = np.concatenate([p.colours for p in obj.primitives])
        dists = np.linalg.norm(colours[:, None] - colours[None], axis=-1) + np.eye(len(colours))
        assert dists.min() > 0.05
        assert 1 <= len(obj.primitives) <= 4
        for p in obj.primitives:  # fits in the unit sphere
            assert np.linalg.norm(p.centre) + p.bound() <= 1.0 + 1e-9


# ---------------------------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------------------------


def test_srn_reader(synth_dir: Path) -> None:
    assert detect_format(synth_dir) == "srn"
    scenes = open_dataset(synth_dir)
    assert [s.name for s in scenes] == ["obj_00000", "obj_00001", "obj_00002"]
    s = scenes[0]
    assert s.num_views == 6 and s.image_size == (SIZE, SIZE) and s.format == "srn"
    assert s.poses.dtype == torch.float32 and s.poses.shape == (6, 4, 4)
    img, k = load_view(s, 2, 12)
    assert img.shape == (3, 12, 12)
    assert k[0, 0].item() == pytest.approx(cameras.focal_from_fov(40.0, 12).item(), rel=1e-5)
    assert k[0, 2].item() == pytest.approx(6.0)
    mask = load_view_mask(s, 2, 12)
    assert mask is not None and mask.shape == (1, 12, 12)
    depth = read_depth(s.depth_paths[2], s.depth_scale)
    assert depth.max() > 1.0


def test_srn_to_blender_round_trip(synth_dir: Path, tmp_path: Path) -> None:
    srn = open_dataset(synth_dir)
    out = write_blender(srn, tmp_path / "blender")
    assert detect_format(out) == "blender"
    blender = open_dataset(out)
    assert [s.name for s in blender] == [s.name for s in srn]
    for a, b in zip(srn, blender):
        assert torch.allclose(a.poses, b.poses, atol=1e-6)
        assert torch.allclose(a.intrinsics, b.intrinsics, atol=1e-5)
        assert a.image_size == b.image_size
        assert b.mask_paths is not None and b.depth_paths is not None
        for i in range(a.num_views):
            img_a, k_a = load_view(a, i, 16)
            img_b, k_b = load_view(b, i, 16)
            assert torch.equal(img_a, img_b)
            assert torch.allclose(k_a, k_b, atol=1e-5)
            assert torch.equal(load_view_mask(a, i, 16), load_view_mask(b, i, 16))
            assert torch.equal(read_depth(a.depth_paths[i]), read_depth(b.depth_paths[i], b.depth_scale))


def test_srn_four_line_pose_and_rescaled_intrinsics(synth_copy: Path) -> None:
    obj = synth_copy / "obj_00001"
    pose_file = obj / "pose" / "000003.txt"
    numbers = pose_file.read_text().split()
    pose_file.write_text("\n".join(" ".join(numbers[i : i + 4]) for i in range(0, 16, 4)) + "\n")
    # Intrinsics stated for images twice as large as those on disk: they must be halved.
    lines = (obj / "intrinsics.txt").read_text().splitlines()
    f, cx, cy, _ = (float(x) for x in lines[0].split())
    lines[0] = f"{2 * f} {2 * cx} {2 * cy} 0."
    lines[3] = f"{2 * SIZE} {2 * SIZE}"
    (obj / "intrinsics.txt").write_text("\n".join(lines) + "\n")
    scene = open_dataset(synth_copy)[1]
    assert scene.image_size == (SIZE, SIZE)
    assert scene.intrinsics[0, 0, 0].item() == pytest.approx(f, rel=1e-6)
    assert scene.intrinsics[0, 0, 2].item() == pytest.approx(cx)
    ref = torch.tensor([float(x) for x in numbers]).reshape(4, 4)
    assert torch.allclose(scene.poses[3], ref)


def _write_rgba(path: Path, w: int, h: int, colour: tuple[int, int, int]) -> None:
    arr = np.zeros((h, w, 4), np.uint8)
    arr[..., :3] = colour
    arr[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4, 3] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_blender_reader_conventions(tmp_path: Path) -> None:
    """camera_angle_x only, file paths with an extension, OpenGL poses, RGBA, non-square images, two splits."""
    root = tmp_path / "lego"
    angle = 0.6911112070083618
    frames = []
    for i in range(3):
        _write_rgba(root / "train" / f"r_{i}.png", 40, 30, (10 * i, 0, 0))
        # OpenGL camera on the +z axis looking at the origin: identity rotation (it looks down its -z).
        frames.append({"file_path": f"train/r_{i}.png", "rotation": 0.1,
                       "transform_matrix": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 3.0 + i], [0, 0, 0, 1]]})
    (root / "transforms_train.json").write_text(json.dumps({"camera_angle_x": angle, "frames": frames}))
    _write_rgba(root / "test" / "r_0.png", 40, 30, (0, 0, 200))
    (root / "transforms_test.json").write_text(json.dumps({"camera_angle_x": angle, "frames": [
        {"file_path": "./test/r_0", "transform_matrix": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 4], [0, 0, 0, 1]]}]}))
    assert detect_format(tmp_path) == "blender"
    (scene,) = open_dataset(tmp_path)
    assert scene.name == "lego" and scene.num_views == 4 and scene.image_size == (30, 40)
    assert scene.mask_paths is not None
    # OpenCV: forward (+z column) points to -z world, image down (+y column) points to -y world.
    assert torch.allclose(scene.poses[0, :3, 2], torch.tensor([0.0, 0.0, -1.0]))
    assert torch.allclose(scene.poses[0, :3, 1], torch.tensor([0.0, -1.0, 0.0]))
    fx = 0.5 * 40 / math.tan(0.5 * angle)
    assert scene.intrinsics[0, 0, 0].item() == pytest.approx(fx, rel=1e-5)
    img, k = load_view(scene, 0, 15)
    assert img.shape == (3, 15, 15)
    assert k[0, 2].item() == pytest.approx((20 - 5) * 0.5)  # centre crop removed 5 columns, then halved
    assert k[1, 2].item() == pytest.approx(15 * 0.5)
    assert k[0, 0].item() == pytest.approx(fx * 0.5, rel=1e-5)
    assert torch.allclose(img[:, 0, 0], torch.ones(3))  # transparent corner composited on white
    # The origin projects to the image centre for this camera.
    uv, depth = cameras.project(torch.zeros(1, 3), scene.poses[0], k)
    assert torch.allclose(uv, torch.tensor([[7.5, 7.5]]), atol=1e-4) and depth.item() == pytest.approx(3.0)


def _ring(root: Path, n: int = 6) -> None:
    for i in range(n):
        Image.new("RGB", (20, 20), (40 * i, 0, 0)).save(root / f"{i:03d}.png")


def test_ring_reader(tmp_path: Path) -> None:
    for name in ("chair", "mug"):
        (tmp_path / name).mkdir()
        _ring(tmp_path / name)
    (tmp_path / "mug" / "cameras.json").write_text(json.dumps({"elevation_deg": 20.0}))
    assert detect_format(tmp_path) == "ring"
    chair, mug = open_dataset(tmp_path)
    assert chair.format == "ring" and chair.num_views == 6
    az, el, r = cameras.pose_to_spherical(chair.poses.double())
    assert torch.allclose(az, torch.arange(6, dtype=torch.float64) * 60, atol=1e-3)
    assert torch.allclose(el, torch.zeros(6, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(r, torch.full((6,), 2.5, dtype=torch.float64), atol=1e-5)
    assert cameras.fov_of(chair.intrinsics[0], 20).item() == pytest.approx(40.0, abs=1e-3)
    _, el_mug, _ = cameras.pose_to_spherical(mug.poses.double())
    assert torch.allclose(el_mug, torch.full((6,), 20.0, dtype=torch.float64), atol=1e-3)
    # Consecutive views: the same 60-degree relative pose all the way round (005 -> 000 included).
    rel = cameras.relative_pose(chair.poses[0], chair.poses[1])
    for i in range(6):
        assert torch.allclose(cameras.relative_pose(chair.poses[i], chair.poses[(i + 1) % 6]), rel, atol=1e-5)
    # Reader arguments are the defaults that cameras.json files override.
    flipped = open_dataset(tmp_path / "chair", azimuth_step_deg=-60.0)[0]
    az2, _, _ = cameras.pose_to_spherical(flipped.poses.double())
    assert az2[1].item() == pytest.approx(300.0, abs=1e-3)


def test_mvc_reader(tmp_path: Path) -> None:
    (tmp_path / "item1").mkdir()
    for n in (1, 2, 3, 4):
        Image.new("RGB", (30, 40), (n * 50, 0, 0)).save(tmp_path / "item1" / f"{n}.jpg")
    (tmp_path / "item2").mkdir()
    Image.new("RGB", (30, 40), "white").save(tmp_path / "item2" / "left.png")
    Image.new("RGB", (30, 40), "black").save(tmp_path / "item2" / "right.png")
    assert detect_format(tmp_path) == "mvc"
    a, b = open_dataset(tmp_path)
    assert [p.name for p in a.image_paths] == ["1.jpg", "3.jpg"]
    assert [p.name for p in b.image_paths] == ["left.png", "right.png"]
    assert cameras.angle_between_views(a.poses[0], a.poses[1]).item() == pytest.approx(60.0, abs=1e-3)
    assert a.image_size == (40, 30)


def test_implied_cameras_file_is_validated(tmp_path: Path) -> None:
    (tmp_path / "obj").mkdir()
    _ring(tmp_path / "obj")
    (tmp_path / "obj" / "cameras.json").write_text(json.dumps({"elevation": 10}))
    with pytest.raises(DataError, match=r"cameras.json.*unknown key"):
        open_dataset(tmp_path)
    assert ImpliedCameras().azimuth_step_deg == 60.0


# ---------------------------------------------------------------------------------------------------------
# Bad input: one error naming the culprit
# ---------------------------------------------------------------------------------------------------------


def test_detect_format_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        detect_format(tmp_path / "missing")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match="found a file"):
        detect_format(tmp_path / "file.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty") as info:
        open_dataset(tmp_path / "empty")
    assert "empty" in str(info.value)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="unrecognised dataset layout"):
        open_dataset(tmp_path / "junk")


def test_missing_pose_file(synth_copy: Path) -> None:
    (synth_copy / "obj_00001" / "pose" / "000004.txt").unlink()
    with pytest.raises(DataError) as info:
        open_dataset(synth_copy)
    assert "obj_00001/rgb/000004.png" in str(info.value) and "000004.txt" in str(info.value)


def test_orphan_pose_files(synth_copy: Path) -> None:
    (synth_copy / "obj_00002" / "rgb" / "000005.png").unlink()
    with pytest.raises(DataError, match=r"obj_00002/pose.*1 pose file\(s\) have no image.*000005.txt"):
        open_dataset(synth_copy)


@pytest.mark.parametrize(
    "content, error, words",
    [
        ("nan " + "0 " * 15, PoseError, "nan"),
        ("2 0 0 0 0 2 0 0 0 0 2 0 0 0 0 1", PoseError, "orthonormal"),
        ("-1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1", PoseError, "reflection"),
        ("1 0 0 0 0 1 0 0", DataError, "16 numbers"),
        ("1 0 0 zero", DataError, "numbers"),
    ],
    ids=["nan", "scaled", "reflected", "short", "text"],
)
def test_bad_pose_file(synth_copy: Path, content: str, error: type, words: str) -> None:
    bad = synth_copy / "obj_00000" / "pose" / "000002.txt"
    bad.write_text(content)
    with pytest.raises(error) as info:
        open_dataset(synth_copy)
    assert str(bad) in str(info.value) and words in str(info.value).lower()


def test_truncated_image(synth_copy: Path) -> None:
    bad = synth_copy / "obj_00000" / "rgb" / "000001.png"
    bad.write_bytes(bad.read_bytes()[:60])
    scenes = open_dataset(synth_copy)  # headers are cheap to check later; decoding happens on load
    with pytest.raises(DataError) as info:
        load_view(scenes[0], 1, 16)
    assert str(bad) in str(info.value)


def test_missing_intrinsics_and_empty_image_folder(synth_copy: Path) -> None:
    (synth_copy / "obj_00000" / "intrinsics.txt").write_text("")
    with pytest.raises(DataError, match=r"obj_00000/intrinsics.txt: line 1"):
        open_dataset(synth_copy)
    shutil.rmtree(synth_copy / "obj_00000")
    for p in (synth_copy / "obj_00001" / "rgb").iterdir():
        p.unlink()
    with pytest.raises(DataError, match=r"obj_00001/rgb: no images"):
        open_dataset(synth_copy)


def test_blender_bad_frames(tmp_path: Path) -> None:
    root = tmp_path / "scene"
    _write_rgba(root / "a.png", 8, 8, (1, 2, 3))
    good = {"file_path": "a", "transform_matrix": np.eye(4).tolist()}
    missing = {"file_path": "./nothere", "transform_matrix": np.eye(4).tolist()}
    (root / "transforms_train.json").write_text(json.dumps({"camera_angle_x": 0.7, "frames": [good, missing]}))
    with pytest.raises(DataError, match=r"transforms_train.json.*'./nothere' not found"):
        open_dataset(root)
    nan = {"file_path": "a", "transform_matrix": [[float("nan")] * 4] * 4}
    (root / "transforms_train.json").write_text(json.dumps({"camera_angle_x": 0.7, "frames": [good, nan]}))
    with pytest.raises(PoseError, match=r"transforms_train.json: frames\[1\] \(a\).*NaN"):
        open_dataset(root)
    (root / "transforms_train.json").write_text("{not json")
    with pytest.raises(DataError, match="transforms_train.json: not valid JSON"):
        open_dataset(root)
    (root / "transforms_train.json").write_text(json.dumps({"frames": [good, good]}))
    with pytest.raises(DataError, match="camera_angle_x"):
        open_dataset(root)


def test_single_view_object_is_refused(tmp_path: Path) -> None:
    generate(tmp_path / "ds", SynthConfig(objects=1, views=2, size=8), progress=False)
    (tmp_path / "ds" / "obj_00000" / "rgb" / "000001.png").unlink()
    (tmp_path / "ds" / "obj_00000" / "pose" / "000001.txt").unlink()
    (tmp_path / "ds" / "obj_00000" / "mask" / "000001.png").unlink()
    (tmp_path / "ds" / "obj_00000" / "depth" / "000001.png").unlink()
    with pytest.raises(DataError, match="obj_00000: only 1 usable view"):
        open_dataset(tmp_path / "ds")


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_synth_then_info(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    result = runner.invoke(app, ["data", "synth", str(out), "--objects", "2", "--views", "3", "--size", "16",
                                 "--seed", "5", "--elevation", "-5", "30", "--quiet"])
    assert result.exit_code == 0, result.output
    info = json.loads((out / "dataset.json").read_text())
    assert info["cameras"]["elevation_range"] == [-5.0, 30.0] and info["seed"] == 5
    result = runner.invoke(app, ["data", "info", str(out)])
    assert result.exit_code == 0, result.output
    for words in ("format:     srn", "objects:    2", "views:      6 (3 per object)", "resolution: 16x16",
                  "radius 2.500", "horizontal FOV 40.00 deg", "problems:   none"):
        assert words in result.output


def test_cli_info_lists_all_problems(synth_copy: Path) -> None:
    nan_pose = synth_copy / "obj_00000" / "pose" / "000002.txt"
    nan_pose.write_text("nan " * 16)
    truncated = synth_copy / "obj_00001" / "rgb" / "000003.png"
    truncated.write_bytes(truncated.read_bytes()[:70])
    (synth_copy / "obj_00002" / "pose" / "000005.txt").unlink()
    result = runner.invoke(app, ["data", "info", str(synth_copy)])
    assert result.exit_code == 1
    assert "problems:   3" in result.output, result.output
    for culprit in (str(nan_pose), str(truncated), "obj_00002/rgb/000005.png"):
        assert culprit in result.output
    assert "UNUSABLE" in result.output
    assert "objects:    3" in result.output  # the readable part is still summarised


def test_cli_user_errors_have_no_traceback(tmp_path: Path) -> None:
    """Through the real entry point: one line on stderr, exit code 2."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("x")
    proc = subprocess.run(
        [sys.executable, "-c", "from novelview.cli import main; main()", "data", "synth", str(tmp_path / "out"),
         "--objects", "1", "--views", "2", "--size", "8", "--quiet"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "not empty" in proc.stderr and str(tmp_path / "out") in proc.stderr


def test_dataset_views_ignore_exif_orientation(synth_copy: Path) -> None:
    """Calibration (COLMAP, renderers) describes the pixels as stored, so dataset views are read as stored:
    an EXIF 'rotate 90' tag must neither rotate the view nor change its intrinsics."""
    path = synth_copy / "obj_00001" / "rgb" / "000002.png"
    before_img, before_k = load_view(open_dataset(synth_copy)[1], 2, 16)
    exif = Image.Exif()
    exif[0x0112] = 6
    with Image.open(path) as img:
        img.load()
        img.save(path, exif=exif)
    with Image.open(path) as img:
        assert img.getexif().get(0x0112) == 6  # the tag really is there
    scene = open_dataset(synth_copy)[1]
    after_img, after_k = load_view(scene, 2, 16)
    assert torch.equal(after_img, before_img)
    assert torch.equal(after_k, before_k)
