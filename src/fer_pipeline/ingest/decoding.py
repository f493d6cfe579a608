"""Image bytes to 48x48 grayscale pixels: JPEG/PNG of that size as is, anything else
converted (with ``convert``) or rejected with the reason."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

from fer_pipeline.classes import IMAGE_SIZE
from fer_pipeline.ingest.outcomes import _Rejected

AS_IS_FORMATS = ("JPEG", "PNG")


def decode_image(data: bytes, convert: bool) -> tuple[np.ndarray, str | None]:
    """Decode one image file to (48, 48) uint8.

    Args:
        data: the file's bytes.
        convert: make other sizes, modes and formats 48x48 grayscale instead of refusing them.

    Returns:
        The pixels and, when the image was converted, a note saying from what.

    Raises:
        _Rejected: the bytes are empty, not an image, corrupt, or need ``convert``.
    """
    if not data:
        raise _Rejected("empty file (0 bytes)")
    image = _open_image(data)
    try:
        image.load()
        upright = _upright(image)  # as a viewer shows it, whichever path it takes
    except Exception as exc:  # truncated or damaged data, decompression bombs, damaged EXIF
        raise _Rejected(f"corrupt {image.format} image: {exc}") from None
    width, height = image.size
    if image.format in AS_IS_FORMATS and upright.mode == "L" and upright.size == (IMAGE_SIZE, IMAGE_SIZE):
        return np.asarray(upright, dtype=np.uint8), None
    described = f"{image.format} {image.mode} {width}x{height}"
    if not convert:
        raise _Rejected(
            f"{described} image, expected {IMAGE_SIZE}x{IMAGE_SIZE} grayscale (mode L) JPEG or PNG; "
            "convert such images with --convert (the CLI) or allow_conversion=true (the pipeline)"
        )
    return _to_canonical(upright), f"converted from {described}"


def _upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says. A JPEG or PNG without EXIF (every
    FER-2013 image) skips PIL's EXIF parse: 15% of the real zip's read time."""
    if image.format in AS_IS_FORMATS and "exif" not in image.info:
        return image
    return ImageOps.exif_transpose(image)


def _open_image(data: bytes) -> Image.Image:
    """Open image bytes, trying JPEG and PNG first (fast path) and then every format."""
    for formats in (AS_IS_FORMATS, None):
        try:
            with warnings.catch_warnings():
                # PIL only warns between its limit and twice it; a warning would print PIL's text and go on.
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                return Image.open(io.BytesIO(data), formats=formats)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _Rejected(f"image too large to decode safely: {str(exc).rstrip('.')}") from None
        except Exception:  # PIL raises several types for unreadable headers
            continue
    raise _Rejected("not an image (no image format recognises its contents)")


def _to_canonical(image: Image.Image) -> np.ndarray:
    """Any PIL image, already EXIF-rotated, as 48x48 uint8 grayscale: centre-cropped to square, resized."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):
        # 16-bit grayscale: PIL's convert("L") clips instead of scaling.
        wide = np.asarray(image).astype(np.int64)
        scale = 257 if wide.max() > 255 else 1
        image = Image.fromarray(np.clip(wide // scale, 0, 255).astype(np.uint8), mode="L")
    gray = image.convert("L")
    if gray.size != (IMAGE_SIZE, IMAGE_SIZE):
        gray = ImageOps.fit(gray, (IMAGE_SIZE, IMAGE_SIZE), method=Image.Resampling.LANCZOS)
    return np.asarray(gray, dtype=np.uint8)
