"""COLMAP sparse models (text and binary): conventions checked against COLMAP's documentation, round trips
through our writer, lenses, several reconstructions, and broken files."""

from __future__ import annotations

import math
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from novelview import cameras
from novelview.cli import app
from novelview.data.formats import detect_format, load_view, load_view_mask, open_dataset
from novelview.data.formats.colmap import write_colmap
from novelview.errors import DataError, PoseError

# The example of https://colmap.github.io/format.html (cameras.txt and images.txt), verbatim.
DOC_CAMERAS = """# Camera list with one line of data per camera:
#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]
# Number of cameras: 3
1 SIMPLE_PINHOLE 3072 2304 2559.81 1536 1152
2 PINHOLE 3072 2304 2560.56 2560.56 1536 1152
3 SIMPLE_RADIAL 3072 2304 2559.69 1536 1152 -0.0218531
"""
DOC_IMAGES = """# Image list with two lines of data per image:
#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME
#   POINTS2D[] as (X, Y, POINT3D_ID)
# Number of images: 2, mean observations per image: 2
1 0.851773 0.0165051 0.503764 -0.142941 -0.737434 1.02973 3.74354 1 P1180141.JPG
2362.39 248.498 58396 1784.7 268.254 59027 1784.7 268.254 -1
2 0.851773 0.0165051 0.503764 -0.142941 -0.737434 1.02973 3.74354 1 P1180142.JPG
1190.83 663.957 23056 1258.77 640.354 19373 1244.64 639.867 20434
"""


def _colmap_rotation(qw: float, qx: float, qy: float, qz: float) -> np.ndarray:
    """COLMAP's own formula (``QuaternionToRotationMatrix`` / read_write_model.py's ``qvec2rotmat``)."""
    return np.array([
        [1 - 2 * qy**2 - 2 * qz**2, 2 * qx * qy - 2 * qw * qz, 2 * qz * qx + 2 * qw * qy],
        [2 * qx * qy + 2 * qw * qz, 1 - 2 * qx**2 - 2 * qz**2, 2 * qy * qz - 2 * qw * qx],
        [2 * qz * qx - 2 * qw * qy, 2 * qy * qz + 2 * qw * qx, 1 - 2 * qx**2 - 2 * qy**2],
    ])


def _doc_scene(root: Path, size: tuple[int, int] = (96, 72)) -> Path:
    """The documentation's model with small stand-in photos (downscaled 32x: intrinsics must follow)."""
    (root / "sparse" / "0").mkdir(parents=True)
    (root / "images").mkdir()
    (root / "sparse" / "0" / "cameras.txt").write_text(DOC_CAMERAS)
    (root / "sparse" / "0" / "images.txt").write_text(DOC_IMAGES)
    for name, colour in (("P1180141.JPG", "red"), ("P1180142.JPG", "blue")):
        Image.new("RGB", size, colour).save(root / "images" / name, format="JPEG")
    return root


def test_the_documentation_example_reads_with_colmap_conventions(tmp_path: Path) -> None:
    root = _doc_scene(tmp_path / "scene")
    assert detect_format(root) == "colmap"
    scene = open_dataset(root)[0]
    assert [p.name for p in scene.image_paths] == ["P1180141.JPG", "P1180142.JPG"]
    assert scene.image_size == (72, 96) and scene.distortion is None
    # x_cam = R x_world + t with COLMAP's rotation formula; our pose maps camera coordinates back to the world.
    q, t = (0.851773, 0.0165051, 0.503764, -0.142941), np.array([-0.737434, 1.02973, 3.74354])
    r = _colmap_rotation(*q)
    world = np.array([0.3, -0.2, 1.5])
    cam = r @ world + t
    pose = scene.poses[0].double().numpy()
    assert np.allclose(pose[:3, :3] @ cam + pose[:3, 3], world, atol=1e-5)
    assert np.allclose(pose[:3, 3], -r.T @ t, atol=1e-5)  # the camera centre
    # SIMPLE_PINHOLE f cx cy at 3072 x 2304, images stored at 96 x 72: everything scales by 1/32.
    assert torch.allclose(scene.disk_intrinsics(0, (72, 96)).float(),
                          torch.tensor([[2559.81 / 32, 0, 48.0], [0, 2559.81 / 32, 36.0], [0, 0, 1]]), atol=1e-4)
    # Projection agrees with COLMAP's pinhole model: u = f x / z + cx (pixel centres at +0.5, as ours).
    uv, _ = cameras.project(torch.tensor(world), scene.poses[0].double(), scene.disk_intrinsics(0, (72, 96)))
    expected = 2559.81 / 32 * cam[:2] / cam[2] + np.array([48.0, 36.0])
    assert np.allclose(uv.numpy(), expected, atol=1e-3)


