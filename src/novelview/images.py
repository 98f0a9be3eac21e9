"""The one image loader and saver of novelview.

Everything that turns a file (or an in-memory picture) into model input goes through :func:`load_image`, so
data loading, the pipeline, the server and evaluation see exactly the same pixels:

* any PIL mode is converted to RGB: alpha (RGBA, LA, palette transparency) is composited on **white**,
  grayscale / palette / 16-bit / float images are expanded to 8-bit RGB;
* a non-square image is centre-cropped to a square (``crop="center"``) or padded with white (``crop="pad"``);
  :func:`square_box` gives the geometry so callers can adjust intrinsics identically;
* resizing uses area filtering (``Image.BOX``) when shrinking, so thin structures do not alias, and bicubic when
  enlarging;
* the result is a float32 tensor ``[3, S, S]`` in ``[-1, 1]``;
* EXIF orientation is applied to pictures users hand in (phone photos are stored sideways), but **not** to
  dataset views (``exif_transpose=False``): calibration tools such as COLMAP deliberately ignore the tag, so a
  dataset's intrinsics and poses describe the pixels as stored.

Unreadable input raises :class:`~novelview.errors.DataError` naming the file. Images are fully decoded
(``.load()``) so truncated files fail here rather than later inside a training step, and images with more than
``max_pixels`` pixels are refused before decoding (decompression bombs). Files are opened only with the decoders
in :data:`PICTURE_FORMATS` (pictures a user hands in: the web server's list) or :data:`DATASET_FORMATS`; Pillow
would open EPS too, and load it by running Ghostscript.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from novelview.data.atomic import write_atomic
from novelview.errors import DataError

ImageSource = str | os.PathLike | Image.Image | np.ndarray | Tensor | bytes
Crop = Literal["center", "pad"]
Resample = Literal["nearest", "bicubic"]

#: Refuse images with more pixels than this (about 8k x 8k) before decoding them.
DEFAULT_MAX_PIXELS = 8192 * 8192
#: Decoders for pictures users hand in (CLI, Python API, web server). (Phones' multi-picture JPEGs open as JPEG.)
PICTURE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
#: Decoders for dataset views, masks and depth maps.
DATASET_FORMATS = (*PICTURE_FORMATS, "TIFF")
WHITE = (255, 255, 255)


# ---------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------


def _describe(src: object) -> str:
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    if isinstance(src, bytes):
        return f"<{len(src)} bytes>"
    return f"<{type(src).__name__}>"


def open_image(
    src: str | os.PathLike | bytes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
    exif_transpose: bool = True,
    formats: Sequence[str] = DATASET_FORMATS,
) -> Image.Image:
    """Open and fully decode an image file (or its bytes) with one of the decoders ``formats``; errors name the file.

    ``exif_transpose``: apply the EXIF orientation tag (see the module docstring for when not to).
    """
    label = name or _describe(src)
    with _named_errors(label, formats):
        img = _open_header(src, max_pixels, label, formats)
        img.load()  # decode everything now: truncated data fails here, not in a training step
        if exif_transpose:  # phone photos store their rotation in EXIF; otherwise they reach the model sideways
            img = ImageOps.exif_transpose(img)
    return img


def image_header_size(
    src: str | os.PathLike, name: str | None = None, formats: Sequence[str] = DATASET_FORMATS
) -> tuple[int, int]:
    """``(width, height)`` from the file's header alone (no decoding), with :func:`open_image`'s checks and errors."""
    label = name or _describe(src)
    with _named_errors(label, formats):
        with _open_header(src, DEFAULT_MAX_PIXELS, label, formats) as img:
            return img.size


def _open_header(src: str | os.PathLike | bytes, max_pixels: int, label: str, formats: Sequence[str]) -> Image.Image:
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.exists():
            raise DataError(f"{label}: image file not found")
        if path.is_dir():
            raise DataError(f"{label}: expected an image file, found a directory")
        if path.stat().st_size == 0:
            raise DataError(f"{label}: image file is empty (0 bytes)")
        fp: object = path
    else:
        if len(src) == 0:
            raise DataError(f"{label}: image data is empty (0 bytes)")
        fp = io.BytesIO(src)
    with warnings.catch_warnings():
        # We enforce our own (lower) limit below; PIL's own warning would only be noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(fp, formats=tuple(formats))  # type: ignore[arg-type]
    w, h = img.size
    if w * h > max_pixels:
        raise DataError(f"{label}: image is {w}x{h} pixels, more than the limit of {max_pixels} (refused)")
    if w == 0 or h == 0:
        raise DataError(f"{label}: image has zero size ({w}x{h})")
    return img


@contextmanager
def _named_errors(label: str, formats: Sequence[str]) -> Iterator[None]:
    """Turn what Pillow raises for a bad file into one DataError that names it."""
    try:
        yield
    except DataError:
        raise
    except Image.DecompressionBombError as err:
        raise DataError(f"{label}: image is too large to decode safely ({err})") from None
    except UnidentifiedImageError:
        raise DataError(f"{label}: not a readable image (corrupt, or not one of {', '.join(formats)})") from None
    except PermissionError:
        raise DataError(f"{label}: permission denied") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise DataError(f"{label}: corrupt or truncated image ({err})") from None


def _high_bit_to_l(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit integer and float grayscale to 8-bit 'L' by scaling, not clipping."""
    arr = np.asarray(img)
    if img.mode == "F":
        scale = 1.0 if float(np.nanmax(arr, initial=0.0)) <= 1.0 else 255.0
        arr8 = np.clip(np.nan_to_num(arr) / scale * 255.0 + 0.5, 0, 255)
    else:
        arr = arr.astype(np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr8 = np.clip(arr / peak * 255.0 + 0.5, 0, 255)
    return Image.fromarray(arr8.astype(np.uint8))


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB, compositing transparency on white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        return _high_bit_to_l(img).convert("RGB")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode in ("P", "L", "RGB") and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _array_to_pil(arr: np.ndarray, label: str) -> Image.Image:
    """HxW, HxWx1, HxWx3 or HxWx4 arrays; uint8, uint16 or float in [0, 1]."""
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] > 4:
        arr = np.moveaxis(arr, 0, -1)  # channels-first input
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise DataError(f"{label}: expected an HxW, HxWx3 or HxWx4 image array, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{label}: image array has zero size {arr.shape}")
    if arr.dtype == np.uint8:
        arr8 = arr
    elif arr.dtype == np.uint16:
        arr8 = (arr.astype(np.float64) / 65535.0 * 255.0 + 0.5).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating) or arr.dtype == np.bool_:
        arr = arr.astype(np.float64)
        if not np.isfinite(arr).all():
            raise DataError(f"{label}: image array contains NaN or infinite values")
        # Half an 8-bit step of overshoot (resampling, arithmetic) is clipped; more means another range.
        if arr.size and (arr.min() < -1 / 510 or arr.max() > 1 + 1 / 510):
            hint = "divide by 255 (or pass uint8)" if arr.max() > 1.5 else "clip it to [0, 1]"
            raise DataError(f"{label}: float image arrays must lie in [0, 1], got values in [{arr.min():g}, "
                            f"{arr.max():g}]; {hint}")
        arr8 = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    else:
        raise DataError(f"{label}: unsupported image array dtype {arr.dtype}")
    return Image.fromarray(np.ascontiguousarray(arr8))  # uint8 HxW / HxWx3 / HxWx4 -> L / RGB / RGBA


