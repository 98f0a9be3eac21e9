"""`novelview sample` and `novelview orbit`: outputs on disk, and a one-line error (exit 2) for every bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from novelview import cameras
from novelview.checkpoint import CheckpointConfig, save_checkpoint
from novelview.cli import main
from novelview.diffusion import DiffusionConfig
from novelview.models.presets import build_model

SIZE = 16


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("xunet-tiny", SIZE)
    config = CheckpointConfig(model=model.config.to_dict(), diffusion=DiffusionConfig(), data={})
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "tiny", model, config)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "in.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 20, 4), dtype=np.uint8), "RGBA").save(path)
    return path


def run(*args: str) -> int:
    try:
        main([str(a) for a in args])
    except SystemExit as exit:
        return int(exit.code or 0)
    return 0


def assert_user_error(capsys, code: int, *fragments: str) -> None:
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ------------------------------------------------------------------------------------------------ outputs


def test_sample_writes_png(ckpt, image, tmp_path, capsys):
    out = tmp_path / "side.png"
    code = run("sample", "--checkpoint", ckpt, "--image", image, "--azimuth", 90, "--elevation", -10,
               "--out", out, "--steps", 2, "--device", "cpu")
    assert code == 0, capsys.readouterr().err
    with Image.open(out) as im:
        im.verify()
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (SIZE, SIZE)


def test_sample_with_pose_file_writes_one_file_per_pose(ckpt, image, tmp_path, capsys):
    base = cameras.spherical_to_pose(0.0, 17.5, 2.5)
    poses = [cameras.rotate_about_target(base, az, 0).tolist() for az in (45, 135)]
    (tmp_path / "poses.json").write_text(json.dumps(poses))
    code = run("sample", "--checkpoint", ckpt, "--image", image, "--poses", tmp_path / "poses.json",
               "--out", tmp_path / "v.png", "--steps", 2, "--sampler", "ddim", "--guidance", 1.5, "--seed", 3)
    assert code == 0, capsys.readouterr().err
    for i in range(2):
        with Image.open(tmp_path / f"v_{i:03d}.png") as im:
            assert im.size == (SIZE, SIZE)
    # the object form with an explicit input camera
    (tmp_path / "poses2.json").write_text(json.dumps({"input_pose": base.tolist(), "target_poses": poses[:1]}))
    code = run("sample", "--checkpoint", ckpt, "--image", image, "--poses", tmp_path / "poses2.json",
               "--out", tmp_path / "w.png", "--steps", 1)
    assert code == 0 and (tmp_path / "w.png").is_file()


def test_orbit_writes_gif_and_contact_sheet(ckpt, image, tmp_path, capsys):
    out = tmp_path / "orbit.gif"
    code = run("orbit", "--checkpoint", ckpt, "--image", image, "--views", 5, "--out", out, "--steps", 2,
               "--upscale", 3)
    assert code == 0, capsys.readouterr().err
    with Image.open(out) as gif:
        assert gif.format == "GIF" and gif.size == (3 * SIZE, 3 * SIZE) and gif.n_frames == 5
    with Image.open(tmp_path / "orbit_sheet.png") as sheet:
        assert sheet.format == "PNG" and sheet.width > 3 * 3 * SIZE  # 3 columns of upscaled frames


def test_orbit_writes_mp4_and_png(ckpt, image, tmp_path, capsys):
    import imageio.v3 as iio

    out = tmp_path / "orbit.mp4"
    code = run("orbit", "--checkpoint", ckpt, "--image", image, "--views", 4, "--out", out, "--steps", 1,
               "--no-stochastic", "--upscale", 4, "--upscale-filter", "bicubic")
    assert code == 0, capsys.readouterr().err
    frames = iio.imread(out, plugin="FFMPEG")
    assert frames.shape == (4, 4 * SIZE, 4 * SIZE, 3)
    assert (tmp_path / "orbit_sheet.png").is_file()
    code = run("orbit", "--checkpoint", ckpt, "--image", image, "--views", 2, "--out", tmp_path / "sheet.png",
               "--steps", 1)
    assert code == 0 and Image.open(tmp_path / "sheet.png").format == "PNG"


# ------------------------------------------------------------------------------------------------ bad input


@pytest.fixture()
def sample_args(ckpt, image, tmp_path):
    return ["sample", "--checkpoint", ckpt, "--image", image, "--out", tmp_path / "o.png", "--steps", 1]


def test_corrupt_image(sample_args, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    args = list(sample_args)
    args[args.index("--image") + 1] = bad
    assert_user_error(capsys, run(*args, "--azimuth", 30), "bad.png")


def test_zero_size_and_missing_image(sample_args, tmp_path, capsys):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for path in (empty, tmp_path / "missing.jpg"):
        args = list(sample_args)
        args[args.index("--image") + 1] = path
        assert_user_error(capsys, run(*args, "--azimuth", 30), path.name)


def _zero_height_png(path):
    """A syntactically valid PNG header that declares a 7x0 image."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 7, 0, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def test_zero_dimension_image(sample_args, tmp_path, capsys):
    _zero_height_png(tmp_path / "flat.png")
    args = list(sample_args)
    args[args.index("--image") + 1] = tmp_path / "flat.png"
    assert_user_error(capsys, run(*args, "--azimuth", 30), "flat.png")