def test_quaternion_convention_is_hamilton_w_first() -> None:
    angle = math.radians(30)
    q = torch.tensor([math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2)], dtype=torch.float64)
    rotated = cameras.quaternion_to_rotation(q) @ torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    assert torch.allclose(rotated, torch.tensor([math.cos(angle), math.sin(angle), 0.0], dtype=torch.float64))
    assert np.allclose(cameras.quaternion_to_rotation(torch.tensor((0.851773, 0.0165051, 0.503764, -0.142941),
                                                                   dtype=torch.float64)).numpy(),
                       _colmap_rotation(0.851773, 0.0165051, 0.503764, -0.142941))


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_round_trip_through_our_writer(synth_dir: Path, tmp_path: Path, binary: bool) -> None:
    srn = open_dataset(synth_dir)
    out = write_colmap(srn, tmp_path / "colmap", binary=binary)
    ext = ".bin" if binary else ".txt"
    assert (out / "obj_00000" / "sparse" / "0" / f"cameras{ext}").is_file()
    assert detect_format(out) == "colmap"
    back = open_dataset(out)
    assert [s.name for s in back] == [s.name for s in srn]
    for a, b in zip(srn, back):
        assert b.format == "colmap" and b.image_size == a.image_size
        assert torch.allclose(a.poses, b.poses, atol=1e-5)
        assert torch.allclose(a.intrinsics, b.intrinsics, atol=1e-4)
        assert b.mask_paths is not None
        for i in range(a.num_views):
            img_a, k_a = load_view(a, i, 16)
            img_b, k_b = load_view(b, i, 16)
            assert torch.equal(img_a, img_b) and torch.allclose(k_a, k_b, atol=1e-4)
            assert torch.equal(load_view_mask(a, i, 16), load_view_mask(b, i, 16))


def test_lenses_are_read_and_written(tmp_path: Path) -> None:
    root = _doc_scene(tmp_path / "scene")
    (root / "sparse" / "0" / "cameras.txt").write_text(
        "1 OPENCV 3072 2304 2559.8 2560.1 1536 1152 -0.02 0.003 0.0004 -0.0005\n")
    scene = open_dataset(root)[0]
    lens = cameras.Distortion("opencv", k1=-0.02, k2=0.003, p1=0.0004, p2=-0.0005)
    assert scene.distortion == [lens, lens]
    again = open_dataset(write_colmap([scene], tmp_path / "out", binary=True))[0]
    assert again.distortion == [lens, lens]
    (root / "sparse" / "0" / "cameras.txt").write_text("1 RADIAL_FISHEYE 3072 2304 2559.8 1536 1152 0.01 -0.002\n")
    assert open_dataset(root)[0].distortion[0] == cameras.Distortion("fisheye", k1=0.01, k2=-0.002)
    (root / "sparse" / "0" / "cameras.txt").write_text(
        "1 FULL_OPENCV 3072 2304 2559.8 2560.1 1536 1152 -0.02 0.003 0 0 0.001 0.1 0 0\n")
    with pytest.raises(DataError, match="FULL_OPENCV with rational terms.*image_undistorter"):
        open_dataset(root)
    (root / "sparse" / "0" / "cameras.txt").write_text("1 FOV 3072 2304 2559.8 2560.1 1536 1152 0.9\n")
    with pytest.raises(DataError, match="FOV.*not supported"):
        open_dataset(root)


def test_the_largest_reconstruction_is_read_and_rings_do_not_shadow_colmap(synth_dir: Path, tmp_path: Path) -> None:
    scene = open_dataset(synth_dir)[0]
    out = write_colmap([scene], tmp_path / "w")
    root = out / scene.name
    # a second, smaller reconstruction as sparse/1: the larger one (sparse/0, 6 images) must win, in either name
    shutil.copytree(root / "sparse" / "0", root / "sparse" / "1")
    lines = (root / "sparse" / "1" / "images.txt").read_text().splitlines()
    data = [line for line in lines if not line.startswith("#")]
    (root / "sparse" / "1" / "images.txt").write_text("\n".join(data[:4]) + "\n")
    assert open_dataset(root)[0].num_views == scene.num_views
    shutil.move(root / "sparse" / "0", root / "sparse" / "2")
    assert open_dataset(root)[0].num_views == scene.num_views
    # images/0000.png, 0001.png, ... look like a ring of views; the model next to them decides
    assert detect_format(out) == "colmap" and detect_format(root) == "colmap"