def _checked_tensor(t: Tensor, label: str) -> Tensor:
    """A tensor image as :func:`load_image` makes them: float ``[3, H, W]`` or ``[1, 3, H, W]`` in [-1, 1]."""
    shape = tuple(t.shape)
    if t.ndim == 4 and shape[0] == 1:
        t = t[0]
    if t.ndim != 3 or t.shape[0] != 3 or not t.is_floating_point():
        raise DataError(f"{label}: a tensor image must be float [3, H, W] (or [1, 3, H, W]) in [-1, 1], got "
                        f"{t.dtype} of shape {shape}; pass HxWx3 arrays as numpy")
    if t.shape[1] == 0 or t.shape[2] == 0:
        raise DataError(f"{label}: tensor image has zero size {shape}")
    if not torch.isfinite(t).all():
        raise DataError(f"{label}: tensor image contains NaN or infinite values")
    lo, hi = float(t.min()), float(t.max())
    if lo < -1.001 or hi > 1.001:
        raise DataError(f"{label}: tensor images lie in [-1, 1] (x * 2 - 1 for [0, 1]), got values in [{lo:g}, {hi:g}]")
    return t


def read_rgb(
    src: ImageSource,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
    exif_transpose: bool = True,
    formats: Sequence[str] = DATASET_FORMATS,
) -> Image.Image:
    """Any supported source -> decoded 8-bit RGB PIL image (alpha composited on white).

    ``src`` may be a path, encoded bytes, a PIL image, a numpy array (uint8, uint16, or float in [0, 1]; HWC or
    CHW) or a tensor ``[3, H, W]`` / ``[1, 3, H, W]`` in [-1, 1] (as produced by :func:`load_image`).
    """
    label = name or _describe(src)
    if isinstance(src, Image.Image):
        if src.width * src.height > max_pixels:
            raise DataError(f"{label}: image is {src.width}x{src.height} pixels, more than {max_pixels} (refused)")
        if src.width == 0 or src.height == 0:
            raise DataError(f"{label}: image has zero size")
        # Images decoded elsewhere (e.g. the web server's upload check) still carry their EXIF rotation.
        img = ImageOps.exif_transpose(src) if exif_transpose else src
    elif isinstance(src, Tensor):
        return to_pil(_checked_tensor(src, label))
    elif isinstance(src, np.ndarray):
        img = _array_to_pil(src, label)
    elif isinstance(src, (str, os.PathLike, bytes)):
        img = open_image(src, max_pixels=max_pixels, name=name, exif_transpose=exif_transpose, formats=formats)
    else:
        raise DataError(f"{label}: cannot read an image from a {type(src).__name__}")
    try:
        return to_rgb(img)
    except (OSError, ValueError) as err:
        raise DataError(f"{label}: cannot convert image mode {img.mode} to RGB ({err})") from None


