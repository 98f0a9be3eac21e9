"""Readers on data as other tools write it: SRN intrinsics/pose variants, nerfstudio / instant-ngp transforms
(mixed image sizes, lens distortion, Windows paths, 3x4 matrices), unpadded rings, nested dataset roots."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from novelview import cameras
from novelview.data.formats import camera_statistics, detect_format, load_view, load_view_mask, open_dataset
from novelview.data.formats.blender import write_blender
from novelview.data.info import inspect_dataset
from novelview.errors import DataError, PoseError

from conftest import SYNTH_SIZE as SIZE

IDENTITY_GL = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 3.0], [0, 0, 0, 1]]


def _scene_json(root: Path, frames: list[dict], **top: object) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "transforms.json").write_text(json.dumps({**top, "frames": frames}))


# ---------------------------------------------------------------------------------------------------------
# SRN
# ---------------------------------------------------------------------------------------------------------


def test_srn_intrinsics_read_like_pixelnerf(synth_copy: Path) -> None:
    """First line f cx cy, *last* line H W: a blank line in between must not hide the size."""
    obj = synth_copy / "obj_00000"
    f, cx, cy, _ = (float(x) for x in (obj / "intrinsics.txt").read_text().split()[:4])
    (obj / "intrinsics.txt").write_text(f"{4 * f} {4 * cx} {4 * cy} 0.\n\n1.\n{4 * SIZE} {4 * SIZE}\n")
    scene = open_dataset(synth_copy)[0]
    assert scene.intrinsics[0, 0, 0].item() == pytest.approx(f, rel=1e-6)
    assert scene.intrinsics[0, 0, 2].item() == pytest.approx(cx)


def test_srn_intrinsics_as_a_3x3_matrix(synth_copy: Path) -> None:
    obj = synth_copy / "obj_00000"
    (obj / "intrinsics.txt").write_text("30.5 0 11.5\n0 31.5 12.5\n0 0 1\n")
    k = open_dataset(synth_copy)[0].intrinsics[0]
    assert torch.allclose(k, torch.tensor([[30.5, 0, 11.5], [0, 31.5, 12.5], [0, 0, 1]]))


def test_srn_world_to_camera_flag(synth_copy: Path) -> None:
    """SRN's optional 5th intrinsics line ``1``: the pose files hold world-to-camera matrices."""
    obj = synth_copy / "obj_00000"
    reference = open_dataset(synth_copy)[0].poses
    for pose_file in (obj / "pose").glob("*.txt"):
        pose = torch.tensor([float(x) for x in pose_file.read_text().split()], dtype=torch.float64).reshape(4, 4)
        pose_file.write_text(" ".join(f"{v:.9f}" for v in cameras.invert_pose(pose).flatten().tolist()))
    (obj / "intrinsics.txt").write_text((obj / "intrinsics.txt").read_text().rstrip("\n") + "\n1\n")
    assert torch.allclose(open_dataset(synth_copy)[0].poses, reference, atol=1e-5)


@pytest.mark.parametrize("text, words", [
    ("30 12 12 0.\n0. 0. 0.\n1.\n24\n", "line 4 must be the image size"),
    ("30 0.5 12\n0 30 12\n0 0 1\n", "skewed intrinsics"),
], ids=["size-line", "skew"])
def test_srn_intrinsics_errors(synth_copy: Path, text: str, words: str) -> None:
    (synth_copy / "obj_00000" / "intrinsics.txt").write_text(text)
    with pytest.raises(DataError, match=words):
        open_dataset(synth_copy)


def test_srn_pose_file_with_the_top_3x4_rows(synth_copy: Path) -> None:
    pose_file = synth_copy / "obj_00001" / "pose" / "000002.txt"
    numbers = pose_file.read_text().split()
    pose_file.write_text(" ".join(numbers[:12]) + "\n")
    scene = open_dataset(synth_copy)[1]
    assert torch.allclose(scene.poses[2], torch.tensor([float(x) for x in numbers]).reshape(4, 4))


