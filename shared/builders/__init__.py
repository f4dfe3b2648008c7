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
