"""Image input and output: decoding user images, sizes the model accepts, saving in the asked format."""

from __future__ import annotations

import tempfile
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .runtime import InputError

OUTPUT_FORMATS = ("png", "webp", "jpg")
_PIL_FORMAT = {"png": "PNG", "webp": "WEBP", "jpg": "JPEG"}


def load_rgb(path, field: str = "image") -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(field, f"could not be decoded as an image ({e.__class__.__name__}); send a PNG, JPEG or WebP") from e


def fit_size(width: int, height: int, *, multiple: int, max_side: int, min_side: int) -> tuple[int, int]:
    """The nearest size the model accepts: sides a multiple of `multiple`, within [min_side, max_side],
    keeping the aspect ratio when the image has to shrink."""
    scale = min(1.0, max_side / max(width, height))
    w, h = width * scale, height * scale
    # Half rounds up (not to even), so e.g. 1000 -> 1008 like 1016 -> 1024.
    w = max(min_side, int(w / multiple + 0.5) * multiple)
    h = max(min_side, int(h / multiple + 0.5) * multiple)
    return min(w, max_side), min(h, max_side)


def save(image: Image.Image, output_format: str, output_quality: int, stem: str = "output") -> Path:
    """Write the image to a fresh file; quality applies to lossy formats (webp, jpg), PNG is lossless."""
    if output_format not in _PIL_FORMAT:
        raise InputError("output_format", f"{output_format!r} is not one of {', '.join(OUTPUT_FORMATS)}")
    out = Path(tempfile.mkdtemp(prefix="cogout-")) / f"{stem}.{output_format}"
    kwargs = {} if output_format == "png" else {"quality": int(output_quality)}
    image.save(out, _PIL_FORMAT[output_format], **kwargs)
    return out
