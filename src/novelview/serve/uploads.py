"""Untrusted uploads: a body-size limit enforced while the bytes arrive, and image decoding by content.

Starlette's multipart parser spools an upload to disk *before* the endpoint runs, so a size check in the endpoint
alone would still let a client fill the disk. :class:`BodySizeLimit` counts bytes as they are received and
answers ``413`` as soon as the limit is crossed, whatever ``Content-Length`` claimed.
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from novelview.images import PICTURE_FORMATS

#: Decoders we allow. PIL can open many more (EPS would even run Ghostscript); an upload gets only these.
ALLOWED_FORMATS = PICTURE_FORMATS


class UploadError(Exception):
    """An upload the client must fix; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _TooLarge(Exception):
    pass


class BodySizeLimit:
    """ASGI middleware: refuse request bodies larger than ``max_bytes`` with ``413``, counted while reading."""

    def __init__(self, app: ASGIApp, max_bytes: int, upload_limit: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # What the 413 message calls the limit: the file-size limit users set, not body + form overhead.
        self.upload_limit = max_bytes if upload_limit is None else upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:  # cheap early answer; the counting below is what we rely on
                    await _send_413(send, self.upload_limit)
                    return
        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _TooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                # The app turned our exception into its own error response (FastAPI wraps form-parsing errors
                # into a 400); replace it with the 413 that describes what happened.
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _send_413(send, self.upload_limit)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            if not started:
                await _send_413(send, self.upload_limit)


async def _send_413(send: Send, limit: int) -> None:
    body = json.dumps({"detail": f"upload too large: the limit is {_human(limit)}"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _human(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.0f} KB"
    return f"{n} bytes"


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000  # ~6300x6300; a decoded RGBA image of this size is 160 MB
    max_side: int = 16_384
    max_aspect: float = 10.0  # a 1 x 39,000,000 strip is within the pixel limit but needs ~1 GB to decode


def decode_image(data: bytes, limits: ImageLimits, min_side: int | None = None) -> Image.Image:
    """Decode an uploaded image by its content (the file name and declared type are ignored).

    Refuses, with an :class:`UploadError` carrying a message for the user: empty or oversized data, formats
    outside :data:`ALLOWED_FORMATS`, sides, pixel counts or aspect ratios beyond ``limits`` (checked from the
    header, before any pixel is decoded, so decompression bombs cost nothing), and corrupt or truncated files
    (fully decoded here). ``min_side``: the short side the caller needs; larger pictures are decoded at a
    reduced size where the format allows it (JPEG) and shrunk by an integer factor right after decoding.
    """
    if not data:
        raise UploadError(422, "the uploaded file is empty")
    if len(data) > limits.max_bytes:
        raise UploadError(413, f"upload too large: the limit is {_human(limits.max_bytes)}")
    try:
        with warnings.catch_warnings():
            # Our own pixel limit below is lower than PIL's; its bomb warning would only be log noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            _check_size(*img.size, limits)
            if min_side and img.format == "JPEG" and min(img.size) > 2 * min_side:
                scale = min(img.size) / min_side  # the decoder picks 1/2, 1/4 or 1/8, never below this size
                img.draft(img.mode, (int(img.width / scale) + 1, int(img.height / scale) + 1))
            img.load()
    except UploadError:
        raise
    except UnidentifiedImageError:
        raise UploadError(422, "not a supported image: upload a PNG, JPEG, WebP, GIF or BMP file") from None
    except Image.DecompressionBombError:
        raise UploadError(422, "the image is too large to decode safely") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, MemoryError):
        raise UploadError(422, "the image file is corrupt or truncated and cannot be decoded") from None
    factor = min(img.size) // min_side if min_side else 1
    if factor >= 2:
        try:
            img = img.reduce(factor)  # keeps info (EXIF orientation included); frees the full-size pixels
        except ValueError:  # a mode reduce does not handle (palette): pass it on at full size
            pass
    return img


def _check_size(width: int, height: int, limits: ImageLimits) -> None:
    if width <= 0 or height <= 0:
        raise UploadError(422, "the image has zero size")
    if max(width, height) > limits.max_side or max(width, height) > limits.max_aspect * min(width, height):
        raise UploadError(422, f"the image is {width}x{height} pixels; sides up to {limits.max_side} pixels and "
                               f"aspect ratios up to {limits.max_aspect:g}:1 are accepted")
    if width * height > limits.max_pixels:
        raise UploadError(
            422, f"the image is {width}x{height} pixels; the limit is {limits.max_pixels / 1e6:.0f} megapixels"
        )
