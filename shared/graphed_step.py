"""A model's whole forward replayed as one CUDA graph, one graph per input shape: the denoising step of FLUX.

Regional compile leaves Python between the 57 compiled blocks, and torchao's fp8 weights are tensor
subclasses unwrapped at every block call: on an H200 at 1024x1024, a step of the fp8 (per-row) transformer
took 118 ms for 106 ms of GPU work, per-tensor 165 ms for 106 (benchmarks/results/*-flux-variants-*).
Replaying a captured graph launches all of a step's kernels without that Python.

What a graph holds is fixed at capture: the addresses of every tensor the step reads. Inputs are copied into
the graph's own buffers before each replay. Weights are read where they live, so a LoRA hot-swap, which
copies into the same tensors (peft's hotswap with padded ranks: shared/lora_router.py), is seen by the next
replay. Anything that swaps a parameter for a new tensor must `clear()` the graphs first.

Each shape gets its own graph (captured on its first call: two eager runs to compile and warm, then the
capture), and its own memory pool for the step's activations; the `max_graphs` most recently used are
kept, so a stream of new image sizes cannot grow memory without bound. With `shared_pool`, every shape's
graph takes its activations from one pool instead, so memory holds about the largest step's, not one per
shape: safe here because the graphs never replay at once (one step at a time) and each replay's outputs are
copied out before the next replay, which may reuse their memory (PyTorch's "sharing memory across captures").
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from .runtime import log_event


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: dict[str, torch.Tensor]  # the buffers the graph reads its tensor arguments from
    outputs: tuple[torch.Tensor, ...]  # where it writes its results


class GraphedForward:
    """Wraps `module.forward`: same call, same results, replayed from a CUDA graph per shape."""

    def __init__(self, module: torch.nn.Module, *, max_graphs: int = 3, name: str = "forward", shared_pool: bool = False):
        self.module, self.eager = module, module.forward
        self.max_graphs, self.name = max_graphs, name
        self.pool = torch.cuda.graph_pool_handle() if shared_pool else None  # None: a private pool per graph
        self.graphs: OrderedDict[tuple, _Graph] = OrderedDict()
        module.forward = self  # nn.Module.__call__ calls the instance attribute

    def remove(self) -> None:
        """Back to the eager forward; the graphs and their memory are released."""
        self.clear()
        self.module.forward = self.eager

    def clear(self) -> None:
        self.graphs.clear()

    def __call__(self, **kwargs):
        if kwargs.get("return_dict", True) or not torch.cuda.is_available():
            return self.eager(**kwargs)  # only the tuple form is graphed: what the pipelines call
        key = tuple(sorted((k, (tuple(v.shape), v.dtype, v.device) if torch.is_tensor(v) else repr(v))
                           for k, v in kwargs.items()))
        entry = self.graphs.get(key)
        if entry is None:
            entry = self._capture(key, kwargs)
        else:
            self.graphs.move_to_end(key)
        for name, buffer in entry.inputs.items():
            buffer.copy_(kwargs[name])
        entry.graph.replay()
        # Copies: the next replay overwrites the graph's outputs, and a caller may keep these.
        return tuple(t.clone() for t in entry.outputs)

    def _capture(self, key: tuple, kwargs: dict) -> _Graph:
        while len(self.graphs) >= self.max_graphs:
            self.graphs.popitem(last=False)  # its graph, buffers and memory pool go with it
        inputs = {k: v.clone() for k, v in kwargs.items() if torch.is_tensor(v)}
        call = {**kwargs, **inputs}
        # Warm up on a side stream (compiles, picks kernels, allocates workspaces), as torch.cuda.graphs asks.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self.eager(**call)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            outputs = self.eager(**call)
        if not isinstance(outputs, tuple) or not all(torch.is_tensor(t) for t in outputs):
            raise TypeError(f"{self.name}: only a forward returning a tuple of tensors can be graphed")
        entry = self.graphs[key] = _Graph(graph, inputs, outputs)
        log_event("cuda_graph.captured", what=self.name,
                  shapes={k: list(v.shape) for k, v in inputs.items() if v.dim() > 1}, graphs=len(self.graphs))
        return entry
