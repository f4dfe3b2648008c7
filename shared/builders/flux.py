"""FLUX.1-dev pipelines for each weight profile, built from the vendored real configs.

tiny: every component of the real architecture with its sizes shrunk (as diffusers' fast tests do),
random weights, seeded, so two processes build the same model. synthetic: the full-size
architecture with random weights, made directly on the GPU. hub / local: the real checkpoint.
"""

from __future__ import annotations

import json

import torch

from ..catalog import Deployment
from ..weights import WeightSource
from . import materialize_on, random_in_host_memory

# Shrinks that keep every architecture flag of the real config (guidance embeds, 16 latent channels,
# 8x VAE, rope axes summing to the head dim); only widths and depths change.
TINY_TRANSFORMER = dict(
    num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
    joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=(4, 4, 8),
)
TINY_VAE = dict(block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4)
TINY_CLIP = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                 projection_dim=32)
TINY_T5 = dict(d_model=32, d_ff=37, d_kv=8, num_heads=4, num_layers=2, num_decoder_layers=2)
TINY_MAX_SEQUENCE_LENGTH = 64


def _config(dep: Deployment, component: str) -> dict:
    folder = dep.checkpoint.assets_dir / component
    name = "scheduler_config.json" if component == "scheduler" else "config.json"
    cfg = json.loads((folder / name).read_text())
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def transformer_config(dep: Deployment, tiny: bool = False) -> dict:
    """The transformer's config as the checkpoint has it (shrunk for the tiny profile)."""
    return {**_config(dep, "transformer"), **(TINY_TRANSFORMER if tiny else {})}


def build_random(dep: Deployment, *, tiny: bool, device: str, dtype: torch.dtype, pipeline_cls,
                 transformer_device: str | None = None):
    """A pipeline of the real FLUX architecture with seeded random weights; the transformer on
    `transformer_device` (host memory, for the low-memory mode) when it is not `device`."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from .tokenizers import clip_tokenizer, t5_tokenizer

    tok, tok2 = clip_tokenizer(), t5_tokenizer()
    t_cfg, v_cfg = transformer_config(dep, tiny), _config(dep, "vae")
    c_cfg, t5_cfg = _config(dep, "text_encoder"), _config(dep, "text_encoder_2")
    if tiny:
        v_cfg.update(TINY_VAE)
        c_cfg.update(TINY_CLIP)
        t5_cfg.update(TINY_T5)
    # The random tokenizers have small vocabularies; the embeddings follow them.
    c_cfg.update(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                 pad_token_id=tok.pad_token_id)
    t5_cfg.update(vocab_size=len(tok2))

    torch.manual_seed(0)
    transformer_device = transformer_device or device
    with materialize_on(device, dtype):
        if transformer_device == device:
            transformer = FluxTransformer2DModel(**t_cfg)
        elif transformer_device == "cpu" and device.startswith("cuda"):
            transformer = random_in_host_memory(lambda: FluxTransformer2DModel(**t_cfg), draw_on=device, dtype=dtype)
        else:
            raise ValueError(f"a random transformer on {transformer_device} with the rest on {device}")
        vae = AutoencoderKL(**v_cfg)
        text_encoder = CLIPTextModel(CLIPTextConfig(**c_cfg))
        text_encoder_2 = T5EncoderModel(T5Config(**t5_cfg))
    pipe = pipeline_cls(
        scheduler=FlowMatchEulerDiscreteScheduler(**_config(dep, "scheduler")),
        vae=vae, text_encoder=text_encoder, tokenizer=tok,
        text_encoder_2=text_encoder_2, tokenizer_2=tok2, transformer=transformer,
    )
    for model in (vae, text_encoder, text_encoder_2, transformer):
        model.to(dtype=dtype)
    return pipe


def load(dep: Deployment, source: WeightSource, *, device: str, dtype: torch.dtype, pipeline_cls,
         transformer_device: str | None = None):
    """The pipeline for a weight source: random (tiny/synthetic) or the real checkpoint.

    `transformer_device`, when it is not `device`: where the transformer stays (the low-memory mode keeps it in
    host memory until its layers go to the GPU in 4 bits). The real checkpoint is then loaded in two parts, the
    rest first and moved to `device`, then the transformer: host memory holds FLUX's 23.8 GB transformer alone
    instead of it and the 9.5 GB T5 at once (about 24 GB of RAM needed instead of 34: a 32 GB machine will do)."""
    transformer_device = transformer_device or device
    if source.is_random:
        return build_random(dep, tiny=source.tiny, device=device, dtype=dtype, pipeline_cls=pipeline_cls,
                            transformer_device=transformer_device)
    kwargs = {"torch_dtype": dtype, **source.from_pretrained_kwargs}
    if transformer_device == device:
        return pipeline_cls.from_pretrained(source.location, **kwargs).to(device)
    from diffusers import FluxTransformer2DModel

    pipe = _rest_to(pipeline_cls.from_pretrained(source.location, transformer=None, **kwargs), device)
    transformer = FluxTransformer2DModel.from_pretrained(source.location, subfolder="transformer", **kwargs)
    pipe.register_modules(transformer=transformer.to(transformer_device))
    return pipe


def _rest_to(pipe, device: str):
    """Every model of the pipeline but its transformer to `device`."""
    for name in ("vae", "text_encoder", "text_encoder_2"):
        getattr(pipe, name).to(device)
    return pipe


def max_sequence_length(source: WeightSource) -> int:
    # FLUX.1-dev was trained with 512 T5 tokens; the tiny stand-in keeps prompts short to stay fast.
    return TINY_MAX_SEQUENCE_LENGTH if source.tiny else 512