# ---------------------------------------------------------------------------------------------------------
# Geometry: square crop / pad and resize
# ---------------------------------------------------------------------------------------------------------


def square_box(height: int, width: int, crop: Crop = "center") -> tuple[int, int, int]:
    """``(top, left, side)`` of the square taken from an image: the largest centred square for ``"center"``,
    or the smallest enclosing centred square (negative offsets = white padding) for ``"pad"``.

    Intrinsics follow the same box with ``cameras.crop_intrinsics(K, top, left)``.
    """
    if crop == "center":
        side = min(height, width)
    elif crop == "pad":
        side = max(height, width)
    else:
        raise DataError(f"crop must be 'center' or 'pad', got {crop!r}")
    return (height - side) // 2, (width - side) // 2, side


def square(img: Image.Image, crop: Crop = "center") -> Image.Image:
    """Centre-crop or white-pad an RGB image to a square (see :func:`square_box`)."""
    top, left, side = square_box(img.height, img.width, crop)
    if side == img.width == img.height:
        return img
    if crop == "center":
        return img.crop((left, top, left + side, top + side))
    canvas = Image.new(img.mode, (side, side), WHITE if img.mode == "RGB" else 255)
    canvas.paste(img, (-left, -top))
    return canvas


def resize(img: Image.Image, size: int | tuple[int, int]) -> Image.Image:
    """Resize to ``size`` (int = square, or ``(W, H)``): area filter when shrinking, bicubic when enlarging."""
    w, h = (size, size) if isinstance(size, int) else size
    if (w, h) == img.size:
        return img
    shrinking = w <= img.width and h <= img.height
    return img.resize((w, h), Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC)


# ---------------------------------------------------------------------------------------------------------
# Tensors
# ---------------------------------------------------------------------------------------------------------


def pil_to_tensor(img: Image.Image) -> Tensor:
    """8-bit RGB (or L) PIL image -> float32 ``[3, H, W]`` in [-1, 1]."""
    arr = np.asarray(to_rgb(img), dtype=np.uint8)
    return uint8_to_tensor(arr)


def uint8_to_tensor(arr: np.ndarray | Tensor) -> Tensor:
    """uint8 ``[H, W, 3]`` (numpy) or ``[3, H, W]`` (tensor) -> float32 ``[3, H, W]`` in [-1, 1]."""
    if isinstance(arr, np.ndarray):
        # PIL-backed arrays are read-only; torch wants writable memory, and we convert (copy) anyway.
        arr = arr if arr.flags.writeable and arr.flags.c_contiguous else np.array(arr)
        t = torch.from_numpy(arr).permute(2, 0, 1)
    else:
        t = arr
    if t.dtype != torch.uint8:
        raise TypeError(f"expected uint8 pixels, got {t.dtype}")
    return t.to(torch.float32).div_(127.5).sub_(1.0)


def load_rgb_uint8(
    src: ImageSource,
    size: int | None = None,
    crop: Crop = "center",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
) -> np.ndarray:
    """Like :func:`load_image` but returns the uint8 ``[S, S, 3]`` array (4x smaller, for caches)."""
    img = square(read_rgb(src, max_pixels=max_pixels, name=name, formats=PICTURE_FORMATS), crop)
    if size is not None:
        if size < 1:
            raise DataError(f"image size must be positive, got {size}")
        img = resize(img, size)
    return np.asarray(img, dtype=np.uint8)