def test_nested_dataset_root_names_the_folders_to_use(synth_dir: Path, tmp_path: Path) -> None:
    """pixelNeRF's srn_cars/ holds cars_train/, cars_test/: say which folder to point at."""
    shutil.copytree(synth_dir, tmp_path / "srn_cars" / "cars_train")
    with pytest.raises(DataError, match="one level down.*cars_train"):
        open_dataset(tmp_path / "srn_cars")
    assert detect_format(tmp_path / "srn_cars" / "cars_train") == "srn"


# ---------------------------------------------------------------------------------------------------------
# Blender / nerfstudio / instant-ngp
# ---------------------------------------------------------------------------------------------------------


def test_frames_of_different_sizes_keep_their_own_intrinsics(tmp_path: Path) -> None:
    """Landscape and portrait photos in one capture: each frame's K is its own, on load, in `data info` and
    when the scene is written back out."""
    root = tmp_path / "scene"
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (8, 6), "red").save(root / "images" / "a.png")
    Image.new("RGB", (12, 16), "blue").save(root / "images" / "b.png")
    _scene_json(root, [
        {"file_path": "images/a.png", "fl_x": 10.0, "cx": 4.0, "cy": 3.0, "transform_matrix": IDENTITY_GL},
        {"file_path": "images/b.png", "fl_x": 20.0, "fl_y": 21.0, "cx": 6.0, "cy": 8.0,
         "transform_matrix": IDENTITY_GL},
    ])
    scene = open_dataset(root)[0]
    _, k_a = load_view(scene, 0, None)  # 8x6 centre-cropped to 6x6: one column off each side
    _, k_b = load_view(scene, 1, None)  # 12x16 -> 12x12: two rows off the top
    assert torch.allclose(k_a, torch.tensor([[10.0, 0, 3.0], [0, 10.0, 3.0], [0, 0, 1]]))
    assert torch.allclose(k_b, torch.tensor([[20.0, 0, 6.0], [0, 21.0, 6.0], [0, 0, 1]]))
    assert inspect_dataset(root).problems == []
    write_blender([scene], tmp_path / "out")
    again = open_dataset(tmp_path / "out")[0]
    for i in range(2):
        assert torch.allclose(load_view(again, i, None)[1], load_view(scene, i, None)[1], atol=1e-5)


def test_alpha_is_the_mask_only_when_every_view_has_one(tmp_path: Path) -> None:
    root = tmp_path / "scene"
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (8, 8), (20, 20, 20)).save(root / "images" / "0.png")
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(root / "images" / "1.png")
    frames = [{"file_path": f"images/{i}.png", "transform_matrix": IDENTITY_GL} for i in range(2)]
    _scene_json(root, frames, camera_angle_x=0.7)
    assert open_dataset(root)[0].mask_paths is None  # not the dark RGB view's luminance
    Image.new("RGBA", (8, 8), (20, 20, 20, 255)).save(root / "images" / "0.png")
    scene = open_dataset(root)[0]
    assert scene.mask_paths is not None and load_view_mask(scene, 0, None).min().item() == 1.0


def test_paths_and_matrices_as_other_tools_write_them(tmp_path: Path) -> None:
    """colmap2nerf on Windows writes backslashes; extensionless paths may meet upper-case files; 3x4 poses."""
    root = tmp_path / "scene"
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (8, 8), "red").save(root / "images" / "0000.png")
    Image.new("RGB", (8, 8), "blue").save(root / "images" / "0001.PNG")
    Image.new("RGB", (8, 8), "green").save(root / "images" / "0002.Jpg")
    _scene_json(root, [
        {"file_path": ".\\images\\0000.png", "transform_matrix": IDENTITY_GL},
        {"file_path": "images/0001", "transform_matrix": IDENTITY_GL[:3]},
        {"file_path": "images/0002.jpg", "transform_matrix": IDENTITY_GL},
    ], camera_angle_x=0.7)
    scene = open_dataset(root)[0]
    assert [p.name for p in scene.image_paths] == ["0000.png", "0001.PNG", "0002.Jpg"]
    assert torch.allclose(scene.poses[0], scene.poses[1])


