"""Chat models for each weight profile, built from the vendored configs and chat templates.

tiny: the real architecture (every flag of the published config) at toy widths and depths, seeded
random weights, a small trained BPE tokenizer carrying the model's special tokens and real chat
template. synthetic: the full-size config with random weights on the GPU. hub / local: the checkpoint.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch

from ..catalog import Deployment
from ..weights import WeightSource
from . import materialize_on
from .tokenizers import chat_tokenizer


@dataclass(frozen=True)
class ChatSpec:
    """What a tiny tokenizer for this model must carry, and how the real one treats it."""

    special_tokens: tuple[str, ...]
    bos: str | None
    eos: str
    pad: str
    stop: tuple[str, ...] = ()  # extra end-of-turn tokens generation stops on
    extra: tuple[tuple[str, str], ...] = ()  # named special tokens (e.g. Gemma's image tokens)
    plain: tuple[str, ...] = ()  # single tokens that are not special (kept by skip_special_tokens)
    adds_bos: bool = False  # whether encoding puts BOS in front


CHAT_SPECS = {
    # SmolLM3-3B tokenizer_config.json (a07cc9a): <think>/</think> are added tokens with "special": false;
    # bos_token null, so nothing is put in front; <|im_end|> is the eos.
    "smollm3": ChatSpec(("<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"),
                        bos=None, eos="<|im_end|>", pad="<|im_end|>", plain=("<think>", "</think>")),
    # Phi-4-reasoning-plus: no tokenizer_config.json could be read offline (docs/models.md), so the think tags
    # stay special here: the other case from SmolLM3's, and the one that hides them if handled wrong. Its
    # turns end with <|im_end|> whatever the eos is.
    "phi3": ChatSpec(("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|im_sep|>", "<think>", "</think>", "<|dummy_85|>"),
                     bos="<|endoftext|>", eos="<|im_end|>", pad="<|dummy_85|>", stop=("<|im_end|>",)),
    # Gemma 3's tokenizer puts <bos> in front of every encoding (add_bos_token), and its chat template starts
    # with {{ bos_token }} as well.
    "gemma3": ChatSpec(("<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>",
                        "<image_soft_token>"), bos="<bos>", eos="<eos>", pad="<pad>", stop=("<end_of_turn>",),
                       extra=(("boi_token", "<start_of_image>"), ("eoi_token", "<end_of_image>"),
                              ("image_token", "<image_soft_token>")), adds_bos=True),
}

# Toy sizes that keep each architecture's shape: grouped-query ratios, SmolLM3's every-4th-layer NoPE,
# Gemma's 5-local:1-global attention pattern (6 layers), head_dim set explicitly where the real one is.
TINY = {
    "smollm3": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                    num_key_value_heads=1),
    "phi3": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=1),
    "gemma3_text": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=6, num_attention_heads=2,
                        num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32, sliding_window=16),
    "siglip_vision_model": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                image_size=56, patch_size=14),
}
TINY_MM_TOKENS_PER_IMAGE = 4  # 4x4 patches pooled 2x2, as 64x64 patches pool 4x4 to 256 tokens at full size


def _read(dep: Deployment, name: str):
    path = dep.checkpoint.assets_dir / name
    return json.loads(path.read_text()) if name.endswith(".json") else path.read_text()


def _shrink(cfg: dict, tiny: bool) -> dict:
    if not tiny:
        # SYNTHETIC_NUM_LAYERS: a full-width model with fewer layers, where a device run cannot afford
        # all of them (per-layer cost is what decode speed measures; the benchmark reports the count).
        layers = os.environ.get("SYNTHETIC_NUM_LAYERS")
        if not layers or "num_hidden_layers" not in cfg:
            return cfg
        cfg = {**cfg, "num_hidden_layers": int(layers)}
    else:
        cfg = {**cfg, **TINY[cfg["model_type"]]}
    n = cfg["num_hidden_layers"]
    for per_layer in ("layer_types", "no_rope_layers"):
        if per_layer in cfg:
            cfg[per_layer] = cfg[per_layer][:n]
    return cfg


def chat_template(dep: Deployment) -> str:
    return _read(dep, "chat_template.jinja")


def tokenizer_for(dep: Deployment, model_type: str | None = None):
    """The deployment's chat tokenizer (its vendored chat template set); `model_type` defaults to its config's."""
    spec = CHAT_SPECS[model_type or _read(dep, "config.json")["model_type"]]
    return chat_tokenizer(list(spec.special_tokens), bos=spec.bos, eos=spec.eos, pad=spec.pad,
                          chat_template=chat_template(dep), plain_tokens=spec.plain, adds_bos=spec.adds_bos,
                          extra={"extra_special_tokens": dict(spec.extra)} if spec.extra else None)


def stop_token_ids(tokenizer, model_type: str) -> list[int]:
    ids = [tokenizer.eos_token_id] + [tokenizer.convert_tokens_to_ids(t) for t in CHAT_SPECS[model_type].stop]
    return sorted({i for i in ids if i is not None and i != tokenizer.unk_token_id})


def build_random_causal_lm(dep: Deployment, *, tiny: bool, device: str, dtype: torch.dtype):
    """(model, tokenizer) for a decoder-only chat model with random weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    skip = ("architectures", "transformers_version", "torch_dtype")
    raw = {k: v for k, v in _read(dep, "config.json").items() if k not in skip}
    tok = tokenizer_for(dep, raw["model_type"])
    cfg = _shrink(raw, tiny)
    cfg.update(vocab_size=len(tok) if tiny else max(cfg["vocab_size"], len(tok)),
               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    torch.manual_seed(0)
    with materialize_on(device, dtype):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval(), tok


def build_random_gemma3(dep: Deployment, *, tiny: bool, device: str, dtype: torch.dtype):
    """(model, processor) for Gemma 3 (SigLIP tower + projector + Gemma 3 text) with random weights."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor

    raw = _read(dep, "config.json")
    tok = tokenizer_for(dep, "gemma3")
    text = _shrink(dict(raw["text_config"]), tiny)
    vision = _shrink(dict(raw["vision_config"]), tiny)
    text.update(vocab_size=len(tok) if tiny else max(text["vocab_size"], len(tok)),
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    text.pop("model_type"), vision.pop("model_type")
    mm_tokens = TINY_MM_TOKENS_PER_IMAGE if tiny else raw["mm_tokens_per_image"]
    config = Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=mm_tokens,
        boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"),
        image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"),
    )
    size = vision["image_size"]
    image_processor = gemma3_image_processor_class()(size={"height": size, "width": size}, do_pan_and_scan=False,
                                              image_mean=[0.5] * 3, image_std=[0.5] * 3, resample=2)
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tok, chat_template=chat_template(dep),
                                image_seq_length=mm_tokens)
    torch.manual_seed(0)
    with materialize_on(device, dtype):
        model = Gemma3ForConditionalGeneration(config)
        # transformers initializes the image projector to zeros (transformers 5.23, `_init_weights`): every image
        # then reaches the language model as the same zero vectors, and no test could tell two images, or an
        # image and none, apart. The real checkpoint's projector is trained; the stand-in's is random like the rest.
        with torch.no_grad():
            model.model.multi_modal_projector.mm_input_projection_weight.normal_(0, config.text_config.initializer_range)
    return model.eval(), processor


def gemma3_image_processor_class():
    """The PIL Gemma 3 image processor (transformers >= 5.23); the default one imports torchvision,
    which breaks CPU torch. Older transformers (the GPU images) only have the default one."""
    try:
        from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

        return Gemma3ImageProcessorPil
    except ImportError:
        from transformers import Gemma3ImageProcessor

        return Gemma3ImageProcessor


def load_causal_lm(dep: Deployment, source: WeightSource, *, device: str, dtype: torch.dtype, **kwargs):
    """(model, tokenizer) for any weight source; kwargs go to from_pretrained (e.g. quantization_config)."""
    if source.is_random:
        return build_random_causal_lm(dep, tiny=source.tiny, device=device, dtype=dtype)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(source.location, **source.from_pretrained_kwargs)
    model = AutoModelForCausalLM.from_pretrained(source.location, dtype=dtype, device_map=device,
                                                 **source.from_pretrained_kwargs, **kwargs)
    return model.eval(), tok


def load_gemma3(dep: Deployment, source: WeightSource, *, device: str, dtype: torch.dtype):
    if source.is_random:
        return build_random_gemma3(dep, tiny=source.tiny, device=device, dtype=dtype)
    from transformers import AutoProcessor, Gemma3ForConditionalGeneration

    image_processor = gemma3_image_processor_class().from_pretrained(source.location, **source.from_pretrained_kwargs)
    processor = AutoProcessor.from_pretrained(source.location, image_processor=image_processor,
                                              **source.from_pretrained_kwargs)
    model = Gemma3ForConditionalGeneration.from_pretrained(source.location, dtype=dtype, device_map=device,
                                                           **source.from_pretrained_kwargs)
    return model.eval(), processor