@pytest.mark.parametrize(
    "content,fragment",
    [
        (json.dumps([np.diag([2.0, 2.0, 2.0, 1.0]).tolist()]), "orthonormal"),
        ("[[[NaN, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]]", "NaN"),
        (json.dumps([np.diag([1.0, 1.0, -1.0, 1.0]).tolist()]), "determinant"),
        (json.dumps([[1, 2, 3]]), "4x4"),
        ("{not json", "JSON"),
        (json.dumps({"poses": []}), "target_poses"),
    ],
)
def test_bad_pose_file(sample_args, tmp_path, capsys, content, fragment):
    (tmp_path / "p.json").write_text(content)
    assert_user_error(capsys, run(*sample_args, "--poses", tmp_path / "p.json"), fragment)


def test_missing_pose_file(sample_args, tmp_path, capsys):
    assert_user_error(capsys, run(*sample_args, "--poses", tmp_path / "nope.json"), "nope.json")


@pytest.mark.parametrize("elevation", ["95", "-100", "75"])
def test_elevation_out_of_range(sample_args, capsys, elevation):
    assert_user_error(capsys, run(*sample_args, "--azimuth", "10", "--elevation", elevation), "(-90, 90)")


def test_orbit_elevation_out_of_range(ckpt, image, tmp_path, capsys):
    code = run("orbit", "--checkpoint", ckpt, "--image", image, "--out", tmp_path / "o.gif", "--elevation", "91")
    assert_user_error(capsys, code, "(-90, 90)")


def test_orbit_unknown_order(ckpt, image, tmp_path, capsys):
    code = run("orbit", "--checkpoint", ckpt, "--image", image, "--out", tmp_path / "o.gif", "--order", "random",
               "--steps", "1")
    assert_user_error(capsys, code, "given or nearest")
    assert not (tmp_path / "o.gif").exists()


def test_conflicting_or_missing_target(sample_args, tmp_path, capsys):
    (tmp_path / "p.json").write_text(json.dumps([np.eye(4).tolist()]))
    assert_user_error(capsys, run(*sample_args, "--poses", tmp_path / "p.json", "--azimuth", "10"), "not both")
    assert_user_error(capsys, run(*sample_args), "--azimuth")


def test_bad_options(sample_args, tmp_path, capsys):
    assert_user_error(capsys, run(*sample_args, "--azimuth", "10", "--sampler", "euler"), "euler")
    args = list(sample_args)
    args[args.index("--out") + 1] = tmp_path / "o.gif"
    assert_user_error(capsys, run(*args, "--azimuth", "10"), ".png")


def _copy_checkpoint(ckpt, dst):
    import shutil

    shutil.copytree(ckpt, dst)
    return dst


def test_checkpoint_missing_files(ckpt, image, tmp_path, capsys):
    broken = _copy_checkpoint(ckpt, tmp_path / "broken")
    (broken / "model.safetensors").unlink()
    args = ["sample", "--image", image, "--out", tmp_path / "o.png", "--azimuth", "10", "--steps", "1"]
    assert_user_error(capsys, run(*args, "--checkpoint", broken), "model.safetensors")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_user_error(capsys, run(*args, "--checkpoint", empty), "empty")
    assert_user_error(capsys, run(*args, "--checkpoint", tmp_path / "absent"), "absent")