def load_image(
    src: ImageSource,
    size: int | None = None,
    crop: Crop = "center",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
) -> Tensor:
    """Load an image as a float32 tensor ``[3, S, S]`` in [-1, 1] (see the module docstring for the rules).

    ``size=None`` keeps the square's native side. ``name`` overrides how the source is named in errors.
    """
    return uint8_to_tensor(load_rgb_uint8(src, size, crop, max_pixels, name))


def mask_channel(img: Image.Image) -> Image.Image:
    """The 8-bit mask an image stands for: its alpha channel if it has one, else its luminance."""
    if "A" in img.mode or "transparency" in img.info:
        return img.convert("RGBA").getchannel("A")
    if img.mode == "L":
        return img
    return img.convert("L") if img.mode in ("RGB", "P", "1") else _high_bit_to_l(img)


def remap(img: Image.Image, positions: Tensor, fill: int) -> Image.Image:
    """Resample an 8-bit RGB or L image at ``positions [H, W, 2]`` ((u, v) in pixels, pixel centres at +0.5;
    bilinear), ``fill`` where they fall outside it. Used to undistort photos (``cameras.undistortion_map``)."""
    arr = torch.from_numpy(np.array(img, dtype=np.float32))
    arr = (arr[..., None] if arr.ndim == 2 else arr).permute(2, 0, 1)[None]
    ones = torch.ones_like(arr[:, :1])
    grid = torch.stack([positions[..., 0] / img.width, positions[..., 1] / img.height], dim=-1) * 2 - 1
    sampled = torch.nn.functional.grid_sample(
        torch.cat([arr, ones], dim=1), grid[None].float(), mode="bilinear", padding_mode="zeros", align_corners=False
    )[0]
    inside = sampled[-1:]
    out = sampled[:-1] + fill * (1 - inside)
    out = out.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(out[..., 0] if img.mode == "L" else out)


def load_mask(
    src: ImageSource,
    size: int | None = None,
    crop: Crop = "center",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
    exif_transpose: bool = True,
) -> Tensor:
    """A foreground mask as float32 ``[1, S, S]`` in [0, 1]; the alpha channel if the image has one, else its
    luminance. Cropping/resizing follow :func:`load_image` (padding counts as background)."""
    label = name or _describe(src)
    if isinstance(src, np.ndarray):
        img = _array_to_pil(src, label)
    elif isinstance(src, Image.Image):
        img = src
    else:
        img = open_image(src, max_pixels=max_pixels, name=name, exif_transpose=exif_transpose)  # type: ignore[arg-type]
    img = mask_channel(img)
    top, left, side = square_box(img.height, img.width, crop)
    if crop == "center":
        img = img.crop((left, top, left + side, top + side))
    elif side != img.width or side != img.height:
        canvas = Image.new("L", (side, side), 0)
        canvas.paste(img, (-left, -top))
        img = canvas
    if size is not None:
        img = resize(img, size)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]


# ---------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------


def to_pil(tensor: Tensor | np.ndarray) -> Image.Image:
    """``[3, H, W]`` or ``[1, 3, H, W]`` float in [-1, 1] (clamped) -> RGB PIL image; ``[1, H, W]`` -> 'L'."""
    t = torch.as_tensor(tensor).detach().to("cpu", torch.float32)
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise ValueError(f"to_pil takes one image, got a batch of {t.shape[0]}")
        t = t[0]
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"to_pil expects [3, H, W] or [1, H, W], got {tuple(t.shape)}")
    arr = ((t.clamp(-1, 1) + 1.0) * 127.5).round_().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(arr[..., 0]) if arr.shape[-1] == 1 else arr)


def save_image(image: Tensor | Image.Image | np.ndarray, path: str | os.PathLike) -> Path:
    """Save a tensor in [-1, 1] (or a PIL image / uint8 array) to ``path``; the format follows the suffix.

    Written to a temporary sibling and renamed, so a crash never leaves a truncated file behind.
    """
    path = Path(path)
    img = image if isinstance(image, Image.Image) else (
        _array_to_pil(image, str(path)) if isinstance(image, np.ndarray) else to_pil(image)
    )
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unknown image file extension {path.suffix!r}")
    return write_atomic(path, lambda tmp: img.save(tmp, format=fmt))


