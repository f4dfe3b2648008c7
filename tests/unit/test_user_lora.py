"""Bring your own LoRA: fetched once over HTTP, checked against the slot, hot-swapped without a recompile."""

import io

import numpy as np
import pytest
import torch

from shared import user_lora
from shared.runtime import InputError
from tests.mirror_server import MirrorServer
from tests.unit.test_lora_router import _compiled


def lora_bytes(transformer, *, rank=4, targets=("attn.to_q", "attn.to_k", "attn.to_v"), seed=3, top_level=False) -> bytes:
    """A LoRA file in diffusers' FLUX format (transformer.<layer>.lora_A/B.weight) on the layers ending in
    `targets`, or on two layers outside the blocks (`top_level`)."""
    from safetensors.torch import save

    g = torch.Generator("cpu").manual_seed(seed)
    state = {}
    for name, module in transformer.named_modules():
        module = getattr(module, "base_layer", module)  # the slot wraps each targeted Linear
        if not isinstance(module, torch.nn.Linear) or "lora_" in name or "base_layer" in name:
            continue
        if name in ("proj_out", "x_embedder") if top_level else any(name.endswith("." + t) for t in targets):
            fan_in, fan_out = module.in_features, module.out_features
            state[f"transformer.{name}.lora_A.weight"] = torch.randn(rank, fan_in, generator=g) / fan_in ** 0.5
            state[f"transformer.{name}.lora_B.weight"] = torch.randn(fan_out, rank, generator=g) * 3 / rank ** 0.5
    assert state
    return save(state)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    with MirrorServer(tmp_path_factory.mktemp("loras"), prefix="/files") as server:
        yield server


def _image(runner, *, trigger=None, lora=None, scale=1.0, size=(128, 128)):
    route = runner.route(trigger, lora)
    image, _ = runner.generate_image({"prompt": route.apply_to("a cat"), "width": size[0], "height": size[1]},
                                     steps=2, guidance=3.5, seed=7, route=route, lora_scale=scale)
    return np.asarray(image).astype(np.int16)


@pytest.fixture()
def compiled(monkeypatch, tmp_path):
    monkeypatch.setenv("COGDEPLOY_CACHE", str(tmp_path))
    return _compiled(monkeypatch)


def test_a_user_lora_is_hot_swapped_like_a_style_without_a_recompile(compiled, mirror):
    runner, counter = compiled
    url = mirror.add("mine.safetensors", lora_bytes(runner.pipe.transformer))
    base = _image(runner)
    graphs = counter.frame_count
    mine = _image(runner, lora=url)
    ghibsky = _image(runner, trigger="GHIBSKY")
    again = _image(runner, lora=url)
    assert np.abs(mine - base).mean() > 1.0 and np.abs(mine - ghibsky).mean() > 1.0
    assert np.array_equal(mine, again), "the same LoRA gives the same pixels after a style in between"
    assert np.array_equal(base, _image(runner)), "back to the base model"
    assert counter.frame_count == graphs, "a user LoRA recompiled the transformer"
    assert sum(1 for path, _ in mirror.requests if path == "mine.safetensors") == 1, "downloaded once"


def kohya_bytes(transformer, rank=4) -> bytes:
    """A LoRA in kohya's FLUX layout (BFL module names, fused qkv, alpha keys), which diffusers converts."""
    from safetensors.torch import save

    width = transformer.config.num_attention_heads * transformer.config.attention_head_dim
    g = torch.Generator("cpu").manual_seed(9)
    state = {}
    for name, fan_in, fan_out in [("double_blocks_0_img_attn_qkv", width, 3 * width),
                                  ("single_blocks_0_linear2", 5 * width, width)]:
        state[f"lora_unet_{name}.lora_down.weight"] = torch.randn(rank, fan_in, generator=g)
        state[f"lora_unet_{name}.lora_up.weight"] = torch.randn(fan_out, rank, generator=g)
        state[f"lora_unet_{name}.alpha"] = torch.tensor(float(rank))
    return save(state)


