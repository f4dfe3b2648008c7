"""Image input decoding, model-accepted sizes and output formats."""

import io

import pytest
from PIL import Image

from shared import images
from shared.images import fit_size, load_rgb, save
from shared.runtime import InputError


@pytest.mark.parametrize("size,expected", [((768, 768), (768, 768)), ((1000, 750), (1008, 752)),
                                           ((4000, 3000), (1440, 1088)), ((100, 80), (320, 256)),
                                           ((128, 96), (336, 256)), ((5000, 100), (1440, 256))])
def test_sizes_are_rounded_to_multiples_of_16_within_limits(size, expected):
    assert fit_size(*size, multiple=16, max_side=1440, min_side=256) == expected


def test_large_images_shrink_keeping_their_aspect_ratio():
    w, h = fit_size(2880, 1440, multiple=16, max_side=1440, min_side=256)
    assert (w, h) == (1440, 720)


def test_small_images_grow_keeping_their_aspect_ratio():
    # Raising each side to the minimum on its own turned a 4:3 image square (128x96 -> 256x256).
    for width, height in ((128, 96), (96, 128), (320, 240), (200, 100)):
        w, h = fit_size(width, height, multiple=16, max_side=1440, min_side=256)
        assert min(w, h) == 256 and abs(w / h - width / height) < 0.05 * width / height, (width, height, w, h)


@pytest.mark.parametrize("fmt,magic", [("png", b"\x89PNG"), ("webp", b"RIFF"), ("jpg", b"\xff\xd8")])
def test_outputs_are_written_in_the_asked_format(fmt, magic):
    path = save(Image.new("RGB", (64, 64), "teal"), fmt, 80)
    assert path.suffix == f".{fmt}" and path.read_bytes()[:4].startswith(magic[:4])
    assert Image.open(path).size == (64, 64)


def test_quality_changes_lossy_outputs():
    noisy = Image.effect_noise((128, 128), 60).convert("RGB")
    assert save(noisy, "jpg", 95).stat().st_size > save(noisy, "jpg", 20).stat().st_size


def test_an_undecodable_image_names_the_field(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(InputError, match="^image: could not be decoded"):
        load_rgb(bad)


def test_images_are_converted_to_rgb(tmp_path):
    buf = io.BytesIO()
    Image.new("RGBA", (20, 20), (255, 0, 0, 128)).save(buf, "PNG")
    path = tmp_path / "a.png"
    path.write_bytes(buf.getvalue())
    assert load_rgb(path).mode == "RGB"


@pytest.mark.parametrize("ratio", images.ASPECT_RATIOS)
def test_aspect_ratios_give_about_one_megapixel_in_their_shape_within_flux_bounds(ratio):
    w, h = images.size_for_aspect_ratio(ratio, megapixels=1.0, multiple=16, max_side=1440, min_side=256)
    across, down = (int(n) for n in ratio.split(":"))
    assert w % 16 == 0 and h % 16 == 0 and 256 <= min(w, h) and max(w, h) <= 1440
    assert abs((w / h) / (across / down) - 1) < 0.03  # the shape survives rounding to 16 and the 1440 cap
    assert 0.85e6 < w * h < 1.1e6 or max(w, h) == 1440  # 21:9 hits the cap before one megapixel


def test_an_unknown_aspect_ratio_names_the_input():
    with pytest.raises(InputError, match="aspect_ratio"):
        images.size_for_aspect_ratio("2:1", megapixels=1.0, multiple=16, max_side=1440, min_side=256)


def test_pixels_made_from_the_pipelines_tensor_are_diffusers_own_pil_bytes():
    """shared/flux.py asks the pipeline for output_type="pt" and makes the 8-bit image itself (on the GPU where it
    runs): the bytes must be those diffusers' "pil" output gives, ties at .5 included."""
    import torch
    from diffusers.image_processor import VaeImageProcessor

    from shared.images import to_pil

    processor = VaeImageProcessor(vae_scale_factor=16)
    torch.manual_seed(0)
    decoded = torch.randn(1, 3, 64, 48, dtype=torch.bfloat16)
    decoded[0, 0, 0, :5] = torch.tensor([-1.0, 1.0, 1 / 255 - 1, 3 / 255 - 1, 0.0])  # edges and .5 ties
    theirs = processor.postprocess(decoded, output_type="pil")[0]
    ours = to_pil(processor.postprocess(decoded, output_type="pt")[0])
    assert ours.mode == theirs.mode == "RGB" and ours.size == theirs.size == (48, 64)
    assert ours.tobytes() == theirs.tobytes()