def enlarge(
    image: Image.Image, factor: int | None = None, *, min_side: int = 0, resample: Resample = "nearest"
) -> Image.Image:
    """``image`` enlarged by an integer ``factor``, or by the smallest one that makes its shorter side at least
    ``min_side`` pixels, for viewing. Nearest-neighbour (the default) keeps every pixel as the model made it."""
    if factor is None:
        factor = max(1, -(-min_side // max(1, min(image.size))))
    if factor == 1:
        return image
    method = {"nearest": Image.Resampling.NEAREST, "bicubic": Image.Resampling.BICUBIC}[resample]
    return image.resize((image.width * factor, image.height * factor), method)


def save_animation(frames: Sequence[Tensor | Image.Image], path: str | os.PathLike, fps: float = 8.0) -> Path:
    """Write ``frames`` (tensors in [-1, 1] or PIL images) as an endlessly looping GIF or an H.264 MP4, as the
    suffix of ``path`` says, atomically."""
    path = Path(path)
    pictures = [(f if isinstance(f, Image.Image) else to_pil(f)).convert("RGB") for f in frames]
    if not pictures:
        raise ValueError("an animation needs at least one frame")
    suffix = path.suffix.lower()
    if suffix == ".gif":
        duration = round(1000.0 / fps)
        return write_atomic(path, lambda tmp: pictures[0].save(
            tmp, format="GIF", save_all=True, append_images=pictures[1:], duration=duration, loop=0))
    if suffix == ".mp4":
        return write_atomic(path, lambda tmp: _write_mp4(pictures, tmp, fps))
    raise DataError(f"{path}: an animation is written as .gif or .mp4, not {path.suffix!r}")


def _write_mp4(frames: list[Image.Image], path: Path, fps: float) -> None:
    import imageio_ffmpeg

    # H.264 in yuv420p needs even sides; multiples of 16 keep every decoder happy. Frames are padded with white
    # rather than resized, so their pixels stay as they are.
    w, h = frames[0].size
    w16, h16 = -(-w // 16) * 16, -(-h // 16) * 16
    writer = imageio_ffmpeg.write_frames(
        str(path), (w16, h16), fps=fps, codec="libx264", pix_fmt_out="yuv420p", macro_block_size=1,
        ffmpeg_log_level="error", output_params=["-movflags", "+faststart"],
    )
    try:
        writer.send(None)
        for frame in frames:
            if frame.size != (w16, h16):
                canvas = Image.new("RGB", (w16, h16), WHITE)
                canvas.paste(frame, (0, 0))
                frame = canvas
            writer.send(np.ascontiguousarray(np.asarray(frame, dtype=np.uint8)))
    finally:
        writer.close()


def make_grid(
    rows: Sequence[Sequence[Tensor | Image.Image]] | Sequence[Tensor | Image.Image],
    padding: int = 2,
    background: tuple[int, int, int] = WHITE,
) -> Image.Image:
    """Tile images (tensors in [-1, 1] or PIL images) into one picture, one list per row.

    A flat list is one row. Cells are as large as the largest image; smaller images are centred.
    """
    if len(rows) == 0:
        raise ValueError("make_grid needs at least one image")
    if not isinstance(rows[0], (list, tuple)):
        rows = [rows]  # type: ignore[list-item]
    cells = [[im if isinstance(im, Image.Image) else to_pil(im) for im in row] for row in rows]  # type: ignore[union-attr]
    cells = [[im.convert("RGB") for im in row] for row in cells]
    cell_w = max((im.width for row in cells for im in row), default=1)
    cell_h = max((im.height for row in cells for im in row), default=1)
    n_cols = max(len(row) for row in cells)
    grid = Image.new(
        "RGB",
        (n_cols * cell_w + (n_cols + 1) * padding, len(cells) * cell_h + (len(cells) + 1) * padding),
        background,
    )
    for r, row in enumerate(cells):
        for c, im in enumerate(row):
            x = padding + c * (cell_w + padding) + (cell_w - im.width) // 2
            y = padding + r * (cell_h + padding) + (cell_h - im.height) // 2
            grid.paste(im, (x, y))
    return grid


__all__ = [
    "DATASET_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "PICTURE_FORMATS",
    "enlarge",
    "load_image",
    "load_mask",
    "load_rgb_uint8",
    "make_grid",
    "mask_channel",
    "image_header_size",
    "open_image",
    "pil_to_tensor",
    "read_rgb",
    "remap",
    "resize",
    "save_animation",
    "save_image",
    "square",
    "square_box",
    "to_pil",
    "to_rgb",
    "uint8_to_tensor",
]
