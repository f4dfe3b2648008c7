"""shared/graphed_step.py on a small model: a replayed CUDA graph gives the eager forward's results, sees
weights changed in place (what a LoRA hot-swap does), and keeps at most `max_graphs` shapes.

On the device machine (`make test-gpu`); FLUX's own graphs are checked there by the txt2img server test
and `bench.py flux-variants --end-to-end` (graph pixels equal eager pixels)."""

import pytest
import torch

from shared.graphed_step import GraphedForward

pytestmark = pytest.mark.gpu


class Step(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64))

    def forward(self, hidden_states, scale=None, return_dict=True):
        out = self.inner(hidden_states) * scale
        return (out,) if not return_dict else {"sample": out}


def _model(compiled: bool = False):
    torch.manual_seed(0)
    model = Step().cuda().eval()
    if compiled:
        model.inner.compile(fullgraph=True, dynamic=True)  # as FLUX's blocks are: compiled inside the graphed forward
    return model


@pytest.mark.parametrize("compiled,shared_pool", [(False, False), (True, False), (True, True)])
def test_replay_gives_the_eager_results_for_each_shape(compiled, shared_pool):
    """Shapes in turn (16, 48, 16): with one pool for all, the 48 graph reuses the 16 graph's memory, and the
    16 graph's next replay must still be right."""
    model = _model(compiled)
    inputs = [torch.randn(1, n, 64, device="cuda") for n in (16, 48, 16)]
    scale = torch.tensor(0.5, device="cuda")
    with torch.inference_mode():
        expected = [model(hidden_states=x, scale=scale, return_dict=False)[0] for x in inputs]
        graphed = GraphedForward(model, max_graphs=3, shared_pool=shared_pool)
        got = [model(hidden_states=x, scale=scale, return_dict=False)[0] for x in inputs]
    assert len(graphed.graphs) == 2, "one graph per shape"
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e)


def test_weights_changed_in_place_are_seen_by_the_next_replay():
    model = _model()
    x, scale = torch.randn(1, 16, 64, device="cuda"), torch.tensor(1.0, device="cuda")
    with torch.inference_mode():
        GraphedForward(model)
        before = model(hidden_states=x, scale=scale, return_dict=False)[0]
        with torch.no_grad():
            model.inner[2].weight.mul_(2.0)  # a hot-swap copies into the same tensor
        after = model(hidden_states=x, scale=scale, return_dict=False)[0]
        model.forward.remove()
        eager = model(hidden_states=x, scale=scale, return_dict=False)[0]
    assert not torch.equal(before, after)
    torch.testing.assert_close(after, eager)


def test_the_oldest_shape_is_evicted_past_max_graphs():
    model = _model()
    scale = torch.tensor(1.0, device="cuda")
    with torch.inference_mode():
        graphed = GraphedForward(model, max_graphs=2)
        for n in (8, 16, 32, 16):
            model(hidden_states=torch.randn(1, n, 64, device="cuda"), scale=scale, return_dict=False)
    assert [key[0][1][0] for key in graphed.graphs] == [(1, 32, 64), (1, 16, 64)]


def test_the_dict_form_is_served_eagerly():
    model = _model()
    with torch.inference_mode():
        graphed = GraphedForward(model)
        out = model(hidden_states=torch.randn(1, 8, 64, device="cuda"), scale=torch.tensor(1.0, device="cuda"))
    assert "sample" in out and not graphed.graphs
