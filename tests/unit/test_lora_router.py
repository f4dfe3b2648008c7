"""LoraTriggerRouter: trigger words pick adapters, hot-swapped into one slot, without recompiling."""

import numpy as np
import pytest
import torch

from shared import catalog
from shared.lora_router import BASE, SLOT, LoraTriggerRouter, load_normalized
from shared.runtime import InputError

ROUTER = LoraTriggerRouter(catalog.STYLE_LORAS)


@pytest.mark.parametrize("word,adapter", [("Anime", "open_image_preferences"), ("anime", "open_image_preferences"),
                                          ("  3d model ", "open_image_preferences"), ("GHIBSKY", "ghibsky"),
                                          ("ghibsky", "ghibsky")])
def test_trigger_words_are_case_insensitive_and_exact(word, adapter):
    assert ROUTER.route(word).lora.name == adapter


@pytest.mark.parametrize("word", [None, "", "   "])
def test_no_trigger_routes_to_the_base_model(word):
    route = ROUTER.route(word)
    assert route.lora is None and route.apply_to("a cat") == "a cat"


@pytest.mark.parametrize("word", ["Vaporwave", "anim", "Ghibli"])
def test_unknown_trigger_is_an_input_error_listing_valid_ones(word):
    with pytest.raises(InputError) as err:
        ROUTER.route(word)
    assert err.value.field == "trigger_word"
    assert "GHIBSKY" in str(err.value) and "Pixel art" in str(err.value)


def test_trigger_text_goes_in_front_of_the_prompt_in_canonical_spelling():
    assert ROUTER.route("pixel ART").apply_to("a cat") == "Pixel art, a cat"
    assert ROUTER.route("ghibsky").apply_to("a cat") == "GHIBSKY style, a cat"


def test_two_loras_may_not_claim_one_trigger():
    lora = catalog.STYLE_LORAS[1]
    with pytest.raises(ValueError, match="claimed"):
        LoraTriggerRouter((lora, lora))


# -- on a real (tiny) FLUX pipeline -------------------------------------------------------------

def _image(runner, trigger, seed=7, size=(256, 256)):
    route = runner.router.route(trigger)
    image, _ = runner.generate_image({"prompt": route.apply_to("a cat"), "width": size[0], "height": size[1]},
                                     steps=2, guidance=3.5, seed=seed, route=route)
    return np.asarray(image).astype(np.int16)


@pytest.fixture(scope="module")
def flux(runners):
    return runners("flux-lora-txt2img")


def test_two_loras_give_different_pixels(flux):
    anime, ghibsky = _image(flux, "Anime"), _image(flux, "GHIBSKY")
    assert np.abs(anime - ghibsky).mean() > 1.0


def test_swapping_back_reproduces_the_same_pixels(flux):
    first = _image(flux, "GHIBSKY")
    _image(flux, "Anime")
    assert np.array_equal(first, _image(flux, "GHIBSKY"))


def test_no_trigger_is_exactly_the_base_model(flux):
    """The zero adapter adds nothing: same pixels as the pipeline with every LoRA layer bypassed."""
    with_zero_adapter = _image(flux, None)
    assert flux.router.active == BASE
    flux.pipe.transformer.disable_lora()  # no-compile runner: bypassing the layers is allowed here
    try:
        g = torch.Generator("cpu").manual_seed(7)
        bare = flux.pipe(prompt="a cat", width=256, height=256, num_inference_steps=2, guidance_scale=3.5, generator=g,
                         max_sequence_length=flux.max_sequence_length).images[0]
    finally:
        flux.pipe.transformer.enable_lora()
    assert np.array_equal(with_zero_adapter, np.asarray(bare).astype(np.int16))


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_a_swap_gives_the_pixels_of_diffusers_own_hot_swap(flux, scale):
    """The router copies adapters into the slot itself (diffusers' load path took 250-280 ms a swap on an
    H200); the result must be exactly what peft's hotswap through load_lora_weights makes."""
    route = flux.router.route("GHIBSKY")

    def image():
        pixels, _ = flux.generate_image({"prompt": route.apply_to("a cat"), "width": 256, "height": 256}, steps=2,
                                        guidance=3.5, seed=7, route=route, lora_scale=scale)
        return np.asarray(pixels).astype(np.int16)

    flux.router.activate(flux.router.route(None))
    ours = image()
    reference = {k: v * scale if ".lora_B." in k else v.clone() for k, v in flux.router.state_dict("ghibsky").items()}
    flux.router.activate(flux.router.route(None))
    flux.pipe.load_lora_weights(reference, adapter_name=SLOT, hotswap=True)
    flux.router._active = ("ghibsky", scale)  # what the slot now holds, so that image() does not swap again
    assert np.array_equal(ours, image())
    assert np.abs(ours - _image(flux, None)).mean() > 1.0, "the style must change the pixels"


def _compiled(monkeypatch, optimize="compile=on"):
    """A txt2img runner set up through its real compile path, with a backend that counts every graph."""
    from torch._dynamo.testing import CompileCounter

    from shared import compile as selective_compile
    from tests.conftest import load_runner

    counter = CompileCounter()
    monkeypatch.setenv("OPTIMIZE", optimize)
    monkeypatch.setattr(selective_compile, "default_backend", lambda: counter)
    torch._dynamo.reset()
    runner = load_runner("flux-lora-txt2img")
    runner.setup()
    return runner, counter


