"""Image input and output: decoding user images, sizes the model accepts, saving in the asked format."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from .runtime import InputError, cache_dir, make_room

OUTPUT_FORMATS = ("png", "webp", "jpg")
_PIL_FORMAT = {"png": "PNG", "webp": "WEBP", "jpg": "JPEG"}
# Inputs larger than this are reduced as they are decoded: no model here takes more than 1440 px a side,
# and a 12000 x 12000 PNG (410 KB on the wire) held 3.6 GB in the worker.
MAX_INPUT_SIDE = 4096
# Output images kept on disk per process: the server has read every earlier one by the time it answered,
# so a long-running container keeps a few files, not one folder per prediction. At least a request's images
# (FLUX: num_outputs, up to 4), which must all still be there when the server reads them.
KEEP_OUTPUTS = 8


def sent_file(value, field: str = "image") -> Path:
    """The file a client sent. Cog hands an upload, a data: URI or an http(s) URL to run() as a Path to a file
    it wrote in the temp folder; any other text arrives as a plain string, a path on this server, which must
    never be read (it made /etc/passwd an input, and the errors told which files exist). Refused unseen."""
    path = Path(value) if isinstance(value, os.PathLike) else None
    if path is None or Path(tempfile.gettempdir()).resolve() not in path.resolve().parents:
        raise InputError(field, "must be an uploaded file, a data: URI or an http(s) URL (PNG, JPEG or WebP)")
    return path


def load_rgb(path, field: str = "image") -> Image.Image:
    """The image as a viewer shows it (EXIF orientation applied, 16-bit tones scaled, not clipped), in RGB,
    at most MAX_INPUT_SIDE a side."""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (MAX_INPUT_SIDE, MAX_INPUT_SIDE))  # JPEG: decode at a reduced scale directly
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I", "I;16", "I;16B", "I;16L"):  # 16-bit grayscale: RGB conversion would clip at 255
                img = img.convert("I").point(lambda v: v * (1 / 256)).convert("L")
            img.thumbnail((MAX_INPUT_SIDE, MAX_INPUT_SIDE), reducing_gap=2.0)
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(field, f"could not be decoded as an image ({e.__class__.__name__}); send a PNG, JPEG or WebP") from e


def fit_size(width: int, height: int, *, multiple: int, max_side: int, min_side: int) -> tuple[int, int]:
    """The nearest size the model accepts: sides a multiple of `multiple`, within [min_side, max_side],
    keeping the aspect ratio when the image has to shrink or grow (a 128x96 input became 256x256 when only
    each side was raised; an aspect beyond max_side:min_side cannot be kept and is clamped)."""
    scale = max_side / max(width, height)
    if scale >= 1.0:  # not too large: grow only as far as the short side needs
        scale = min(scale, max(1.0, min_side / min(width, height)))
    w, h = width * scale, height * scale
    # Half rounds up (not to even), so e.g. 1000 -> 1008 like 1016 -> 1024.
    w = max(min_side, int(w / multiple + 0.5) * multiple)
    h = max(min_side, int(h / multiple + 0.5) * multiple)
    return min(w, max_side), min(h, max_side)


ASPECT_RATIOS = ("1:1", "16:9", "9:16", "21:9", "9:21", "3:2", "2:3", "4:3", "3:4", "5:4", "4:5")


def size_for_aspect_ratio(ratio: str, *, megapixels: float, multiple: int, max_side: int,
                          min_side: int) -> tuple[int, int]:
    """About `megapixels` in the shape `ratio` ("16:9"), as fit_size rounds and bounds it (cog-flux's inputs)."""
    if ratio not in ASPECT_RATIOS:
        raise InputError("aspect_ratio", f"{ratio!r} is not one of custom, {', '.join(ASPECT_RATIOS)}")
    across, down = (int(n) for n in ratio.split(":"))
    width = (megapixels * 1e6 * across / down) ** 0.5
    return fit_size(round(width), round(width * down / across), multiple=multiple, max_side=max_side, min_side=min_side)


def to_pil(image) -> Image.Image:
    """A pipeline's `output_type="pt"` image (3 x H x W in [0, 1], on its device) as PIL, its 8-bit pixels
    made where it lies: on a GPU, 3 MB comes to the host for a 1024x1024 image instead of the float array
    diffusers' own "pil" output converts on the CPU (~44 ms there on this repo's CPU machine). The same
    float32 arithmetic as diffusers' `numpy_to_pil` (x 255, round half to even), so the same bytes."""
    import torch

    pixels = (image.float() * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(pixels)


def png_text(parameters: dict, prompt: str) -> PngInfo:
    """How the image was made, in the PNG text chunks image tools read: `parameters` in the AUTOMATIC1111
    layout (the prompt, then `Key: value, ...`), and the same values as JSON under `generation`."""
    chunks = PngInfo()
    chunks.add_text("parameters", prompt + "\n" + ", ".join(f"{k}: {v}" for k, v in parameters.items()), zip=True)
    chunks.add_text("generation", json.dumps({"prompt": prompt, **parameters}), zip=True)
    return chunks


def save(image: Image.Image, output_format: str, output_quality: int, stem: str = "output",
         pnginfo: PngInfo | None = None) -> Path:
    """Write the image to a fresh file; quality applies to lossy formats (webp, jpg), PNG is lossless and
    carries `pnginfo` (png_text)."""
    if output_format not in _PIL_FORMAT:
        raise InputError("output_format", f"{output_format!r} is not one of {', '.join(OUTPUT_FORMATS)}")
    root = cache_dir() / "outputs" / str(os.getpid())
    root.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix=make_room(root, KEEP_OUTPUTS), dir=root)) / f"{stem}.{output_format}"
    # PNG at zlib level 1, not PIL's 6: a 1024x1024 image encodes in 125 ms instead of 171 (6% more bytes).
    kwargs = {"pnginfo": pnginfo, "compress_level": 1} if output_format == "png" else {"quality": int(output_quality)}
    image.save(out, _PIL_FORMAT[output_format], **kwargs)
    return out