def _dotted_photo(k: torch.Tensor, size: int, ideal: torch.Tensor, lens: cameras.Distortion) -> np.ndarray:
    """White photo with a dark Gaussian dot wherever the lens images each ideal pixel position."""
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    xy = torch.stack([(ideal[:, 0] - cx) / fx, (ideal[:, 1] - cy) / fy], dim=-1)
    xy_d = cameras.distort(xy, lens)
    centres = torch.stack([xy_d[:, 0] * fx + cx, xy_d[:, 1] * fy + cy], dim=-1)
    v, u = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    dark = torch.zeros(size, size, dtype=torch.float64)
    for cu, cv in centres:
        dark = torch.maximum(dark, torch.exp(-((u - cu) ** 2 + (v - cv) ** 2) / (2 * 1.3**2)))
    return (255 * (1 - dark)).round().clamp(0, 255).to(torch.uint8)[..., None].expand(size, size, 3).numpy()


@pytest.mark.parametrize(
    "lens_keys, lens",
    [
        ({"camera_model": "OPENCV", "k1": -0.25, "k2": 0.06, "p1": 0.01, "p2": -0.006},
         cameras.Distortion("opencv", k1=-0.25, k2=0.06, p1=0.01, p2=-0.006)),
        ({"camera_model": "OPENCV_FISHEYE", "k1": 0.08, "k2": 0.01},
         cameras.Distortion("fisheye", k1=0.08, k2=0.01)),
        ({"is_fisheye": True, "k1": 0.05}, cameras.Distortion("fisheye", k1=0.05)),  # instant-ngp
    ],
    ids=["opencv", "nerfstudio-fisheye", "instant-ngp-fisheye"],
)
def test_lens_distortion_is_removed_on_load(tmp_path: Path, lens_keys: dict, lens: cameras.Distortion) -> None:
    """A point the lens moved comes back to where the pinhole camera of the file's K projects it."""
    size, f = 64, 40.0
    k = cameras.intrinsics(torch.tensor(f, dtype=torch.float64), 32.0, 32.0)
    ideal = torch.tensor([[12.0, 14.0], [50.0, 16.0], [32.0, 32.0], [20.0, 50.0], [47.5, 44.5]], dtype=torch.float64)
    root = tmp_path / "scene"
    (root / "images").mkdir(parents=True)
    Image.fromarray(_dotted_photo(k, size, ideal, lens)).save(root / "images" / "0.png")
    Image.new("RGB", (size, size), "white").save(root / "images" / "1.png")
    frames = [{"file_path": f"images/{i}.png", "transform_matrix": IDENTITY_GL} for i in range(2)]
    _scene_json(root, frames, fl_x=f, fl_y=f, cx=32.0, cy=32.0, w=size, h=size, **lens_keys)
    scene = open_dataset(root)[0]
    assert scene.distortion is not None and scene.distortion[0] == lens
    assert "lens:       2 views with lens distortion" in "\n".join(inspect_dataset(root).lines())
    img, k_loaded = load_view(scene, 0, None)
    assert torch.allclose(k_loaded.double(), k)
    dark = (1 - img.mean(0).double()) / 2
    v, u = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    for cu, cv in ideal:
        window = ((u - cu).abs() <= 4) & ((v - cv).abs() <= 4)
        w = dark * window
        centroid = torch.stack([(w * u).sum(), (w * v).sum()]) / w.sum()
        assert torch.allclose(centroid, torch.stack([cu, cv]), atol=0.3), (centroid, cu, cv)


def test_distortion_formulas_against_hand_computed_values() -> None:
    """x = 0.3, y = -0.2 (r² = 0.13), one coefficient at a time, worked out by hand from the documented models."""
    xy = torch.tensor([0.3, -0.2], dtype=torch.float64)
    cases = [
        (cameras.Distortion(k1=0.1), [0.3 * 1.013, -0.2 * 1.013]),
        (cameras.Distortion(k2=0.1), [0.3 * 1.00169, -0.2 * 1.00169]),
        (cameras.Distortion(p1=0.01), [0.3 - 0.0012, -0.2 + 0.0021]),  # 2 p1 x y;  p1 (r² + 2 y²)
        (cameras.Distortion(p2=0.01), [0.3 + 0.0031, -0.2 - 0.0012]),  # p2 (r² + 2 x²);  2 p2 x y
    ]
    theta = math.atan(math.sqrt(0.13))
    scale = theta * (1 + 0.1 * theta**2) / math.sqrt(0.13)
    cases.append((cameras.Distortion("fisheye", k1=0.1), [0.3 * scale, -0.2 * scale]))
    for lens, expected in cases:
        assert torch.allclose(cameras.distort(xy, lens), torch.tensor(expected, dtype=torch.float64), atol=1e-9), lens


