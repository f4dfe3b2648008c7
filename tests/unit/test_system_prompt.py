"""Where `system_prompt` lands in the prompt each model reads, through its own chat template."""

import pytest
from PIL import Image

from shared.llm import with_system_prompt

SYSTEM = "Answer like a pirate."
QUESTION = "Why is the sky blue?"


def _read(runner, system_prompt, **template_kwargs):
    """The prompt text the model reads (decoded from the ids encode() makes)."""
    if runner.dep.name == "gemma3-4b-it":
        user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}
        ids = runner.encode(with_system_prompt([user], system_prompt), template_kwargs,
                            images=[Image.new("RGB", (64, 64), "red")])["input_ids"][0]
    else:
        ids = runner.encode(with_system_prompt([{"role": "user", "content": QUESTION}], system_prompt),
                            template_kwargs)["input_ids"][0]
    return runner.text_tokenizer.decode(ids)


@pytest.mark.parametrize("deployment,default_marker", [
    ("smollm3-3b", "You are a helpful AI assistant named SmolLM"),  # its default custom instructions
    ("phi4-reasoning-plus", "You are Phi, a language model trained by Microsoft"),
])
def test_a_system_prompt_replaces_the_model_default(runners, deployment, default_marker):
    runner = runners(deployment)
    kwargs = {"enable_thinking": True} if deployment == "smollm3-3b" else {}
    default, told = _read(runner, "", **kwargs), _read(runner, SYSTEM, **kwargs)
    assert default_marker in default and SYSTEM not in default
    assert SYSTEM in told and default_marker not in told
    assert told.index(SYSTEM) < told.index(QUESTION)
    assert _read(runner, "  \n", **kwargs) == default


def test_smollm3_keeps_its_reasoning_mode_with_a_system_prompt(runners):
    runner = runners("smollm3-3b")
    assert "Reasoning Mode: /think" in _read(runner, SYSTEM, enable_thinking=True)
    assert "Reasoning Mode: /no_think" in _read(runner, SYSTEM, enable_thinking=False)


def test_gemma_puts_the_system_prompt_at_the_start_of_the_first_user_turn(runners):
    told = _read(runners("gemma3-4b-it"), SYSTEM)
    turn = told.index("<start_of_turn>user")
    assert turn < told.index(SYSTEM) < told.index(QUESTION)
    assert "<start_of_turn>system" not in told  # Gemma 3 has no system role
