"""Model builders for the weight profiles (tiny, synthetic) and the loaders for real checkpoints."""

import contextlib

import torch


@contextlib.contextmanager
def materialize_on(device: str, dtype: torch.dtype):
    """Create parameters directly on `device` in `dtype`: a 12B model built in fp32 and cast after
    would need twice its bf16 size at once (about 67 GB for FLUX), more than an H100 has free."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def random_in_host_memory(factory, draw_on: str, dtype: torch.dtype) -> torch.nn.Module:
    """`factory()`'s module, seeded random weights in host memory, each layer's drawn on `draw_on` and moved to
    the host at once. The CPU's generator is one thread: FLUX's 12B transformer took longer than a 240 s boot
    allowed there (H100 machine, 2026-12-05); a GPU draws it in seconds while holding one layer at a time.
    Every layer with weights must reset them itself (`reset_parameters`: Linear, norms); no buffers."""
    with materialize_on("meta", dtype):
        model = factory()
    if any(True for _ in model.buffers()):
        raise ValueError(f"{type(model).__name__} has buffers, which a meta-device build does not compute")
    for module in model.modules():
        if not any(True for _ in module.parameters(recurse=False)):
            continue
        if not hasattr(module, "reset_parameters"):
            raise ValueError(f"{type(module).__name__} cannot draw its own weights (no reset_parameters)")
        module.to_empty(device=draw_on, recurse=False)
        with torch.no_grad():
            module.reset_parameters()
        module.to("cpu")
    return model