def test_lens_survives_writing_the_scene_back_out(tmp_path: Path) -> None:
    root = tmp_path / "scene"
    (root / "images").mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (16, 16), (90 * i, 40, 40)).save(root / "images" / f"{i}.png")
    frames = [{"file_path": f"images/{i}.png", "transform_matrix": IDENTITY_GL} for i in range(2)]
    frames[1].update(camera_model="OPENCV_FISHEYE", k1=0.05)
    _scene_json(root, frames, camera_angle_x=0.8, camera_model="OPENCV", k1=-0.1, p2=0.002)
    scene = open_dataset(root)[0]
    write_blender([scene], tmp_path / "out")
    assert open_dataset(tmp_path / "out")[0].distortion == scene.distortion == [
        cameras.Distortion(k1=-0.1, p2=0.002), cameras.Distortion("fisheye", k1=0.05)]


def test_zero_distortion_is_a_pinhole_and_other_lenses_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "scene"
    (root / "images").mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (8, 8), "red").save(root / "images" / f"{i}.png")
    frames = [{"file_path": f"images/{i}.png", "transform_matrix": IDENTITY_GL} for i in range(2)]
    _scene_json(root, frames, camera_angle_x=0.7, camera_model="OPENCV", k1=0.0, k2=0.0, p1=0.0, p2=0.0)
    assert open_dataset(root)[0].distortion is None
    frames[1]["camera_model"] = "EQUIRECTANGULAR"
    _scene_json(root, frames, camera_angle_x=0.7)
    with pytest.raises(DataError, match=r"frames\[1\].*camera_model 'EQUIRECTANGULAR' is not supported"):
        open_dataset(root)


# ---------------------------------------------------------------------------------------------------------
# Rings
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("names, numbers", [
    (["0000", "0001", "0002", "0003"], [0, 1, 2, 3]),  # four-digit padding
    (["000", "002", "004"], [0, 2, 4]),  # gaps keep their angles
], ids=["padded-4", "gaps"])
def test_ring_names(tmp_path: Path, names: list[str], numbers: list[int]) -> None:
    obj = tmp_path / "obj"
    obj.mkdir()
    for n in names:
        Image.new("RGB", (16, 16), "red").save(obj / f"{n}.png")
    assert detect_format(tmp_path) == "ring"
    scene = open_dataset(tmp_path)[0]
    az, _, _ = cameras.pose_to_spherical(scene.poses.double())
    assert torch.allclose(az, torch.tensor([60.0 * n for n in numbers], dtype=torch.float64), atol=1e-3)
    assert math.isclose(cameras.fov_of(scene.intrinsics[0], 16).item(), 40.0, abs_tol=1e-3)


def test_unpadded_pairs_stay_mvc_items(tmp_path: Path) -> None:
    """``0.jpg + 1.jpg`` is one of the MVC namings: a dataset mixing it with ``1 + 3`` items is MVC throughout."""
    for item, names in (("a", ("0", "1")), ("b", ("1", "3"))):
        (tmp_path / item).mkdir()
        for n in names:
            Image.new("RGB", (16, 16), "red").save(tmp_path / item / f"{n}.jpg")
    assert detect_format(tmp_path) == "mvc"
    assert [s.name for s in open_dataset(tmp_path)] == ["a", "b"]


# ---------------------------------------------------------------------------------------------------------
# Camera statistics of captures in their own world frame
# ---------------------------------------------------------------------------------------------------------


