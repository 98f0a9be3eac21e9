"""images.py: the one loader -- modes, alpha, crop/pad, area filtering, bad files, save/grid helpers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from novelview.errors import DataError
from novelview.data.atomic import write_atomic
from novelview.images import (
    enlarge,
    load_image,
    load_mask,
    load_rgb_uint8,
    make_grid,
    save_animation,
    save_image,
    square_box,
    to_pil,
)


def to_uint8(t: torch.Tensor) -> np.ndarray:
    return ((t + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


def test_output_contract(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.new("RGB", (20, 20), (255, 0, 0)).save(path)
    t = load_image(path, 8)
    assert t.shape == (3, 8, 8) and t.dtype == torch.float32
    assert t.min() >= -1 and t.max() <= 1
    assert torch.allclose(t[:, 0, 0], torch.tensor([1.0, -1.0, -1.0]))
    assert load_image(path).shape == (3, 20, 20)  # size=None keeps the native square


def test_rgba_composited_on_white() -> None:
    arr = np.zeros((4, 4, 4), np.uint8)
    arr[..., 0] = 200  # red-ish
    arr[0, 0, 3] = 0  # transparent -> white
    arr[0, 1, 3] = 255  # opaque -> the colour
    arr[0, 2, 3] = 128  # half -> blend with white
    out = to_uint8(load_image(Image.fromarray(arr)))
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [200, 0, 0]
    assert abs(int(out[0, 2, 0]) - (200 * 128 + 255 * 127) // 255) <= 1
    assert abs(int(out[0, 2, 1]) - 127) <= 1


@pytest.mark.parametrize("mode", ["L", "LA", "P", "PA", "1", "CMYK", "I;16", "I", "F"])
def test_modes_become_rgb(tmp_path: Path, mode: str) -> None:
    if mode in ("I;16", "I"):
        img = Image.fromarray(np.full((6, 6), 65535 // 2, np.uint16)).convert(mode)
        expected = 128
    elif mode == "F":
        img = Image.fromarray(np.full((6, 6), 0.5, np.float32))
        expected = 128
    else:
        img = Image.new("RGB", (6, 6), (128, 128, 128)).convert(mode)
        expected = None
    out = load_rgb_uint8(img)
    assert out.shape == (6, 6, 3) and out.dtype == np.uint8
    if expected is not None:
        assert abs(int(out[0, 0, 0]) - expected) <= 1
        assert out[0, 0, 0] == out[0, 0, 1] == out[0, 0, 2]


def test_sixteen_bit_png_file_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    arr = np.zeros((4, 4), np.uint16)
    arr[0, 0] = 65535
    arr[0, 1] = 257 * 100
    Image.fromarray(arr).save(path)
    out = load_rgb_uint8(path)
    assert out[0, 0, 0] == 255 and out[0, 1, 0] == 100 and out[1, 1, 0] == 0


def test_palette_transparency_is_white(tmp_path: Path) -> None:
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.info["transparency"] = 0
    path = tmp_path / "p.png"
    img.save(path, transparency=0)
    assert load_rgb_uint8(path)[0, 0].tolist() == [255, 255, 255]


def test_center_crop_and_pad() -> None:
    arr = np.zeros((10, 30, 3), np.uint8)  # wide: left third red, middle green, right third blue
    arr[:, :10, 0] = 255
    arr[:, 10:20, 1] = 255
    arr[:, 20:, 2] = 255
    crop = load_rgb_uint8(arr, crop="center")
    assert crop.shape == (10, 10, 3) and (crop[..., 1] == 255).all() and (crop[..., 0] == 0).all()
    pad = load_rgb_uint8(arr, crop="pad")
    assert pad.shape == (30, 30, 3)
    assert (pad[:10] == 255).all() and (pad[20:] == 255).all()  # white bands above and below
    assert pad[15, 0].tolist() == [255, 0, 0] and pad[15, 29].tolist() == [0, 0, 255]
    assert square_box(10, 30, "center") == (0, 10, 10)
    assert square_box(10, 30, "pad") == (-10, 0, 30)


def test_area_filtering_when_shrinking_bicubic_when_enlarging() -> None:
    checker = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    small = load_rgb_uint8(checker, 16)
    assert np.abs(small.astype(int) - 128).max() <= 1  # area average, no aliasing
    ramp = np.tile(np.linspace(0, 255, 8).astype(np.uint8), (8, 1))
    big = load_rgb_uint8(ramp, 32)
    assert big.shape == (32, 32, 3)
    assert (np.diff(big[16, 2:-2, 0].astype(int)) >= 0).all()  # smooth, monotone upsampling


def test_numpy_and_tensor_inputs() -> None:
    f = np.full((5, 5, 3), 1.0, np.float32)
    assert load_rgb_uint8(f)[0, 0].tolist() == [255, 255, 255]
    chw = np.zeros((3, 5, 7), np.uint8)
    assert load_rgb_uint8(chw).shape == (5, 5, 3)
    t = load_image(np.full((4, 4, 3), 77, np.uint8))
    assert torch.equal(load_image(t), t)  # a loaded tensor round-trips
    with pytest.raises(DataError, match="NaN"):
        load_image(np.full((4, 4), np.nan, np.float32))
    with pytest.raises(DataError, match="shape"):
        load_image(np.zeros((4, 4, 2), np.uint8))


# ---------------------------------------------------------------------------------------------------------
# Bad files: every error names the file
# ---------------------------------------------------------------------------------------------------------


def _png_bytes(size: int = 32) -> bytes:
    import io

    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "name, content, words",
    [
        ("truncated.png", _png_bytes()[:400], "truncated"),
        ("garbage.png", b"this is not an image at all" * 10, "not a readable image"),
        ("empty.png", b"", "empty"),
    ],
)
def test_bad_files_raise_data_error_naming_the_file(tmp_path: Path, name: str, content: bytes, words: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        load_image(path, 16)
    assert str(path) in str(info.value)
    assert words in str(info.value)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found") as info:
        load_image(tmp_path / "nope.png")
    assert "nope.png" in str(info.value)
    with pytest.raises(DataError, match="directory"):
        load_image(tmp_path)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.png"
    path.write_bytes(_png_bytes())
    path.chmod(0)
    with pytest.raises(DataError, match="secret.png"):
        load_image(path)


def test_decompression_bomb_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("L", (300, 300)).save(path)
    with pytest.raises(DataError, match="refused") as info:
        load_image(path, max_pixels=200 * 200)
    assert "big.png" in str(info.value)


# ---------------------------------------------------------------------------------------------------------
# Saving and grids
# ---------------------------------------------------------------------------------------------------------


def test_save_and_reload_is_exact(tmp_path: Path) -> None:
    t = load_image(np.random.default_rng(1).integers(0, 255, (12, 12, 3), dtype=np.uint8))
    path = save_image(t, tmp_path / "sub" / "x.png")
    assert torch.equal(load_image(path), t)
    assert not [p for p in path.parent.iterdir() if p.name != "x.png"]  # no temp file left
    assert to_pil(t[None]).size == (12, 12)
    with pytest.raises(DataError, match="extension"):
        save_image(t, tmp_path / "x.unknownext")


def test_make_grid_layout() -> None:
    a = torch.full((3, 8, 8), -1.0)
    b = Image.new("RGB", (6, 4), (255, 0, 0))
    grid = make_grid([[a, b], [a]], padding=2)
    assert grid.size == (2 * 8 + 3 * 2, 2 * 8 + 3 * 2)
    assert grid.getpixel((2, 2)) == (0, 0, 0)
    assert grid.getpixel((0, 0)) == (255, 255, 255)
    assert make_grid([a, a, a]).size == (3 * 8 + 4 * 2, 8 + 2 * 2)  # a flat list is one row


def test_load_mask_uses_alpha(tmp_path: Path) -> None:
    arr = np.zeros((4, 8, 4), np.uint8)
    arr[:, 4:, 3] = 255
    m = load_mask(Image.fromarray(arr), crop="center")
    assert m.shape == (1, 4, 4)
    assert m[0, :, :2].max() == 0 and m[0, :, 2:].min() == 1


def test_permission_denied_is_a_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same check as above for root (who can read anything): the OS error is reported with the file name."""
    path = tmp_path / "locked.png"
    path.write_bytes(_png_bytes())

    def deny(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Image, "open", deny)
    with pytest.raises(DataError, match="locked.png.*permission denied"):
        load_image(path)


