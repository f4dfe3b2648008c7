"""Compile work made once on a GPU, shipped with the weights, and loaded in setup().

A cold boot spends most of its time compiling (FLUX's regional compile with dynamic shapes, the text
models' decode steps). Two kinds of artifact carry that work to a new machine; setup() loads the first
one found for its key:

- `<key>.tar`: Inductor's whole cache folder (compiled graphs, AOTAutograd entries, autotuning results
  and the built kernels themselves: Triton's cubins on a GPU, shared objects on a CPU), unpacked into
  this process's cache folder before anything compiles. What Replicate's compile caching ships.
- `<key>.bin`: torch's mega-cache (`torch.compiler.save_cache_artifacts` / `load_cache_artifacts`).
  Measured on the H100 through the Cog server (benchmarks/results/*cold-start*, docs/operations.md):
  FLUX txt2img boots in 33 s with the .tar and 36 s with the .bin instead of 58 s cold; SmolLM3 in 43 s
  (.bin) instead of 109. On CPU (tiny FLUX, tests/unit/test_compile_cache.py) loading the .tar leaves 8 s
  of compile work, the .bin 20 s. Gemma's coordinate-descent tunings travel in the .tar, but torch 2.11
  re-ran most of them (pytorch#172819) until shared/coordesc_cache_fix.py: 37-47 s instead of 67-82 s.

Dynamo still traces either way (seconds). Compiled code is only reusable on the same torch, CUDA, Triton
and GPU model, with the same optimizations: that is the artifact's key and its file name, so a boot on
another GPU or torch finds no file of its key and compiles, with one log line naming the keys it found.

    SAVE_COMPILE_CACHE=DIR   after warm-up, write DIR/compile-cache/<deployment>/<key>.{tar,bin} (once per release)
    COMPILE_CACHE=DIR        read artifacts from DIR/compile-cache/ (default: the weights folder, i.e. the mirror bundle)
    COMPILE_CACHE_KIND=tar|bin   use only that kind (the cold-start benchmark measures each)
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import tarfile
import time
from pathlib import Path

import torch

from . import coordesc_cache_fix
from .runtime import log_event

LOAD_ENV = "COMPILE_CACHE"
SAVE_ENV = "SAVE_COMPILE_CACHE"
KIND_ENV = "COMPILE_CACHE_KIND"
FOLDER = "compile-cache"
KINDS = ("tar", "bin")


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


def relative_path(deployment: str, cache_key: str, kind: str = "tar") -> str:
    """An artifact's path inside a weights folder or mirror bundle."""
    return f"{FOLDER}/{deployment}/{cache_key}.{kind}"


def wanted_files(deployment: str, cache_key: str):
    """Which files of a mirror bundle a boot downloads: everything but other deployments' and keys' artifacts."""
    own = {relative_path(deployment, cache_key, kind) for kind in KINDS}
    return lambda path: not path.startswith(FOLDER + "/") or path in own


def _inductor_dir() -> Path:
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    return Path(cache_dir())


def _kinds() -> tuple[str, ...]:
    chosen = os.environ.get(KIND_ENV)
    return (chosen,) if chosen else KINDS


def load(folder: Path | None, deployment: str, cache_key: str) -> bool:
    """Load this key's artifact from `folder` (COMPILE_CACHE overrides it); True if one was loaded."""
    root = Path(os.environ[LOAD_ENV]) if os.environ.get(LOAD_ENV) else folder
    if root is None:
        return False
    found = [root / relative_path(deployment, cache_key, kind) for kind in _kinds()]
    found = [path for path in found if path.is_file()]
    if not found:
        here = root / FOLDER / deployment
        others = sorted(p.name for p in here.iterdir()) if here.is_dir() else []
        log_event("compile_cache.none", wanted=cache_key, found=others, action="compiling from scratch")
        return False
    path, started = found[0], time.perf_counter()
    # Whoever turns tuning on (a deployment, or a library: hqq's inference patch does), the tuned configs in
    # the artifact must be kept, not tuned again.
    coordesc_cache_fix.install()
    if path.suffix == ".tar":
        target = _inductor_dir()
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(path) as archive:
            archive.extractall(target, filter="data")  # "data": nothing outside target, no links out, no devices
        detail = {"into": str(target)}
    else:
        info = torch.compiler.load_cache_artifacts(path.read_bytes())
        detail = {"artifacts": {k: len(v) for k, v in (getattr(info, "artifacts", None) or {}).items()}}
    log_event("compile_cache.loaded", path=str(path), bytes=path.stat().st_size,
              seconds=round(time.perf_counter() - started, 2), **detail)
    return True


# Where compile time goes (torch._dynamo.utils.compile_times): tracing is never cached, lowering and the
# kernels are; a warm boot that is still slow shows which.
_TIMED = {"_compile.compile_inner": "total", "bytecode_tracing": "dynamo_trace", "build_guards": "guards",
          "create_aot_dispatcher_function": "aot", "compile_fx_inner": "inductor", "async_compile.wait": "kernels",
          "PyCodeCache.load_by_key_path": "load_compiled"}


def stats() -> dict:
    """This process's compile-cache hits and misses (Inductor graphs, AOTAutograd) and compile seconds, for
    the setup log."""
    from torch._dynamo.utils import compile_times, counters

    found = {f"inductor_{k}": v for k, v in counters["inductor"].items()
             if k.startswith("fxgraph_cache") or k == "coordesc_tuning_bench"}  # kernels tuned in this process
    found |= {f"aot_{k}": v for k, v in counters["aot_autograd"].items() if k.startswith("autograd_cache")}
    names, values = compile_times(repr="csv", aggregate=True)
    found["seconds"] = {_TIMED[n]: round(float(v), 1) for n, v in zip(names, values, strict=True) if n in _TIMED}
    return found


def save(deployment: str, cache_key: str) -> list[Path]:
    """Write both kinds of artifact for what this process compiled under SAVE_COMPILE_CACHE (if set)."""
    if not os.environ.get(SAVE_ENV):
        return []
    folder = Path(os.environ[SAVE_ENV])
    written = []
    result = torch.compiler.save_cache_artifacts()
    if result is None:
        log_event("compile_cache.save", saved=False, reason="nothing was compiled in this process")
        return []
    path = folder / relative_path(deployment, cache_key, "bin")
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, lambda tmp: tmp.write_bytes(result[0]))
    written.append(path)
    path = folder / relative_path(deployment, cache_key, "tar")

    def pack(tmp: Path) -> None:
        with tarfile.open(tmp, "w") as archive:  # uncompressed: unpacking at boot must be fast
            archive.add(_inductor_dir(), arcname=".", filter=lambda m: None if m.name.startswith("./locks") else m)

    _write_atomically(path, pack)
    written.append(path)
    log_event("compile_cache.save", saved=True, paths=[str(p) for p in written], bytes=[p.stat().st_size for p in written])
    return written


def _write_atomically(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".partial")
    write(tmp)
    os.replace(tmp, path)