def test_checkpoint_from_future_version(ckpt, image, tmp_path, capsys):
    future = _copy_checkpoint(ckpt, tmp_path / "future")
    cfg = json.loads((future / "config.json").read_text())
    cfg["format_version"] = 99
    (future / "config.json").write_text(json.dumps(cfg))
    code = run("orbit", "--checkpoint", future, "--image", image, "--out", tmp_path / "o.gif", "--steps", "1")
    assert_user_error(capsys, code, "newer")


def test_missing_default_checkpoint(image, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NOVELVIEW_CHECKPOINT", str(tmp_path / "no-default"))
    code = run("sample", "--image", image, "--out", tmp_path / "o.png", "--azimuth", "10")
    assert_user_error(capsys, code, "--checkpoint", "train")


def test_checkpoint_with_inconsistent_channels(ckpt, image, tmp_path, capsys):
    """config.json saying 'self-conditioned' for a network without the extra input is refused up front."""
    odd = _copy_checkpoint(ckpt, tmp_path / "odd")
    cfg = json.loads((odd / "config.json").read_text())
    cfg["diffusion"]["self_condition"] = True
    (odd / "config.json").write_text(json.dumps(cfg))
    code = run("sample", "--checkpoint", odd, "--image", image, "--out", tmp_path / "o.png", "--azimuth", "10")
    assert_user_error(capsys, code, "self_condition", "inconsistent")


@pytest.mark.parametrize("edit, fragment", [
    (lambda cfg: cfg["model"].update(ch=8), "do not fit"),  # weights for another width
    (lambda cfg: cfg["model"].update(heads=0), "heads"),
    (lambda cfg: cfg["model"].update(num_res_blocks="two"), "num_res_blocks"),
    (lambda cfg: cfg.clear() or cfg.update(x=[1, 2]), "format_version"),
], ids=["other-width", "zero-heads", "string-for-int", "no-version"])
def test_checkpoint_config_that_does_not_describe_the_weights(ckpt, image, tmp_path, capsys, edit, fragment):
    odd = _copy_checkpoint(ckpt, tmp_path / "odd")
    cfg = json.loads((odd / "config.json").read_text())
    edit(cfg)
    (odd / "config.json").write_text(json.dumps(cfg))
    code = run("sample", "--checkpoint", odd, "--image", image, "--out", tmp_path / "o.png", "--azimuth", "10")
    assert_user_error(capsys, code, fragment)
    (odd / "config.json").write_text("[1, 2]")
    code = run("sample", "--checkpoint", odd, "--image", image, "--out", tmp_path / "o.png", "--azimuth", "10")
    assert_user_error(capsys, code, "JSON object")


def test_unusable_output_location_or_device_fails_before_any_work(sample_args, tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("a file, not a folder")
    args = list(sample_args)
    args[args.index("--out") + 1] = blocker / "x.png"
    assert_user_error(capsys, run(*args, "--azimuth", "10"), "afile is a file")
    if not torch.cuda.is_available():
        assert_user_error(capsys, run(*sample_args, "--azimuth", "10", "--device", "cuda"), "no CUDA device")
    assert_user_error(capsys, run(*sample_args, "--azimuth", "10", "--device", "bogus"), "bogus")


@pytest.mark.parametrize("option, value, fragment", [
    ("--radius", "inf", "radius"), ("--radius", "1e400", "radius"), ("--input-elevation", "nan", "elevation"),
])
def test_non_finite_cameras(sample_args, capsys, option, value, fragment):
    assert_user_error(capsys, run(*sample_args, "--azimuth", "10", option, value), fragment)


@pytest.mark.parametrize(("strength", "fragment"), [("0", "(0, 1]"), ("2", "(0, 1]"), ("0.5", "lifting module")])
def test_strength_out_of_range_or_without_a_lifting_model(sample_args, capsys, strength, fragment):
    assert_user_error(capsys, run(*sample_args, "--azimuth", "10", "--strength", strength), fragment)
