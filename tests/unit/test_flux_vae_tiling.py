"""`OPTIMIZE=vae=tiled` (shared/flux.tile_vae_decode), tiny FLUX on CPU: the decode runs in several tiles,
and the image stays near the one-pass decode's (far nearer than another seed's)."""

import numpy as np
import pytest

from shared import flux as flux_module
from tests.unit.test_lora_router import _image


def _decoder_calls(runner):
    calls = []
    decoder = runner.pipe.vae.decoder
    forward = decoder.forward
    decoder.forward = lambda *a, **k: calls.append(a[0].shape) or forward(*a, **k)
    return calls


@pytest.fixture(scope="module")
def tiled():
    from tests.conftest import load_runner

    with pytest.MonkeyPatch.context() as monkeypatch:
        # 128 px tiles, so the tiny model's 256 px image is decoded as FLUX's 1024 one is with 512 px tiles
        monkeypatch.setattr(flux_module, "VAE_TILE_PX", 128)
        monkeypatch.setenv("OPTIMIZE", "vae=tiled")
        runner = load_runner("flux-lora-txt2img")
        runner.setup()
    return runner


def test_the_decode_runs_in_tiles_of_the_set_size(tiled, runners):
    assert tiled.pipe.vae.use_tiling and not runners("flux-lora-txt2img").pipe.vae.use_tiling
    calls = _decoder_calls(tiled)
    _image(tiled, "Anime")
    assert len(calls) == 9 and max(shape[-1] for shape in calls) == 128 // 8  # 3x3 overlapping tiles
    full = runners("flux-lora-txt2img")
    calls = _decoder_calls(full)
    _image(full, "Anime")
    assert [shape[-1] for shape in calls] == [256 // 8]


def test_the_tiled_image_stays_near_the_one_pass_decode(tiled, runners):
    full = runners("flux-lora-txt2img")
    assert full.options["vae"] == "full"
    ours, reference, other_seed = _image(tiled, "Anime"), _image(full, "Anime"), _image(full, "Anime", seed=8)
    assert not np.array_equal(ours, reference)  # tiles blend at their seams: not the same bytes
    assert np.abs(ours - reference).mean() < 0.25 * np.abs(other_seed - reference).mean()


def test_img2img_encodes_and_decodes_in_tiles_near_the_one_pass_image(runners):
    """img2img's VAE encodes the input image too: tiled as well past the tile size."""
    from PIL import Image

    from tests.conftest import load_runner

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(flux_module, "VAE_TILE_PX", 128)
        monkeypatch.setenv("OPTIMIZE", "vae=tiled")
        tiled = load_runner("flux-lora-img2img")
        tiled.setup()
    source = Image.new("RGB", (256, 256), "teal")
    encoder = tiled.pipe.vae.encoder
    encoded, forward = [], encoder.forward
    encoder.forward = lambda *a, **k: encoded.append(a[0].shape) or forward(*a, **k)

    def image(runner, seed=7):
        route = runner.router.route("Anime")
        pixels, _ = runner.generate_image({"prompt": route.apply_to("a cat"), "image": source, "strength": 0.7,
                                           "width": 256, "height": 256}, steps=3, guidance=3.5, seed=seed, route=route)
        return np.asarray(pixels).astype(np.int16)

    full = runners("flux-lora-img2img")
    ours, reference, other_seed = image(tiled), image(full), image(full, seed=8)
    assert ours.shape == reference.shape == (256, 256, 3)
    assert len(encoded) == 9 and max(shape[-1] for shape in encoded) == 128
    assert not np.array_equal(ours, reference)
    assert np.abs(ours - reference).mean() < 0.25 * np.abs(other_seed - reference).mean()
