"""The compile artifact: made once, loaded by a fresh process as cache hits; another key compiles, saying so."""

import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest

from shared import compile_cache
from tests.conftest import ROOT

# A fresh process compiles one function with Inductor (CPU: needs only the C++ compiler) and prints the
# cache counters: a new machine, as far as Inductor can tell, when TORCHINDUCTOR_CACHE_DIR is new.
SCRIPT = textwrap.dedent("""
    import json, sys, torch
    sys.path.insert(0, {root!r})
    from shared import compile_cache
    loaded = compile_cache.load(None, "demo", "key1")
    f = torch.compile(lambda x: torch.sin(x) * 2 + x.cos(), backend="inductor")
    f(torch.randn(8))
    compile_cache.save("demo", "key1")
    print(json.dumps({{"loaded": loaded, **compile_cache.stats()}}))
""").format(root=str(ROOT))


def _process(tmp_path, name, **env):
    env.pop("TRITON_CACHE_DIR", None)
    run_env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPILE_CACHE", "SAVE_COMPILE_CACHE"))}
    run_env.update(TORCHINDUCTOR_CACHE_DIR=str(tmp_path / f"inductor-{name}"), **env)
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=run_env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Artifacts of one cold process (both kinds)."""
    tmp_path = tmp_path_factory.mktemp("made")
    cold = _process(tmp_path, "cold", SAVE_COMPILE_CACHE=str(tmp_path / "artifacts"))
    assert not cold["loaded"] and cold["inductor_fxgraph_cache_miss"] == 1
    return tmp_path / "artifacts"


@pytest.mark.parametrize("kind", compile_cache.KINDS)
def test_an_artifact_turns_a_new_process_compile_into_cache_hits(made, tmp_path, kind):
    assert (made / compile_cache.relative_path("demo", "key1", kind)).is_file()
    warm = _process(tmp_path, "warm", COMPILE_CACHE=str(made), COMPILE_CACHE_KIND=kind)
    assert warm["loaded"] and warm.get("inductor_fxgraph_cache_hit") == 1 and "inductor_fxgraph_cache_miss" not in warm


def test_an_artifact_of_another_key_is_not_loaded_and_one_line_says_so(tmp_path, caplog):
    other = tmp_path / compile_cache.relative_path("demo", "torch9.9-other-gpu", "tar")
    other.parent.mkdir(parents=True)
    other.write_bytes(b"not for this machine")
    with caplog.at_level(logging.INFO, logger="cogdeploy"):
        assert compile_cache.load(tmp_path, "demo", "this-machine") is False
    lines = [r.getMessage() for r in caplog.records if "compile_cache" in r.getMessage()]
    assert len(lines) == 1 and "torch9.9-other-gpu" in lines[0] and "compiling" in lines[0]


def test_the_key_names_what_compiled_code_depends_on():
    a, b = compile_cache.key({"compile": "on"}), compile_cache.key({"compile": "off"})
    assert a != b and a.startswith("torch") and all(c.isalnum() or c in "._-" for c in a)


def test_a_boot_fetches_only_its_own_artifact():
    wanted = compile_cache.wanted_files("smollm3-3b", "k")
    assert wanted("model.safetensors") and wanted("compile-cache/smollm3-3b/k.bin") and wanted("compile-cache/smollm3-3b/k.tar")
    assert not wanted("compile-cache/smollm3-3b/other.tar") and not wanted("compile-cache/gemma3-4b-it/k.tar")
