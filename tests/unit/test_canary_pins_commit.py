"""The release's pin writer: two promotions pushing at once both land, neither pin is lost."""

import json
import subprocess
import threading

import pytest

from canary import pins

REFS = {"smollm3-3b": "cog-deployments/smollm3-3b:" + "a" * 64, "gemma3-4b-it": "cog-deployments/gemma3-4b-it:" + "b" * 64}


def _git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def remote(tmp_path):
    """A bare 'origin' holding canary/pins.json (all null), and a function that clones it."""
    seed = tmp_path / "seed"
    (seed / "canary").mkdir(parents=True)
    (seed / "canary" / "pins.json").write_text(pins.PINS.read_text())
    _git(tmp_path, "init", "--quiet", "--bare", "-b", "main", "origin.git")
    _git(seed, "init", "--quiet", "-b", "main")
    for key, value in (("user.name", "t"), ("user.email", "t@example.com")):
        _git(seed, "config", key, value)
    _git(seed, "add", ".")
    _git(seed, "commit", "--quiet", "-m", "seed")
    _git(seed, "remote", "add", "origin", str(tmp_path / "origin.git"))
    _git(seed, "push", "--quiet", "-u", "origin", "main")

    def clone(name):
        _git(tmp_path, "clone", "--quiet", str(tmp_path / "origin.git"), name)
        for key, value in (("user.name", name), ("user.email", f"{name}@example.com")):
            _git(tmp_path / name, "config", key, value)
        return tmp_path / name

    return tmp_path / "origin.git", clone


def test_two_concurrent_promotions_both_land(remote):
    origin, clone = remote
    a, b = clone("a"), clone("b")  # both start from the same commit, as two jobs of one release would
    errors = []

    def promote(repo, deployment):
        try:
            pins.commit({deployment: REFS[deployment]}, repo)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=promote, args=(a, "smollm3-3b")),
               threading.Thread(target=promote, args=(b, "gemma3-4b-it"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    final = json.loads(_git(origin, "show", "main:canary/pins.json"))["stable"]
    assert final["smollm3-3b"] == REFS["smollm3-3b"] and final["gemma3-4b-it"] == REFS["gemma3-4b-it"]
    assert _git(origin, "rev-list", "--count", "main") == "3"


def test_a_push_rejected_because_another_landed_first_is_rebased_and_retried(remote, monkeypatch):
    origin, clone = remote
    a, b = clone("a"), clone("b")
    real_run, pushes = subprocess.run, []

    def run(args, **kwargs):
        if args[:2] == ["git", "push"] and kwargs.get("cwd") == b:
            pushes.append(b)
            if len(pushes) == 1:  # between b's pull and its push, a's promotion lands
                monkeypatch.setattr(pins.subprocess, "run", real_run)
                pins.commit({"smollm3-3b": REFS["smollm3-3b"]}, a)
                monkeypatch.setattr(pins.subprocess, "run", run)
        return real_run(args, **kwargs)

    monkeypatch.setattr(pins.subprocess, "run", run)
    pins.commit({"gemma3-4b-it": REFS["gemma3-4b-it"]}, b)
    assert len(pushes) == 2, "b's first push was rejected and it tried again"
    final = json.loads(_git(origin, "show", "main:canary/pins.json"))["stable"]
    assert final["smollm3-3b"] == REFS["smollm3-3b"] and final["gemma3-4b-it"] == REFS["gemma3-4b-it"]
    assert _git(origin, "rev-list", "--count", "main") == "3"


def test_a_pin_of_another_model_is_refused_before_anything_is_written(remote):
    _, clone = remote
    a = clone("a")
    with pytest.raises(ValueError, match="not of smollm3-3b"):
        pins.commit({"smollm3-3b": REFS["gemma3-4b-it"]}, a)