def compiled_once(optimize: str):
    """`_compiled` for a module-scoped fixture (OPTIMIZE set for this setup only)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        return _compiled(monkeypatch, optimize)


def assert_styles_swap_exactly_without_recompiling(runner, counter) -> None:
    """Two styles and none give three images, a style comes back byte for byte, and no swap recompiles."""
    first = _image(runner, "GHIBSKY")
    graphs = counter.frame_count
    anime, none = _image(runner, "Anime"), _image(runner, None)
    assert np.abs(anime - first).mean() > 1.0 and np.abs(anime - none).mean() > 1.0
    assert np.array_equal(first, _image(runner, "GHIBSKY"))
    assert counter.frame_count == graphs


def assert_near_the_16_bit_image(runner, runners) -> None:
    """Same weights, prompt and seed: the image is far nearer the plain 16-bit model's than another seed's."""
    full = runners("flux-lora-txt2img")
    assert full.options["transformer"] == "none"
    ours, reference, other_seed = _image(runner, "Anime"), _image(full, "Anime"), _image(full, "Anime", seed=8)
    assert np.abs(ours - reference).mean() < 0.25 * np.abs(other_seed - reference).mean()


@pytest.fixture()
def compiled(monkeypatch):
    return _compiled(monkeypatch)


def test_hot_swap_never_recompiles_a_compiled_transformer(compiled):
    runner, counter = compiled
    _image(runner, None)
    graphs = counter.frame_count
    assert graphs >= 2, "both repeated block classes should have been compiled"
    outputs = [_image(runner, t) for t in ("Anime", "GHIBSKY", None, "Cinematic")]
    # Every trigger (adapters of rank 8 on 342 layers and rank 16 on 494, as published), in both orders,
    # with the base model between: one slot, plain copies, no recompile.
    triggers = runner.router.triggers
    for trigger in [*triggers, None, *reversed(triggers), None, "GHIBSKY"]:
        _image(runner, trigger, size=(128, 128))
    assert counter.frame_count == graphs, "a LoRA swap recompiled the transformer"
    assert not np.array_equal(outputs[0], outputs[1])
    assert np.abs(outputs[0] - outputs[2]).mean() > 1.0
    assert np.array_equal(outputs[1], _image(runner, "GHIBSKY")), "swapping back reproduces the style"


def test_the_recompile_check_can_fail(compiled):
    """Counterpart of the test above: unloading the adapter (what the router avoids) does recompile."""
    runner, counter = compiled
    _image(runner, "Anime")
    graphs = counter.frame_count
    runner.pipe.transformer.disable_lora()
    _image(runner, "Anime")
    assert counter.frame_count > graphs


def test_new_image_sizes_never_recompile(compiled):
    """The default `shapes=dynamic` compiles one size-generic graph: img2img sizes follow the input."""
    runner, counter = compiled
    _image(runner, "Anime")
    graphs = counter.frame_count
    for size in ((384, 256), (256, 512), (320, 320)):
        assert _image(runner, "Anime", size=size).shape == (size[1], size[0], 3)
    assert counter.frame_count == graphs, "a new image size recompiled the transformer"


def test_size_specialized_compile_does_recompile(monkeypatch):
    """Counterpart: torch's default (shapes=auto) compiles again on the first new size."""
    runner, counter = _compiled(monkeypatch, "compile=on,shapes=auto")
    _image(runner, "Anime")
    graphs = counter.frame_count
    _image(runner, "Anime", size=(384, 256))
    assert counter.frame_count > graphs


def test_alpha_and_scale_are_baked_into_the_weights(tmp_path, flux):
    """A LoRA with alpha != rank, loaded normally, equals our normalized (scaling-1) copy."""
    from diffusers import FluxPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    transformer = flux.pipe.transformer
    config = LoraConfig(r=4, lora_alpha=12, target_modules=["to_q"], init_lora_weights=False)
    transformer.add_adapter(config, adapter_name="probe")
    state = get_peft_model_state_dict(transformer, adapter_name="probe")
    transformer.delete_adapters("probe")
    FluxPipeline.save_lora_weights(tmp_path, transformer_lora_layers=state, safe_serialization=True,
                                   transformer_lora_adapter_metadata={"r": 4, "lora_alpha": 12, "target_modules": ["to_q"]})
    lora = catalog.STYLE_LORAS[0]
    normalized = load_normalized(FluxPipeline, str(tmp_path), lora, weight_name="pytorch_lora_weights.safetensors")
    key_b = next(k for k in normalized if "lora_B" in k)
    raw = {k.removeprefix("transformer."): v for k, v in FluxPipeline.lora_state_dict(
        str(tmp_path), weight_name="pytorch_lora_weights.safetensors").items()}
    torch.testing.assert_close(normalized[key_b], raw[key_b.removeprefix("transformer.")] * 3.0)


def test_the_prompt_is_encoded_once_for_all_images_and_gives_the_pixels_the_prompt_gives(flux):
    """num_outputs images share one T5 + CLIP pass (run_and_save), and the images are those the pipeline makes
    from the prompt itself, style applied (the LoRAs touch only the transformer)."""
    from PIL import Image

    calls = []
    hooks = [encoder.register_forward_hook(lambda module, args, out: calls.append(type(module).__name__))
             for encoder in (flux.pipe.text_encoder, flux.pipe.text_encoder_2)]
    try:
        paths = flux.run_and_save(prompt="a cat", trigger_word="Anime", seed=7, steps=2, guidance=3.5, output_format="png",
                                  output_quality=90, call={"width": 256, "height": 256}, report={}, num_outputs=3)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(paths) == 3 and sorted(calls) == ["CLIPTextModel", "T5EncoderModel"], calls
    for i, path in enumerate(paths):
        assert np.array_equal(np.asarray(Image.open(path)).astype(np.int16), _image(flux, "Anime", seed=7 + i))
