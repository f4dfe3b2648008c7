"""Where the real tokenizers and libraries differ from a naive stand-in: BOS, think tags, stop tokens, network."""

import os

import pytest
import torch
from PIL import Image

from shared import catalog, llm_backends
from shared.builders.text import CHAT_SPECS, chat_template, stop_token_ids, tokenizer_for
from shared.builders.tokenizers import chat_tokenizer
from shared.llm import _counting_streamer


def test_gemma_prompts_start_with_one_bos(runners):
    """Gemma's tokenizer adds BOS and its chat template starts with one: the processor must not add a second."""
    runner = runners("gemma3-4b-it")
    bos = runner.text_tokenizer.bos_token_id
    assert runner.text_tokenizer("hi").input_ids[0] == bos, "the stand-in adds BOS, as the real tokenizer does"
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]
    ids = runner.encode(messages, {}, images=[Image.new("RGB", (64, 64), "red")])["input_ids"][0].tolist()
    assert ids[0] == bos and ids[1] != bos


def _streamed(tokenizer, text_ids: list[int]) -> str:
    streamer = _counting_streamer(tokenizer)
    streamer.put(torch.tensor([[1, 2, 3]]))  # the prompt: skipped
    streamer.put(torch.tensor(text_ids))
    streamer.end()
    return "".join(streamer)


@pytest.mark.parametrize("deployment,model_type,tags_special", [("smollm3-3b", "smollm3", False),
                                                                ("phi4-reasoning-plus", "phi3", True)])
def test_think_tags_reach_the_user_whether_or_not_they_are_special(deployment, model_type, tags_special):
    tok = tokenizer_for(catalog.get(deployment), model_type)
    think, end = (tok.convert_tokens_to_ids(t) for t in ("<think>", "</think>"))
    assert (think in {i for i, t in tok.added_tokens_decoder.items() if t.special}) is tags_special
    answer = tok("the sky is blue", add_special_tokens=False).input_ids
    text = _streamed(tok, [think, *tok("because", add_special_tokens=False).input_ids, end, *answer, tok.eos_token_id])
    assert text == "<think>because</think>the sky is blue", "tags kept, end-of-turn hidden"


def test_phi4_stops_at_the_end_of_a_turn_whatever_its_eos():
    spec = CHAT_SPECS["phi3"]
    dep = catalog.get("phi4-reasoning-plus")
    for eos in ("<|im_end|>", "<|endoftext|>"):
        tok = chat_tokenizer(list(spec.special_tokens), bos=spec.bos, eos=eos, pad=spec.pad, chat_template=chat_template(dep))
        assert tok.convert_tokens_to_ids("<|im_end|>") in stop_token_ids(tok, "phi3"), eos


class _Imported(Exception):
    pass


def test_unsloth_and_pruna_are_imported_with_their_network_calls_off(monkeypatch):
    seen = {}

    def fake_require(module, **kwargs):
        seen[module] = {name: os.environ.get(name) for name in llm_backends.NO_NETWORK_ENV}
        raise _Imported

    for name in llm_backends.NO_NETWORK_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(llm_backends, "require", fake_require)
    with pytest.raises(_Imported):
        llm_backends.hqq_quantize(torch.nn.Linear(2, 2), via="pruna", device="cuda", dtype=torch.bfloat16)
    dep = catalog.get("phi4-reasoning-plus")
    from shared import weights

    with pytest.raises(_Imported):
        llm_backends.load_with_unsloth(dep, weights.resolve(dep.checkpoint, "hub"), device="cuda", dtype=torch.bfloat16,
                                       max_seq_length=128)
    for module in ("pruna", "unsloth"):
        assert seen[module]["PRUNA_METRICS_ENABLED"] == "false", module
        assert seen[module]["UNSLOTH_DISABLE_STATISTICS"] == "1", module


def test_unsloth_is_asked_for_sdpa_attention(monkeypatch):
    """The engine's attention options start from SDPA (`attention=grouped` replaces it and refuses anything
    else); Unsloth 2026.10.9 picks flash-attention, flex or SDPA by its own ladder unless asked
    (`resolve_attention_implementation`: an explicit "sdpa" is kept)."""
    asked = {}

    class FastLanguageModel:
        @staticmethod
        def from_pretrained(**kwargs):
            asked.update(kwargs)
            return torch.nn.Linear(2, 2), None

        @staticmethod
        def for_inference(model):
            return model

    unsloth = type("unsloth", (), {"FastLanguageModel": FastLanguageModel})
    monkeypatch.setattr(llm_backends, "require", lambda module, **kw: unsloth)
    dep = catalog.get("phi4-reasoning-plus")
    from shared import weights

    llm_backends.load_with_unsloth(dep, weights.resolve(dep.checkpoint, "hub"), device="cuda", dtype=torch.bfloat16,
                                   max_seq_length=128)
    assert asked["attn_implementation"] == "sdpa"


@pytest.mark.parametrize("compiled", [True, False])
def test_unsloth_decode_compile_flag_is_held_for_a_compiled_step(monkeypatch, compiled):
    """Unsloth 2026.10.9 wraps Phi-3's attention in torch.compiler.disable, so the engine's fullgraph step failed
    on the H100 (2026-12-05), and after one eager inference it sets Dynamo's stance to eager_on_recompile; both
    are skipped while its decode-compile flag is set. With `compile=on` the loader enters that scope and keeps it
    (Dynamo guards on the flag: leaving it would recompile every step); with an eager step it leaves it alone."""
    import contextlib

    scope = {"entered": 0, "left": 0}

    @contextlib.contextmanager
    def unsloth_decode_compile():
        scope["entered"] += 1
        try:
            yield
        finally:
            scope["left"] += 1

    class FastLanguageModel:
        @staticmethod
        def from_pretrained(**kwargs):
            return torch.nn.Linear(2, 2), None

        @staticmethod
        def for_inference(model):
            return model

    modules = {"unsloth": type("unsloth", (), {"FastLanguageModel": FastLanguageModel}),
               "unsloth_zoo.temporary_patches.utils": type("utils", (), {"unsloth_decode_compile": unsloth_decode_compile})}
    monkeypatch.setattr(llm_backends, "require", lambda module, **kw: modules[module])
    monkeypatch.setattr(llm_backends, "_PROCESS_SCOPES", contextlib.ExitStack())
    dep = catalog.get("phi4-reasoning-plus")
    from shared import weights

    llm_backends.load_with_unsloth(dep, weights.resolve(dep.checkpoint, "hub"), device="cuda", dtype=torch.bfloat16,
                                   max_seq_length=128, compiled_decode=compiled)
    assert scope == {"entered": int(compiled), "left": 0}


def test_phi4_asks_for_the_flag_exactly_when_its_step_is_compiled(monkeypatch):
    """The Phi-4 runner passes its `compile` option to the loader."""
    from tests.conftest import runner_before_load

    seen = []
    monkeypatch.setattr(llm_backends, "load_with_unsloth",
                        lambda *a, **kw: seen.append(kw["compiled_decode"]) or (None, None, "stub"))
    for value in ("on", "off"):
        monkeypatch.setenv("OPTIMIZE", f"compile={value}")
        runner_before_load("phi4-reasoning-plus").load_model()
    assert seen == [True, False]
