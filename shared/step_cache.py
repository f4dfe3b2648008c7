"""First-block cache: FLUX's opt-in `go_fast`, which skips the transformer's blocks on steps that change little.

The idea is ParaAttention's First Block Cache (diffusers ships it as `apply_first_block_cache`): each step runs
the first block, and if what that block added differs from what it added on the last fully computed step by
less than `threshold` (relative mean absolute difference), the other 56 blocks are not run; what they added on
that last full step is added again instead. Neighbouring steps of a diffusion sampler are alike, so many are
skipped; the image is close to the exact one, not equal to it, which is why this is opt-in and the benchmark
reports its fidelity against the exact path.

Why not diffusers' own: its hooks replace each block's `forward`, which runs inside the regionally compiled
blocks (`fullgraph=True`), and the skip decision is a host-side branch, a graph break there. Here the blocks
stay exactly as compiled: for the span of one generation the block lists hold thin wrappers that call them
(or not), the transformer runs its eager forward instead of the replayed CUDA graph (a graph replays every
block), and everything is put back afterwards, so LoRA hot-swaps, the graphs and the exact path are untouched.
The one cost per step beyond the skipped blocks' savings: one host sync for the decision.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

# ParaAttention's figure for FLUX.1-dev (its README, "residual_diff_threshold=0.08"); not tuned here: the
# real weights are needed for that (benchmarks/flux_speed.py reports speed and fidelity for the value used).
THRESHOLD = 0.08


@dataclass
class CacheState:
    threshold: float
    computed: int = 0
    skipped: int = 0
    head_residual: torch.Tensor | None = None  # what the first block added on the last full step
    head_output: tuple | None = None  # that step's first-block output (encoder, hidden)
    tail_residual: tuple | None = None  # what the other blocks added on it (encoder, hidden)
    compute: bool = True  # this step runs every block

    def decide(self, residual: torch.Tensor) -> bool:
        if self.head_residual is None or self.tail_residual is None:
            return True
        change = (residual - self.head_residual).abs().mean() / self.head_residual.abs().mean()
        return bool(change.item() >= self.threshold)  # the host sync


class _Head(torch.nn.Module):
    def __init__(self, block, state: CacheState):
        super().__init__()
        self.block, self.state = block, state

    def forward(self, hidden_states, encoder_hidden_states, **kwargs):
        encoder_out, hidden_out = self.block(hidden_states=hidden_states, encoder_hidden_states=encoder_hidden_states,
                                             **kwargs)
        state = self.state
        residual = hidden_out - hidden_states
        state.compute = state.decide(residual)
        if state.compute:
            state.computed += 1
            state.head_residual, state.head_output = residual, (encoder_out, hidden_out)
            return encoder_out, hidden_out
        state.skipped += 1
        return encoder_out + state.tail_residual[0], hidden_out + state.tail_residual[1]


class _Tail(torch.nn.Module):
    def __init__(self, block, state: CacheState, last: bool):
        super().__init__()
        self.block, self.state, self.last = block, state, last

    def forward(self, hidden_states, encoder_hidden_states, **kwargs):
        state = self.state
        if not state.compute:
            return encoder_hidden_states, hidden_states  # already the cached result (_Head)
        encoder_out, hidden_out = self.block(hidden_states=hidden_states, encoder_hidden_states=encoder_hidden_states,
                                             **kwargs)
        if self.last:
            state.tail_residual = (encoder_out - state.head_output[0], hidden_out - state.head_output[1])
        return encoder_out, hidden_out


@contextlib.contextmanager
def first_block_cache(transformer, threshold: float | None = None):
    """For one generation: FLUX's blocks behind the cache; yields its CacheState (steps computed and skipped)."""
    state = CacheState(threshold=THRESHOLD if threshold is None else threshold)
    lists = [transformer.transformer_blocks, transformer.single_transformer_blocks]
    originals = [list(blocks) for blocks in lists]
    count = sum(len(blocks) for blocks in originals)
    position = 0
    for blocks in lists:
        for i, block in enumerate(list(blocks)):
            blocks[i] = _Head(block, state) if position == 0 else _Tail(block, state, last=position == count - 1)
            position += 1
    # A CUDA graph (shared/graphed_step.py) replays every block as captured: this generation runs eagerly.
    graphed = transformer.__dict__.get("forward")
    if graphed is not None and hasattr(graphed, "eager"):
        transformer.forward = graphed.eager
    try:
        yield state
    finally:
        for blocks, blocks_before in zip(lists, originals, strict=True):
            for i, block in enumerate(blocks_before):
                blocks[i] = block
        if graphed is not None:
            transformer.forward = graphed
