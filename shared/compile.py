"""Selective compilation: compile the hot, repeated submodules in place, not the whole model.

Compiling one repeated block class (regional compilation) costs the compile time of one block, reuses
it for every layer, and keeps module names and state-dict keys intact (LoRA hot-swap still finds its
layers). Whole-model compile of FLUX did not finish in 6 minutes on an H100; regional took 21 s.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from . import coordesc_cache_fix
from .runtime import log_event


def default_backend() -> str:
    # Inductor on CPU needs a C++ toolchain and minutes on 2 cores; "eager" still runs Dynamo (same
    # graphs, same guards, same recompiles), which is what CPU tests check.
    return os.environ.get("COMPILE_BACKEND") or ("inductor" if torch.cuda.is_available() else "eager")


def tune_kernels(enabled: bool) -> None:
    """Inductor's coordinate-descent tuning: each kernel's launch config is refined by benchmarking its
    neighbours at first run. Worth it for small, memory-bound decode kernels (gpt-fast and torchao turn
    it on for int8); for FLUX's dynamic-shape blocks it cost 240 s of a cold boot. Process-wide setting."""
    from torch._inductor import config as inductor_config

    inductor_config.coordinate_descent_tuning = enabled
    inductor_config.coordinate_descent_check_all_directions = enabled
    if enabled:
        coordesc_cache_fix.install()  # so a boot from the compile artifact does not tune again


def compile_blocks(model: nn.Module, block_classes: tuple[str, ...], *, fullgraph: bool = True,
                   backend: str | None = None, mode: str | None = None, dynamic: bool | None = None) -> int:
    """`module.compile()` every submodule whose class name is in `block_classes`; returns how many."""
    backend = backend or default_backend()
    count = 0
    for module in model.modules():
        if type(module).__name__ in block_classes:
            module.compile(fullgraph=fullgraph, backend=backend, mode=mode, dynamic=dynamic)
            count += 1
    if count == 0:
        raise ValueError(f"no submodule of class {block_classes} found to compile")
    log_event("compile", scope="blocks", classes=list(block_classes), count=count, backend=backend, mode=mode)
    return count
