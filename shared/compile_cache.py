"""Compile work made once on a GPU, shipped with the weights, and loaded in setup(): torch's mega-cache.

A cold boot spends most of its time compiling (FLUX's regional compile with dynamic shapes, the text
models' decode steps). `torch.compiler.save_cache_artifacts()` bundles everything this process compiled
(Inductor graphs with their Triton kernels, AOTAutograd entries, autotuning results, dynamic-shape
decisions) into one blob; `load_cache_artifacts()` before compiling turns that work into cache hits.
Dynamo still traces, which takes seconds, not minutes.

Compiled code is only reusable on the same torch, CUDA, Triton and GPU model, with the same
optimizations: that is the artifact's key and its file name, so a boot on another GPU or torch finds no
file of its key and compiles, with one log line saying which keys were there.

    SAVE_COMPILE_CACHE=DIR   after warm-up, write DIR/compile-cache/<deployment>/<key>.bin (on the GPU, once per release)
    COMPILE_CACHE=DIR        read artifacts from DIR/compile-cache/ (default: the weights folder, i.e. the mirror bundle)
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import time
from pathlib import Path

import torch

from .runtime import log_event

LOAD_ENV = "COMPILE_CACHE"
SAVE_ENV = "SAVE_COMPILE_CACHE"
FOLDER = "compile-cache"


def key(options: dict[str, str]) -> str:
    """What compiled code depends on, as a file-name-safe string."""
    if torch.cuda.is_available():
        import triton

        device = f"cuda{torch.version.cuda}-triton{triton.__version__}-{torch.cuda.get_device_name()}"
    else:
        device = f"cpu-{platform.machine()}"
    chosen = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:10]
    # Only [A-Za-z0-9._-]: file names that every bucket, URL and copy tool passes unchanged.
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"torch{torch.__version__}-{device}-opt{chosen}")


def relative_path(deployment: str, cache_key: str) -> str:
    """The artifact's path inside a weights folder or mirror bundle."""
    return f"{FOLDER}/{deployment}/{cache_key}.bin"


def wanted_files(deployment: str, cache_key: str):
    """Which files of a mirror bundle a boot downloads: everything but other deployments' and keys' artifacts."""
    own = relative_path(deployment, cache_key)
    return lambda path: not path.startswith(FOLDER + "/") or path == own


def load(folder: Path | None, deployment: str, cache_key: str) -> bool:
    """Load the artifact for this key from `folder` (COMPILE_CACHE overrides it); True if one was loaded."""
    root = Path(os.environ[LOAD_ENV]) if os.environ.get(LOAD_ENV) else folder
    if root is None:
        return False
    path = root / relative_path(deployment, cache_key)
    if not path.is_file():
        others = sorted(p.stem for p in path.parent.glob("*.bin")) if path.parent.is_dir() else []
        log_event("compile_cache.none", wanted=cache_key, found=others, action="compiling from scratch")
        return False
    started = time.perf_counter()
    info = torch.compiler.load_cache_artifacts(path.read_bytes())
    log_event("compile_cache.loaded", path=str(path), bytes=path.stat().st_size, seconds=round(time.perf_counter() - started, 2),
              artifacts={k: len(v) for k, v in (getattr(info, "artifacts", None) or {}).items()})
    return True


# Where compile time goes (torch._dynamo.utils.compile_times): tracing is never cached, lowering and the
# Triton kernels are; a warm boot that is still slow shows which.
_TIMED = {"_compile.compile_inner": "total", "bytecode_tracing": "dynamo_trace", "build_guards": "guards",
          "create_aot_dispatcher_function": "aot", "compile_fx_inner": "inductor", "async_compile.wait": "triton"}


def stats() -> dict:
    """This process's compile-cache hits and misses (Inductor graphs, AOTAutograd) and compile seconds, for
    the setup log."""
    from torch._dynamo.utils import compile_times, counters

    found = {f"inductor.{k}": v for k, v in counters["inductor"].items() if k.startswith("fxgraph_cache")}
    found |= {f"aot.{k}": v for k, v in counters["aot_autograd"].items() if k.startswith("autograd_cache")}
    names, values = compile_times(repr="csv", aggregate=True)
    found["seconds"] = {_TIMED[n]: round(float(v), 1) for n, v in zip(names, values, strict=True) if n in _TIMED}
    return found


def save(deployment: str, cache_key: str) -> Path | None:
    """Write what this process compiled under SAVE_COMPILE_CACHE (if set); returns the artifact's path."""
    if not os.environ.get(SAVE_ENV):
        return None
    result = torch.compiler.save_cache_artifacts()
    if result is None:
        log_event("compile_cache.save", saved=False, reason="nothing was compiled in this process")
        return None
    data, _ = result
    path = Path(os.environ[SAVE_ENV]) / relative_path(deployment, cache_key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    log_event("compile_cache.save", saved=True, path=str(path), bytes=len(data))
    return path
