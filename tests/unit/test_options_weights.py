"""Optimization switches and weight profiles: defaults, overrides and clear errors."""

import pytest
import torch

from shared import catalog, options, weights
from shared.options import Option

SPEC = {"compile": Option("on", "off", ("on", "off"), ""), "prune": Option("none", "none", ("none", "magnitude:<amount>"), "")}


def test_defaults_depend_on_the_device():
    assert options.resolve(SPEC, cuda=True, override="")["compile"] == "on"
    assert options.resolve(SPEC, cuda=False, override="")["compile"] == "off"


def test_override_sets_named_options():
    chosen = options.resolve(SPEC, cuda=False, override="compile=on, prune=magnitude:0.25")
    assert chosen == {"compile": "on", "prune": "magnitude:0.25"}


@pytest.mark.parametrize("bad", ["speed=max", "compile=yes", "prune=magnitude:2", "prune=magnitude:x"])
def test_unknown_names_or_values_are_errors(bad):
    with pytest.raises(ValueError, match="OPTIMIZE"):
        options.resolve(SPEC, cuda=False, override=bad)


CKPT = catalog.SMOLLM3


@pytest.mark.parametrize("value,profile", [("tiny", "tiny"), ("synthetic", "synthetic"), ("hub", "hub")])
def test_profiles_by_name(value, profile):
    assert weights.resolve(CKPT, value).profile.value == profile


def test_default_profile_is_the_hub_checkpoint(monkeypatch):
    monkeypatch.delenv("WEIGHT_PROFILE", raising=False)
    source = weights.resolve(CKPT)
    assert source.profile is weights.WeightProfile.HUB
    assert source.from_pretrained_kwargs["revision"] == CKPT.revision


def test_a_local_folder_is_a_profile(tmp_path):
    source = weights.resolve(CKPT, str(tmp_path))
    assert source.profile is weights.WeightProfile.LOCAL and source.from_pretrained_kwargs == {"local_files_only": True}


def test_anything_else_is_a_clear_error():
    with pytest.raises(ValueError, match="WEIGHT_PROFILE='huge'"):
        weights.resolve(CKPT, "huge")


def test_hub_token_is_read_from_the_environment_and_never_described(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    source = weights.resolve(CKPT, "hub")
    assert source.from_pretrained_kwargs["token"] == "hf_secret_value"
    assert "hf_secret_value" not in source.describe() and "hf_secret_value" not in repr(source)


# -- the hub loading code, against local checkpoint folders -----------------------------------------

def test_causal_lm_loads_from_a_local_checkpoint_folder(tmp_path):
    from shared.builders.text import build_random_causal_lm, load_causal_lm

    dep = catalog.get("phi4-reasoning-plus")
    model, tok = build_random_causal_lm(dep, tiny=True, device="cpu", dtype=torch.float32)
    model.save_pretrained(tmp_path), tok.save_pretrained(tmp_path)
    loaded, tok2 = load_causal_lm(dep, weights.resolve(dep.checkpoint, str(tmp_path)), device="cpu", dtype=torch.float32)
    ids = tok("hello", return_tensors="pt").input_ids
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    assert tok2.chat_template == tok.chat_template


def test_gemma3_loads_from_a_local_checkpoint_folder(tmp_path):
    from PIL import Image

    from shared.builders.text import build_random_gemma3, load_gemma3

    dep = catalog.get("gemma3-4b-it")
    model, proc = build_random_gemma3(dep, tiny=True, device="cpu", dtype=torch.float32)
    model.save_pretrained(tmp_path), proc.save_pretrained(tmp_path)
    loaded, proc2 = load_gemma3(dep, weights.resolve(dep.checkpoint, str(tmp_path)), device="cpu", dtype=torch.float32)
    prompt = proc.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}],
                                      add_generation_prompt=True, tokenize=False)
    inputs = proc2(text=prompt, images=[Image.new("RGB", (64, 64), "red")], return_tensors="pt")
    torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits)


def test_flux_pipeline_and_loras_load_from_a_local_checkpoint_folder(tmp_path):
    """A local folder in the Hub layout (plus loras/<name>/) loads the same pipeline the hub profile would."""

    from diffusers import FluxPipeline

    from shared.builders import flux as flux_builder
    from shared.builders.loras import write_random_lora
    from shared.lora_router import load_normalized

    dep = catalog.get("flux-lora-txt2img")
    pipe = flux_builder.build_random(dep, tiny=True, device="cpu", dtype=torch.float32, pipeline_cls=FluxPipeline)
    pipe.save_pretrained(tmp_path)
    lora = catalog.STYLE_LORAS[1]
    write_random_lora(FluxPipeline, pipe.transformer, lora, 1, tmp_path / "loras", magnitude=1.0)
    source = weights.resolve(catalog.FLUX_DEV, str(tmp_path))
    loaded = flux_builder.load(dep, source, device="cpu", dtype=torch.float32, pipeline_cls=FluxPipeline)
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        a, b = getattr(pipe, name).state_dict(), getattr(loaded, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    location, kwargs = source.lora_location(lora)
    adapter = load_normalized(FluxPipeline, location, lora, **kwargs)
    assert adapter and all(k.startswith("transformer.") for k in adapter)


def test_the_low_memory_load_brings_the_transformer_in_last_and_alone(tmp_path, monkeypatch):
    """transformer=nf4: the checkpoint is read in two parts, the rest first (already on its device, here
    "meta" to tell the places apart), then the transformer into host memory: host memory never holds both
    T5 and the 16-bit transformer (shared/builders/flux.py `load`)."""
    from diffusers import FluxPipeline, FluxTransformer2DModel

    from shared.builders import flux as flux_builder

    dep = catalog.get("flux-lora-txt2img")
    pipe = flux_builder.build_random(dep, tiny=True, device="cpu", dtype=torch.float32, pipeline_cls=FluxPipeline)
    pipe.save_pretrained(tmp_path)
    source = weights.resolve(catalog.FLUX_DEV, str(tmp_path))
    order = []
    real_pipeline, real_transformer = FluxPipeline.from_pretrained.__func__, FluxTransformer2DModel.from_pretrained.__func__

    def pipeline_load(cls, *args, **kwargs):
        order.append(("pipeline", "transformer" in kwargs and kwargs["transformer"] is None))
        return real_pipeline(cls, *args, **kwargs)

    def transformer_load(cls, *args, **kwargs):
        order.append(("transformer", kwargs.get("subfolder")))
        return real_transformer(cls, *args, **kwargs)

    monkeypatch.setattr(FluxPipeline, "from_pretrained", classmethod(pipeline_load))
    monkeypatch.setattr(FluxTransformer2DModel, "from_pretrained", classmethod(transformer_load))
    loaded = flux_builder.load(dep, source, device="meta", dtype=torch.float32, pipeline_cls=FluxPipeline,
                               transformer_device="cpu")
    assert order == [("pipeline", True), ("transformer", "transformer")]
    for name in ("vae", "text_encoder", "text_encoder_2"):
        assert {p.device.type for p in getattr(loaded, name).parameters()} == {"meta"}, name
    a, b = pipe.transformer.state_dict(), loaded.transformer.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.components["transformer"] is loaded.transformer
