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