def test_exif_orientation_is_applied(tmp_path):
    """A phone photo stored landscape with 'rotate 90' in EXIF must reach the model upright."""
    from PIL import Image

    from novelview.images import load_image

    img = Image.new("RGB", (40, 20), (255, 255, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))  # left half red as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "phone.jpg"
    img.save(path, exif=exif, quality=95)
    out = load_image(path, size=None, crop="pad")
    # After the rotation the red half is on top: the top row is red, the bottom row white.
    assert out[0, 2, 10] > 0.5 and out[1, 2, 10] < -0.5
    assert out[1, -3, 10] > 0.5


def test_animations_keep_every_frame_and_its_pixels(tmp_path: Path) -> None:
    import imageio.v3 as iio

    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)) for _ in range(3)]
    gif = save_animation(frames, tmp_path / "a.gif", fps=4)
    with Image.open(gif) as im:
        assert im.n_frames == 3 and im.size == (24, 20) and im.info["duration"] == 250
    mp4 = save_animation(frames, tmp_path / "a.mp4", fps=4)
    video = iio.imread(mp4, plugin="FFMPEG")
    assert video.shape == (3, 32, 32, 3)  # padded to multiples of 16, not resized
    # the padding is white (a few pixels away from the picture: lossy coding blurs the edge between them)
    assert (video[:, 24:, :, :] > 240).all() and (video[:, :, 28:, :] > 240).all()
    with pytest.raises(DataError, match=".gif or .mp4"):
        save_animation(frames, tmp_path / "a.webm")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif", "a.mp4"]  # no temporary files left


def test_a_failed_write_leaves_nothing_and_replaces_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out" / "report.json"
    write_atomic(target, lambda tmp: tmp.write_text("old"))

    def half_written(tmp: Path) -> None:
        tmp.write_text("ne")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, half_written)
    assert target.read_text() == "old" and [p.name for p in target.parent.iterdir()] == ["report.json"]


def test_enlarge_by_factor_or_to_a_minimum_side() -> None:
    small = Image.new("RGB", (10, 7))
    assert enlarge(small, 3).size == (30, 21)
    assert enlarge(small, min_side=30).size == (50, 35)  # the smallest integer factor: 5
    assert enlarge(small, min_side=5) is small
