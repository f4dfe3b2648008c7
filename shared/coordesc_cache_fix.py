"""Keep Inductor's coordinate-descent tunings across boots (pytorch/pytorch#172819, fixed upstream in 2.12).

Gemma's int8 decode needs coordinate-descent tuning (each kernel benchmarks its neighbouring launch
configs at first run: ~100 s of a cold boot). The tuned config is written next to the kernel
(`<kernel>.best_config`) and travels in the compile artifact, but in torch 2.11 (the images' torch)
a boot from the artifact tunes ~80% of the kernels again, for two reasons:

1. Kernels restored from the FX graph cache recheck their tuned config in
   `CachingAutotuner.recheck_autotune_cache`, which (before pytorch#173391, torch 2.12) ignores it
   when the kernel has a single candidate config, and, when it does adopt it, drops the
   `found_by_coordesc` mark; `run()` then tunes again whenever the mark is missing.
2. `.best_config` is checked against a hash of the caller's candidate configs. A kernel restored from
   the cache may hold only the winning config, a fresh compile enumerates all of them: the hashes
   differ and the tuned entry is thrown away (still so in 2.13). A tuned entry is safe to reuse
   whatever the candidates: its file is named by the kernel's source hash and the torch build.

`install()` fixes both for the torch versions that have them and leaves newer code alone. Set
`COORDESC_CACHE_FIX=0` to run torch's code unchanged (to measure the difference).
"""

from __future__ import annotations

import os

import torch

from .runtime import log_event

RECHECK_FIXED_IN = (2, 12)  # pytorch#173391
_installed: list[str] | None = None


def _torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split(".")[:2]
    return int(major), int(minor)


def install() -> list[str]:
    """Install the fixes this torch needs (once per process); returns their names."""
    global _installed
    if _installed is not None:
        return _installed
    _installed = []
    if os.environ.get("COORDESC_CACHE_FIX", "1") == "0":
        log_event("coordesc_cache_fix", installed=[], reason="COORDESC_CACHE_FIX=0")
        return _installed
    from torch._inductor.runtime import autotune_cache, triton_heuristics

    if _torch_version() < RECHECK_FIXED_IN:
        triton_heuristics.CachingAutotuner.recheck_autotune_cache = recheck_keeping_tuned_config
        _installed.append("recheck_autotune_cache")
    autotune_cache._load_cached_autotuning = _trusting_tuned_entries(autotune_cache._load_cached_autotuning)
    _installed.append("tuned_entry_hash")
    log_event("coordesc_cache_fix", installed=_installed, torch=torch.__version__)
    return _installed


def recheck_keeping_tuned_config(self, reload_kernel_from_src) -> None:
    """A kernel loaded from the FX graph cache: adopt its tuned config and keep it marked as tuned."""
    from torch._inductor.runtime import triton_heuristics as th

    assert self.is_statically_launchable()
    candidates = [result.config for result in self.compile_results]
    cached, _, self.autotune_cache_info = th.check_autotune_cache(candidates, self.filename, self.inductor_meta)
    if len(cached) != 1:  # no tuned entry: run() autotunes as usual
        return
    best = cached[0]
    tuned = getattr(best, "found_by_coordesc", False)
    wanted = th.triton_config_to_hashable(best)
    for result in self.compile_results:
        if th.triton_config_to_hashable(result.config) == wanted:
            result.config.found_by_coordesc = tuned  # run() re-tunes any config without this mark
            self.compile_results = [result]
            return
    # The tuned config is a neighbour of the precompiled ones: compile just that one.
    with th.dynamo_timed("CachingAutotuner.slow_precompile_config"):
        if self.fn.fn is None:
            self.fn = reload_kernel_from_src().fn
        self.compile_results = [self._precompile_config(best)]


def _trusting_tuned_entries(load_cached_autotuning):
    def load(best_config, configs_hash, configs, inductor_meta):
        if (best_config and best_config.get("found_by_coordesc")
                and inductor_meta.get("coordinate_descent_tuning")):
            configs_hash = best_config.get("configs_hash", configs_hash)  # see the module docstring, 2.
        return load_cached_autotuning(best_config, configs_hash, configs, inductor_meta)

    load.__wrapped__ = load_cached_autotuning
    return load
