"""Prompts go through each model's real chat template; SmolLM3's think / no_think lives there."""

import pytest

from shared import catalog
from shared.builders.text import chat_template, tokenizer_for

MESSAGES = [{"role": "user", "content": "What is 2+2?"}]


def _render(deployment, model_type, **kwargs):
    dep = catalog.get(deployment)
    tok = tokenizer_for(dep, model_type)
    return tok.apply_chat_template(MESSAGES, chat_template=chat_template(dep), tokenize=False,
                                   add_generation_prompt=True, **kwargs)


def test_smollm3_think_and_no_think_render_different_prompts():
    think = _render("smollm3-3b", "smollm3", enable_thinking=True)
    no_think = _render("smollm3-3b", "smollm3", enable_thinking=False)
    assert "Reasoning Mode: /think" in think and think.endswith("<|im_start|>assistant\n")
    assert "Reasoning Mode: /no_think" in no_think and no_think.endswith("<think>\n\n</think>\n")


def test_smollm3_template_is_the_vendored_published_file():
    text = chat_template(catalog.get("smollm3-3b"))
    assert "enable_thinking" in text and "/system_override" in text


def test_phi4_template_puts_the_reasoning_system_prompt_first():
    prompt = _render("phi4-reasoning-plus", "phi3")
    assert prompt.startswith("<|im_start|>system<|im_sep|>You are Phi")
    assert prompt.endswith("<|im_start|>user<|im_sep|>What is 2+2?<|im_end|><|im_start|>assistant<|im_sep|>")


def test_gemma3_template_uses_model_turns_and_image_tokens():
    dep = catalog.get("gemma3-4b-it")
    tok = tokenizer_for(dep, "gemma3")
    prompt = tok.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}],
                                     chat_template=chat_template(dep), tokenize=False, add_generation_prompt=True)
    assert prompt == "<bos><start_of_turn>user\n<start_of_image>hi<end_of_turn>\n<start_of_turn>model\n"


@pytest.mark.parametrize("deployment,model_type", [("smollm3-3b", "smollm3"), ("phi4-reasoning-plus", "phi3"),
                                                   ("gemma3-4b-it", "gemma3")])
def test_template_special_tokens_are_single_tokens(deployment, model_type):
    tok = tokenizer_for(catalog.get(deployment), model_type)
    for token in ("<|im_start|>", "<|im_end|>") if model_type != "gemma3" else ("<start_of_turn>", "<end_of_turn>"):
        assert len(tok(token, add_special_tokens=False).input_ids) == 1