def test_broken_models_are_named(tmp_path: Path) -> None:
    root = _doc_scene(tmp_path / "scene")
    model = root / "sparse" / "0"
    # images.txt without the 2-D point lines (a hand-written file): refused, not read as half the images
    lines = [line for line in DOC_IMAGES.splitlines() if not line.startswith("#")]
    (model / "images.txt").write_text("\n".join([lines[0], lines[2]]) + "\n")
    with pytest.raises(DataError, match="each image takes two lines"):
        open_dataset(root)
    # empty point lines are fine, including a missing final one
    (model / "images.txt").write_text("\n".join([lines[0], "", lines[2]]) + "\n")
    assert open_dataset(root)[0].num_views == 2
    # a quaternion that is not of unit length
    (model / "images.txt").write_text(DOC_IMAGES.replace("0.851773 0.0165051", "1.851773 0.0165051", 1))
    with pytest.raises(PoseError, match=r"image 1 \(P1180141.JPG\).*not a unit quaternion"):
        open_dataset(root)
    (model / "images.txt").write_text(DOC_IMAGES.replace("-0.737434", "nan", 1))
    with pytest.raises(PoseError, match="NaN"):
        open_dataset(root)
    (model / "images.txt").write_text(DOC_IMAGES.replace(" 1 P1180141.JPG", " 7 P1180141.JPG"))
    with pytest.raises(DataError, match="camera 7 is not in the model"):
        open_dataset(root)
    (model / "images.txt").write_text(DOC_IMAGES)
    (model / "cameras.txt").write_text(DOC_CAMERAS.replace("2559.81 1536 1152\n", "2559.81 1536\n"))
    with pytest.raises(DataError, match="SIMPLE_PINHOLE takes 3 parameters, got 2"):
        open_dataset(root)
    (model / "cameras.txt").write_text(DOC_CAMERAS)
    (root / "images" / "P1180142.JPG").unlink()
    with pytest.raises(DataError, match="P1180142.JPG: image file not found"):
        open_dataset(root)
    # lenient mode: the rest is read and the problem listed
    Image.new("RGB", (96, 72)).save(root / "images" / "P1180143.JPG")
    text = DOC_IMAGES + "3 1 0 0 0 0 0 3 2 P1180143.JPG\n\n"
    (model / "images.txt").write_text(text)
    collection = open_dataset(root, strict=False)
    assert collection[0].num_views == 2 and any("P1180142.JPG" in p for p in collection.problems)


def test_truncated_binary_model(synth_dir: Path, tmp_path: Path) -> None:
    out = write_colmap(open_dataset(synth_dir)[:1], tmp_path / "w", binary=True)
    images = next(out.glob("*/sparse/0/images.bin"))
    data = images.read_bytes()
    assert struct.unpack("<Q", data[:8])[0] == 6
    images.write_bytes(data[:-20])
    with pytest.raises(DataError, match="images.bin: file ends"):
        open_dataset(out)


def test_cli_data_info_reads_colmap(tmp_path: Path) -> None:
    root = _doc_scene(tmp_path / "scene")
    result = CliRunner().invoke(app, ["data", "info", str(root)])
    assert result.exit_code == 0, result.output
    assert "colmap" in result.output


def test_layouts_and_priorities_as_colmap_and_nerfstudio_leave_them(synth_dir: Path, tmp_path: Path) -> None:
    scene = open_dataset(synth_dir)[0]
    root = write_colmap([scene], tmp_path / "w") / scene.name
    # binary beside text: COLMAP reads the binary one, so do we (here the text one is made stale)
    write_colmap([scene], tmp_path / "b", binary=True)
    for name in ("cameras.bin", "images.bin"):
        shutil.copyfile(tmp_path / "b" / scene.name / "sparse" / "0" / name, root / "sparse" / "0" / name)
    (root / "sparse" / "0" / "images.txt").write_text("")
    assert open_dataset(root)[0].num_views == scene.num_views
    # nerfstudio's ns-process-data keeps the model in colmap/sparse/0
    (root / "colmap").mkdir()
    shutil.move(root / "sparse", root / "colmap" / "sparse")
    assert detect_format(root) == "colmap" and open_dataset(root)[0].num_views == scene.num_views
    # a broken extra reconstruction (an aborted run) does not hide a good one, even in strict mode
    (root / "colmap" / "sparse" / "1").mkdir()
    (root / "colmap" / "sparse" / "1" / "cameras.txt").write_text("1 PINHOLE 24 24 1 2\n")
    (root / "colmap" / "sparse" / "1" / "images.txt").write_text("")
    assert open_dataset(root)[0].num_views == scene.num_views
    lenient = open_dataset(root, strict=False)
    assert any("PINHOLE takes 4 parameters" in p for p in lenient.problems)


def test_images_of_another_aspect_ratio_and_unwritable_lenses_are_refused(tmp_path: Path) -> None:
    root = _doc_scene(tmp_path / "scene", size=(72, 96))  # portrait photos for landscape cameras
    with pytest.raises(DataError, match=r"P1180141.JPG: image is 72x96 but its camera 1 is 3072x2304"):
        open_dataset(root)
    root = _doc_scene(tmp_path / "ok")
    scene = open_dataset(root)[0]
    scene.distortion = [cameras.Distortion("opencv", k1=0.1, k4=0.01)] * 2
    with pytest.raises(DataError, match="r\\^8 term"):
        write_colmap([scene], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written
    (root / "sparse" / "0" / "cameras.txt").write_text(DOC_CAMERAS.replace("1152 -0.0218531", "1152 -0.02 7"))
    with pytest.raises(DataError, match=r"cameras.txt: camera 3 \(line 6\): camera model SIMPLE_RADIAL takes 4"):
        open_dataset(root)
