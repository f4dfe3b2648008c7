"""Inputs the fuzzing of the hardening issue found breaking things, each pinned down on the CPU path."""

import io

import numpy as np
import pytest
from PIL import Image

from shared import images
from shared.llm import collect
from shared.runtime import InputError


def test_a_16_bit_grayscale_png_keeps_its_tones(tmp_path):
    path = tmp_path / "gray16.png"
    Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)).save(path)  # mid-gray on a 16-bit scale
    pixels = np.asarray(images.load_rgb(path))
    assert 120 <= pixels.mean() <= 136, pixels.mean()


def test_exif_orientation_is_applied_as_a_viewer_shows_it(tmp_path):
    path = tmp_path / "portrait.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": a phone's portrait photo stored landscape
    Image.new("RGB", (64, 32), "red").save(path, exif=exif)
    assert images.load_rgb(path).size == (32, 64)


def test_huge_images_are_reduced_as_they_are_decoded(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("L", (12000, 9000), 90).save(path, optimize=True)
    image = images.load_rgb(path)
    assert max(image.size) <= images.MAX_INPUT_SIDE and image.size[0] / image.size[1] == pytest.approx(12000 / 9000, 0.01)


@pytest.mark.parametrize("temperature", [1e-45, 1e-7, 0.0])
def test_a_temperature_too_small_to_divide_by_is_greedy(temperature):
    import torch

    from shared.decode_engine import sample

    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    one = torch.ones(3)
    picked = sample(logits, torch.tensor([1, 2, 3]), torch.tensor([5, 5, 5]), one * temperature, one * 0.9)
    assert picked.tolist() == logits.argmax(-1).tolist()


def test_outputs_do_not_pile_up(tmp_path, monkeypatch):
    monkeypatch.setenv("COGDEPLOY_CACHE", str(tmp_path))
    first = images.save(Image.new("RGB", (8, 8)), "png", 90)
    for _ in range(images.KEEP_OUTPUTS):
        last = images.save(Image.new("RGB", (8, 8)), "png", 90)
    assert last.exists() and not first.exists()
    assert len(list(last.parent.parent.rglob("*.png"))) == images.KEEP_OUTPUTS


def test_a_long_prompt_is_an_error_on_the_prompt(runners):
    runner = runners("smollm3-3b")
    with pytest.raises(InputError) as err:
        list(collect(runner.stream(messages=[{"role": "user", "content": "word " * 200_000}], max_new_tokens=8,
                                   temperature=0, top_p=0.9, seed=1)))
    assert err.value.field == "prompt" and "tokens" in str(err.value)


def test_a_long_system_prompt_is_an_error_on_the_system_prompt(runners):
    """Found by the fuzz (seed 11): a 100 kB system_prompt was reported as a too long `prompt`."""
    runner = runners("smollm3-3b")
    with pytest.raises(InputError) as err:
        list(collect(runner.stream(messages=[{"role": "user", "content": "What is in the picture?"}], max_new_tokens=8,
                                   temperature=0, top_p=0.9, seed=1, system_prompt="x" * 100_000)))
    assert err.value.field == "system_prompt" and "with the prompt" in str(err.value)


def test_an_integral_float_is_taken_as_the_integer(runners):
    runner = runners("smollm3-3b")
    text = "".join(collect(runner.stream(messages=[{"role": "user", "content": "hi"}], max_new_tokens=4.0,
                                         temperature=0, top_p=0.9, seed=1)))
    assert isinstance(text, str)
    flux = runners("flux-lora-txt2img")
    [path] = flux.run_and_save(prompt="a cat", trigger_word=None, seed=1, steps=2.0, guidance=3.5, output_format="png",
                               output_quality=90, call={"width": 128, "height": 128}, report={}, num_outputs=1.0)
    assert Image.open(io.BytesIO(path.read_bytes())).size == (128, 128)
