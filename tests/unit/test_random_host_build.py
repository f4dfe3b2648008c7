"""Random weights for a model kept in host memory, drawn layer by layer elsewhere (shared/builders
`random_in_host_memory`): what the synthetic low-memory FLUX boot uses, so a 12B transformer is not drawn by
the CPU's one-thread generator. Drawn on the CPU here, it must be the very model a plain build makes."""

import pytest
import torch

from shared.builders import materialize_on, random_in_host_memory
from shared.builders.flux import TINY_TRANSFORMER


def _flux():
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(**TINY_TRANSFORMER)


def test_layer_by_layer_gives_the_weights_a_plain_build_gives():
    torch.manual_seed(0)
    drawn = random_in_host_memory(_flux, draw_on="cpu", dtype=torch.float32).state_dict()
    torch.manual_seed(0)
    with materialize_on("cpu", torch.float32):
        plain = _flux().state_dict()
    assert drawn.keys() == plain.keys()
    assert all(torch.equal(drawn[k], plain[k]) for k in plain)
    assert all(t.device.type == "cpu" for t in drawn.values())


def test_modules_it_cannot_build_are_refused_not_left_empty():
    class WithBuffer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("table", torch.arange(4.0))  # computed in __init__: lost on the meta device

    class NoReset(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(3))

    with pytest.raises(ValueError, match="buffers"):
        random_in_host_memory(WithBuffer, draw_on="cpu", dtype=torch.float32)
    with pytest.raises(ValueError, match="reset_parameters"):
        random_in_host_memory(NoReset, draw_on="cpu", dtype=torch.float32)
