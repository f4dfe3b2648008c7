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