def test_a_kohya_lora_is_converted_and_swapped_in(compiled, mirror):
    runner, counter = compiled
    url = mirror.add("kohya.safetensors", kohya_bytes(runner.pipe.transformer))
    base = _image(runner)
    graphs = counter.frame_count
    assert np.abs(_image(runner, lora=url) - base).mean() > 0.5
    assert counter.frame_count == graphs


def test_lora_scale_zero_is_the_base_model_and_scale_changes_the_style(compiled, mirror):
    runner, counter = compiled
    url = mirror.add("scaled.safetensors", lora_bytes(runner.pipe.transformer, seed=4))
    base, one = _image(runner), _image(runner, lora=url)
    graphs = counter.frame_count
    assert np.array_equal(_image(runner, lora=url, scale=0.0), base)
    assert not np.array_equal(_image(runner, lora=url, scale=2.0), one)
    assert not np.array_equal(_image(runner, trigger="Anime", scale=0.5), _image(runner, trigger="Anime"))
    assert counter.frame_count == graphs, "a scale is a weight copy, not a recompile"


@pytest.fixture(scope="module")
def flux(runners):
    return runners("flux-lora-txt2img")


def _error(flux, url, trigger=None) -> str:
    with pytest.raises(InputError) as err:
        flux.route(trigger, url)
    assert err.value.field == "lora_weights"
    return str(err.value)


def test_a_rank_above_the_slot_is_refused_naming_the_layer(flux, mirror):
    url = mirror.add("rank32.safetensors", lora_bytes(flux.pipe.transformer, rank=32))
    assert "rank 32, the slot holds at most 16" in _error(flux, url)


def test_layers_outside_the_slot_are_refused(flux, mirror):
    url = mirror.add("top.safetensors", lora_bytes(flux.pipe.transformer, top_level=True))
    message = _error(flux, url)
    assert "outside the LoRA slot" in message and ("proj_out" in message or "x_embedder" in message)


def test_a_file_that_is_not_a_lora_is_refused(flux, mirror):
    assert "not a FLUX LoRA" in _error(flux, mirror.add("junk.safetensors", b"\x00" * 64))


def test_a_trigger_and_a_user_lora_together_are_refused(flux, mirror):
    url = mirror.add("both.safetensors", lora_bytes(flux.pipe.transformer))
    assert "not both" in _error(flux, url, trigger="Anime")


@pytest.mark.parametrize("url", ["/etc/passwd", "file:///etc/passwd", "ftp://host/x.safetensors", "not a url"])
def test_only_http_urls_are_fetched(flux, url):
    assert "http(s) URL" in _error(flux, url)


def test_a_missing_file_says_what_the_server_answered(flux, mirror):
    assert "HTTP 404" in _error(flux, f"{mirror.url}/nothing.safetensors")


def test_downloads_are_capped_in_size_and_time(tmp_path, mirror):
    cache = user_lora.AdapterCache(tmp_path)
    url = mirror.add("big.safetensors", b"x" * 5000)
    with pytest.raises(InputError, match="larger than"):
        cache.fetch(url, max_bytes=4096)
    mirror.drip["slow.safetensors"] = 0.3  # 300 bytes in 90 s, never a pause long enough for a read timeout
    slow = mirror.add("slow.safetensors", b"y" * 300)
    with pytest.raises(InputError, match="longer than 1 s"):
        cache.fetch(slow, deadline_s=1)
    assert mirror.dripped["slow.safetensors"] < 300, "cut at the deadline, not read to the end"
    assert not list(tmp_path.glob("*")), "nothing half-downloaded is kept"


def test_the_cache_keeps_recent_adapters_and_evicts_the_oldest(tmp_path, mirror):
    cache = user_lora.AdapterCache(tmp_path, capacity=2500)
    urls = [mirror.add(f"lru{i}.safetensors", bytes([i]) * 1000) for i in range(3)]
    first = cache.fetch(urls[0])
    cache.fetch(urls[1])
    cache.fetch(urls[0])  # used again: now the most recent
    cache.fetch(urls[2])
    assert first.exists() and not cache.path(urls[1]).exists() and cache.path(urls[2]).exists()
    assert io.BytesIO(first.read_bytes()).read(1) == b"\x00"