def test_camera_statistics_of_an_off_centre_capture_with_y_up(synth_dir: Path, tmp_path: Path) -> None:
    """A nerfstudio capture of a real object: y up, the object 5 units from the origin, other units. Radius
    and elevation are measured about the object and against the capture's up, as for our own data."""
    ours = inspect_dataset(synth_dir, decode=False).cameras
    world = cameras.make_pose(torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=torch.float64),
                              torch.tensor([3.0, 4.0, 0.0], dtype=torch.float64))  # +z up becomes +y up
    scale = 0.4
    frames = []
    scene = open_dataset(synth_dir)[0]
    root = tmp_path / "capture"
    (root / "images").mkdir(parents=True)
    for i, path in enumerate(scene.image_paths):
        shutil.copy(path, root / "images" / f"{i:04d}.png")
        pose = world @ scene.poses[i].double()
        pose[:3, 3] *= scale
        frames.append({"file_path": f"images/{i:04d}.png",
                       "transform_matrix": cameras.opencv_to_opengl(pose).tolist()})
    k = scene.intrinsics[0]
    _scene_json(root, frames, fl_x=float(k[0, 0]), fl_y=float(k[1, 1]), cx=float(k[0, 2]), cy=float(k[1, 2]),
                w=SIZE, h=SIZE)
    report = inspect_dataset(root, decode=False)
    theirs = report.cameras
    first = camera_statistics([scene])
    assert theirs["radius"] == pytest.approx(first["radius"] * scale, rel=1e-5)
    assert theirs["elevation_mean"] == pytest.approx(first["elevation_mean"], abs=1e-3)
    assert theirs["elevation_min"] == pytest.approx(first["elevation_min"], abs=1e-3)
    assert theirs["look_at_offset"] == pytest.approx(5.0 * scale, rel=1e-4)
    assert theirs["up_tilt_deg"] == pytest.approx(90.0, abs=1e-3)
    assert ours["look_at_offset"] < 1e-5 and ours["up_tilt_deg"] < 1e-3 and ours["forward_facing"] == 0
    assert any("look at a point 2.000 from the origin" in line for line in report.lines())


# ---------------------------------------------------------------------------------------------------------
# Zero-1-to-3 / Objaverse renders: rings whose views carry .npy cameras
# ---------------------------------------------------------------------------------------------------------


def _zero123_object(folder: Path, eyes: torch.Tensor) -> torch.Tensor:
    """Views as the Zero-1-to-3 Blender script saves them: RGBA PNG + 3x4 world-to-camera in Blender camera
    axes (the camera's matrix_world inverted). Returns the OpenCV camera-to-world poses they describe."""
    folder.mkdir(parents=True)
    poses = cameras.look_at(eyes)  # OpenCV axes; Blender's track-to camera is the same camera in GL axes
    for i, pose in enumerate(poses):
        matrix_world = cameras.opencv_to_opengl(pose)
        rotation_t = matrix_world[:3, :3].T
        rt = torch.cat([rotation_t, -(rotation_t @ matrix_world[:3, 3:4])], dim=1)
        np.save(folder / f"{i:03d}.npy", rt.numpy().astype(np.float32))
        Image.new("RGBA", (16, 16), (200, 30 * i, 0, 255)).save(folder / f"{i:03d}.png")
    return poses


