"""Where benchmarks/bench.py writes a result: a rerun at another commit must not overwrite the earlier figures."""

import json

from benchmarks import bench


def test_a_rerun_at_another_commit_keeps_the_earlier_result(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "ROOT", tmp_path)
    monkeypatch.setenv("WEIGHT_PROFILE", "synthetic")
    monkeypatch.delenv("OUT", raising=False)
    monkeypatch.setenv("COMMIT", "a" * 40)
    first = bench.write("text-server", "hqq", {"figure": 1})
    assert bench.write("text-server", "hqq", {"figure": 1}) == first  # the same commit again: the same file
    monkeypatch.setenv("COMMIT", "b" * 40)
    second = bench.write("text-server", "hqq", {"figure": 2})
    assert second != first and "bbbbbbb" in second.name
    assert json.loads(first.read_text())["figure"] == 1 and json.loads(second.read_text())["figure"] == 2


def test_text_profile_sends_the_simultaneous_prompt_as_the_server_tokenizes_it(runners):
    """text-profile's `batched_8x256_served_prompt` is compared with text-server's simultaneous case: its ids must be
    the ones the deployment's own runner makes for that prompt (chat template, default system prompt, SmolLM3's
    default no_think mode). The raw prompt it sent before was ~10 tokens against the server's 198."""
    import sys

    import torch

    from shared import catalog

    sys.path.insert(0, str(bench.ROOT / "benchmarks"))  # bench.py imports its siblings as top-level modules
    from benchmarks import text_profile

    for name, template_kwargs in (("smollm3-3b", {"enable_thinking": False}), ("phi4-reasoning-plus", {})):
        runner = runners(name)
        served = runner.encode([{"role": "user", "content": "Write a poem about the sea."}], template_kwargs)
        ids = text_profile._templated(catalog.get(name), runner.text_tokenizer, "Write a poem about the sea.")
        assert torch.equal(ids, served["input_ids"].cpu()), name
