"""The carried fix for pytorch#172819: a boot from the compile artifact keeps each kernel's tuned config.

torch 2.11 (the images') re-tuned 292 of Gemma's 361 kernels after unpacking the artifact. Triton is not
installed here, so the tests drive the fixed functions with stand-ins for the kernel configs and the
autotune cache (the parts of torch they call), and check what `run()` reads afterwards: the mark
`found_by_coordesc` on the one config left.
"""

from types import SimpleNamespace

import pytest

pytest.importorskip("torch")

from torch._inductor.runtime import triton_heuristics  # noqa: E402

from shared import coordesc_cache_fix  # noqa: E402


def _config(block, tuned=False):
    return SimpleNamespace(kwargs={"XBLOCK": block}, found_by_coordesc=tuned)


class _Kernel:
    """What recheck_autotune_cache reads of a CachingAutotuner loaded from the FX graph cache."""

    def __init__(self, blocks):
        self.compile_results = [SimpleNamespace(config=_config(b)) for b in blocks]
        self.filename, self.inductor_meta, self.fn = "k.py", {"coordinate_descent_tuning": True}, SimpleNamespace(fn=None)
        self.precompiled = []

    def is_statically_launchable(self):
        return True

    def _precompile_config(self, config):
        self.precompiled.append(config)
        return SimpleNamespace(config=config)


@pytest.fixture
def tuned_cache(monkeypatch):
    """The autotune cache holds a config found by coordinate descent with XBLOCK=`block`."""
    def hold(block):
        monkeypatch.setattr(triton_heuristics, "check_autotune_cache",
                            lambda configs, filename, meta: ([_config(block, tuned=True)], None, {"hit": True}))
    monkeypatch.setattr(triton_heuristics, "triton_config_to_hashable", lambda c: tuple(c.kwargs.items()))
    return hold


@pytest.mark.parametrize("blocks", [[64], [32, 64, 128]], ids=["one candidate", "several"])
def test_a_cached_tuned_config_stays_marked_tuned(tuned_cache, blocks):
    # torch 2.11 skipped the single-candidate case and dropped the mark in both: run() tuned again.
    tuned_cache(64)
    kernel = _Kernel(blocks)
    coordesc_cache_fix.recheck_keeping_tuned_config(kernel, reload_kernel_from_src=None)
    (result,) = kernel.compile_results
    assert result.config.kwargs == {"XBLOCK": 64} and result.config.found_by_coordesc is True
    assert kernel.precompiled == []


def test_a_tuned_config_outside_the_candidates_is_compiled_once(tuned_cache):
    tuned_cache(256)
    kernel = _Kernel([32, 64])
    kernel.fn = SimpleNamespace(fn=object())
    coordesc_cache_fix.recheck_keeping_tuned_config(kernel, reload_kernel_from_src=None)
    assert [c.kwargs for c in kernel.precompiled] == [{"XBLOCK": 256}]
    assert kernel.compile_results[0].config.found_by_coordesc is True


def test_no_cached_entry_leaves_the_kernel_to_autotune(monkeypatch):
    monkeypatch.setattr(triton_heuristics, "check_autotune_cache", lambda configs, filename, meta: ([], None, {}))
    kernel = _Kernel([32, 64])
    coordesc_cache_fix.recheck_keeping_tuned_config(kernel, reload_kernel_from_src=None)
    assert len(kernel.compile_results) == 2 and not any(r.config.found_by_coordesc for r in kernel.compile_results)


def _loader_that_checks_the_hash(entry, configs_hash, configs, meta):
    return "tuned config" if entry.get("configs_hash") == configs_hash else None


@pytest.mark.parametrize("tuned,tuning_on,expected", [
    (True, True, "tuned config"),   # a tuned entry is the kernel's, whatever candidates the caller lists
    (False, True, None),            # a plain autotuning winner is only valid among the same candidates
    (True, False, None),            # tuning off: torch's own rule
])
def test_tuned_entries_survive_a_different_candidate_list(tuned, tuning_on, expected):
    load = coordesc_cache_fix._trusting_tuned_entries(_loader_that_checks_the_hash)
    entry = {"XBLOCK": 64, "configs_hash": "hash-of-all-candidates", "found_by_coordesc": tuned}
    assert load(entry, "hash-of-the-winner-only", [], {"coordinate_descent_tuning": tuning_on}) == expected


def test_install_leaves_fixed_torch_versions_alone(monkeypatch):
    from torch._inductor.runtime import autotune_cache

    monkeypatch.setattr(coordesc_cache_fix, "_installed", None)
    monkeypatch.setattr(triton_heuristics.CachingAutotuner, "recheck_autotune_cache",
                        triton_heuristics.CachingAutotuner.recheck_autotune_cache)
    monkeypatch.setattr(autotune_cache, "_load_cached_autotuning", autotune_cache._load_cached_autotuning)
    upstream = triton_heuristics.CachingAutotuner.recheck_autotune_cache
    for version, patched in (("2.11.0+cu130", True), ("2.13.0+cpu", False)):
        monkeypatch.setattr(coordesc_cache_fix, "_installed", None)
        monkeypatch.setattr(coordesc_cache_fix.torch, "__version__", version)
        names = coordesc_cache_fix.install()
        assert ("recheck_autotune_cache" in names) is patched
        assert (triton_heuristics.CachingAutotuner.recheck_autotune_cache is not upstream) is patched
        monkeypatch.setattr(triton_heuristics.CachingAutotuner, "recheck_autotune_cache", upstream)