def test_rings_with_npy_cameras_use_them(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(5)
    eyes = torch.nn.functional.normalize(torch.randn(5, 3, generator=gen, dtype=torch.float64), dim=-1) * 1.8
    eyes[:, 2] = eyes[:, 2].abs() + 0.2  # random viewpoints above the horizon, not a 60-degree ring
    poses = _zero123_object(tmp_path / "obj", eyes)
    assert detect_format(tmp_path) == "ring"
    scene = open_dataset(tmp_path)[0]
    assert torch.allclose(scene.poses.double(), poses, atol=1e-5)
    assert cameras.fov_of(scene.intrinsics[0].double(), 16).item() == pytest.approx(49.134, abs=1e-3)
    # the world origin (where those scripts put the object) projects to the image centre in every view
    uv, _ = cameras.project(torch.zeros(1, 3, dtype=torch.float64), scene.poses.double(),
                            scene.intrinsics.double())
    assert torch.allclose(uv, torch.full_like(uv, 8.0), atol=1e-3)
    report = inspect_dataset(tmp_path, decode=False)
    assert "poses:      1 object(s) with stored cameras (.npy), 0 with implied 60-degree steps" in report.lines()


@pytest.mark.parametrize("breakage, words", [
    ("missing", "without a camera .npy (002.png)"),
    ("corrupt", "not a readable .npy"),
    ("shape", "3x4 or 4x4"),
    ("nan", "001.npy"),
])
def test_rings_with_bad_npy_cameras(tmp_path: Path, breakage: str, words: str) -> None:
    eyes = torch.tensor([[2.0, 0, 0.5], [0, 2.0, 0.5], [-2.0, 0, 0.5]], dtype=torch.float64)
    _zero123_object(tmp_path / "obj", eyes)
    target = tmp_path / "obj" / ("002.npy" if breakage == "missing" else "001.npy")
    if breakage == "missing":
        target.unlink()
    elif breakage == "corrupt":
        target.write_bytes(b"not numpy")
    elif breakage == "shape":
        np.save(target, np.zeros((2, 2)))
    else:
        np.save(target, np.full((3, 4), np.nan))
    with pytest.raises(PoseError if breakage == "nan" else DataError, match=re.escape(words)):
        open_dataset(tmp_path)


def test_nerfstudio_mask_path_is_the_mask(tmp_path: Path) -> None:
    """JPEG photos with nerfstudio ``mask_path`` masks: the masks load (undistorted with the view); a mask
    file that is missing is reported with its frame."""
    root = tmp_path / "capture"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    frames = []
    for i in range(2):
        Image.new("RGB", (12, 12), (90, 90, 90)).save(root / "images" / f"frame_{i:05d}.jpg")
        mask = np.zeros((12, 12), np.uint8)
        mask[3:9, 2 + i:8 + i] = 255
        Image.fromarray(mask).save(root / "masks" / f"frame_{i:05d}.png")
        frames.append({"file_path": f"images/frame_{i:05d}.jpg", "mask_path": f"masks/frame_{i:05d}.png",
                       "transform_matrix": IDENTITY_GL})
    _scene_json(root, frames, fl_x=10.0, fl_y=10.0, cx=6.0, cy=6.0, w=12, h=12, camera_model="OPENCV")
    scene = open_dataset(root)[0]
    for i in range(2):
        mask = load_view_mask(scene, i, None)
        assert mask is not None and mask.shape == (1, 12, 12)
        assert mask[0, 3:9, 2 + i:8 + i].min() == 1.0 and mask.sum() == 36
    Image.new("L", (6, 12), 255).save(root / "masks" / "frame_00001.png")  # not the shape of its photo
    problems = inspect_dataset(root).problems
    assert len(problems) == 1 and "frame_00001.png: mask/depth map is 6x12" in problems[0], problems
    (root / "masks" / "frame_00001.png").unlink()
    with pytest.raises(DataError, match="frame_00001"):
        open_dataset(root)


def test_the_odd_image_out_is_the_one_reported(synth_copy: Path) -> None:
    """One SRN view of another shape: `data info` names that file, not the views that match intrinsics.txt."""
    first = sorted((synth_copy / "obj_00000" / "rgb").iterdir())[0]
    Image.new("RGB", (SIZE + 4, SIZE), "white").save(first)
    problems = inspect_dataset(synth_copy).problems
    assert len(problems) == 1 and first.name in problems[0] and "intrinsics are for" in problems[0], problems


def test_masks_of_another_shape_and_datasets_from_the_future_are_reported(synth_copy: Path) -> None:
    mask = sorted((synth_copy / "obj_00001" / "mask").iterdir())[0]
    Image.new("L", (SIZE // 3, SIZE), 255).save(mask)
    problems = inspect_dataset(synth_copy).problems
    assert len(problems) == 1 and mask.name in problems[0] and "mask/depth map" in problems[0], problems
    info = json.loads((synth_copy / "dataset.json").read_text())
    (synth_copy / "dataset.json").write_text(json.dumps({**info, "format_version": 99}))
    with pytest.raises(DataError, match="newer than this novelview"):
        open_dataset(synth_copy)
