"""A gpt-fast style decode loop for one stream over a transformers causal LM.

HF `generate` spends its time between tokens in Python (logits processors, stopping criteria, the
streamer, cache bookkeeping): a 3B model ran at 7-30% of what memory bandwidth allows. Here:

- a static KV cache per size bucket (transformers' StaticCache, full-length layers: see
  `new_static_cache`), reused across requests, so shapes and addresses never change; the buckets are
  views of one allocation (`KVStorage`), which the batched decoder's rows share too;
- prefill runs the model once over the prompt (images included, for Gemma): eagerly, or compiled apart
  from the step for any prompt length (`compile_prefill`): eager, a 3B model's Python alone cost ~60 ms;
- the one-token step, *sampling included*, is one function compiled with CUDA graphs: a token costs
  one graph replay and no host work;
- the host reads tokens back every `chunk` steps (one sync), which is when stop tokens and
  cancellation are checked; tokens decoded past a stop token are dropped.

Sampling draws its randomness from a counter-based hash of (seed, position, token id) instead of a
generator's state: the same seed gives the same tokens whatever ran before, no RNG state has to be
threaded through the CUDA graph, and each row of a batch can carry its own seed.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch

from .int4_prefill import compiled_prompt
from .runtime import log_event

# Below this temperature the distribution is one-hot long before dividing by it overflows (1e-45 gave
# "probability tensor contains inf, nan"): greedy.
GREEDY_BELOW = 1e-3

_M32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xor-shift-multiply, constant 0x45d9f3b) on int64 tensors holding values
    below 2**32; every product stays below 2**59, so nothing overflows on any backend."""
    x = ((x >> 16) ^ x) * 0x45D9F3B & _M32
    x = ((x >> 16) ^ x) * 0x45D9F3B & _M32
    return (x >> 16) ^ x


def exponential_noise(seed: torch.Tensor, position: torch.Tensor, vocab: int) -> torch.Tensor:
    """[B, vocab] float32 draws of Exp(1), a pure function of (seed[b], position[b], token id)."""
    row = _mix32((_mix32(seed & _M32) + position) & _M32)  # [B]
    ids = torch.arange(vocab, device=seed.device, dtype=torch.int64)
    # No multiply by a constant of 2**31 or more: Triton typed one against the int32 index (H200, torch 2.11).
    bits = _mix32((row[:, None] + ids) & _M32) >> 9  # 23 random bits
    uniform = (bits.float() + 0.5) / 2.0**23  # in (0, 1): never 0 or 1 in float32
    return -torch.log(uniform)


def sample(logits: torch.Tensor, seed: torch.Tensor, position: torch.Tensor, temperature: torch.Tensor,
           top_p: torch.Tensor, top_k: int = 0) -> torch.Tensor:
    """Next token per row [B] from logits [B, V]: greedy where temperature < GREEDY_BELOW or top_p == 0,
    else temperature, top_k (0 = off; the model's generation config), then nucleus top_p, in HF's order.

    Branch-free (both results are computed and one is picked per row), so one CUDA graph serves every
    request's settings. The draw is the exponential race, argmax(p / E), which samples p exactly.
    """
    logits = logits.float()
    greedy = logits.argmax(-1)
    probs = torch.softmax(logits / temperature.clamp_min(GREEDY_BELOW)[:, None], dim=-1)
    ordered = probs.sort(dim=-1, descending=True).values
    keep = (ordered.cumsum(-1) - ordered) <= top_p[:, None]  # the smallest head whose mass reaches top_p
    if top_k:
        keep[:, top_k:] = False
    # The smallest probability kept, as a threshold in token order: no gather through the sort's indices
    # (Inductor failed to generate the argmax over such a gather, torch 2.11).
    threshold = ordered.gather(-1, keep.sum(-1, keepdim=True) - 1)
    probs = probs.masked_fill(probs < threshold, 0.0)
    sampled = (probs / exponential_noise(seed, position, logits.shape[-1])).argmax(-1)
    return torch.where((temperature < GREEDY_BELOW) | (top_p <= 0), greedy, sampled)


def new_static_cache(model, max_cache_len: int):
    """A static KV cache of `max_cache_len` tokens whose layers all have full length.

    transformers' sliding-window static layers (Gemma 3: 5 of every 6 layers) count tokens in a Python
    int that torch.compile guards on, so every decode step recompiles (48 s each for Gemma 3 4B on the
    H100; transformers#44609). Full-length layers under the model's own sliding-window masks compute the
    same attention with fixed shapes, for more cache memory (~1.4 GB at 10k tokens for Gemma 3 4B).
    """
    from transformers import StaticCache

    config = copy.copy(model.config.get_text_config(decoder=True))
    config.layer_types = ["full_attention"] * config.num_hidden_layers
    return StaticCache(config=config, max_cache_len=max_cache_len)


class KVStorage:
    """One allocation of KV memory (per layer, a flat key and a flat value buffer of `tokens` positions) that
    static caches are views of, from its front: every size bucket of the engine, and the batched decoder's
    rows (shared/batch_decode.py). Sharing is safe because one of them is in use at a time: the engine decodes
    one request, and only while no row is busy (a lone request's KV moves into a row when another arrives).
    Positions past a request's own are masked, so what an earlier request left there is never read. A bucket
    or the rows then cost their compile, not memory: SmolLM3's 18,432-token cache and its 8 x 2,048 rows took
    2.6 GB apart, 1.4 GB together."""

    def __init__(self, model, tokens: int):
        config = model.config.get_text_config(decoder=True)
        self.heads = config.num_key_value_heads
        self.dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.tokens = tokens
        size = tokens * self.heads * self.dim
        dtype, device = model.get_input_embeddings().weight.dtype, model.device  # quantized layers hold ints
        self.layers = [(torch.zeros(size, dtype=dtype, device=device), torch.zeros(size, dtype=dtype, device=device))
                       for _ in range(config.num_hidden_layers)]

    @property
    def nbytes(self) -> int:
        return sum(keys.nbytes + values.nbytes for keys, values in self.layers)

    def cache(self, model, length: int, batch: int = 1):
        """A static cache of `batch` rows of `length` positions over the front of this memory."""
        if batch * length > self.tokens:
            raise ValueError(f"{batch} x {length} positions do not fit a KV storage of {self.tokens}")
        cache = new_static_cache(model, length)
        # transformers' own fields (shapes, dtype), set up on the meta device: no memory. Then the real tensors.
        cache.early_initialization(batch, self.heads, self.dim, self.layers[0][0].dtype, torch.device("meta"))
        shape = (batch, self.heads, length, self.dim)
        n = batch * self.heads * length * self.dim
        for layer, (keys, values) in zip(cache.layers, self.layers, strict=True):
            layer.device = keys.device
            layer.keys, layer.values = keys[:n].view(shape), values[:n].view(shape)
            layer.cumulative_length = torch.zeros((), dtype=torch.long, device=keys.device)  # where transformers writes
            for tensor in (layer.keys, layer.values, layer.cumulative_length):
                torch._dynamo.mark_static_address(tensor)  # as transformers marks its own: CUDA graphs need it
        return cache


def same_memory(cache, other) -> bool:
    """Whether two static caches are views of one allocation (a KVStorage)."""
    return cache.layers[0].keys.untyped_storage().data_ptr() == other.layers[0].keys.untyped_storage().data_ptr()


@dataclass
class Sampling:
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0


def sampling_tensors(settings: Sequence[Sampling], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(seed, temperature, top_p), one entry per request: the tensors `sample` and the compiled steps read."""
    return (torch.tensor([s.seed for s in settings], device=device),
            torch.tensor([float(s.temperature) for s in settings], device=device, dtype=torch.float32),
            torch.tensor([float(s.top_p) for s in settings], device=device, dtype=torch.float32))


@dataclass
class Stream:
    """One request's decode state on the device: its cache, the last token sampled (not yet fed to the
    model) and the position its KV goes to, its sampling settings, and where a chunk's tokens wait."""
    cache: object
    token: torch.Tensor
    position: torch.Tensor
    seed: torch.Tensor
    temperature: torch.Tensor
    top_p: torch.Tensor
    out: torch.Tensor


class DecodeEngine:
    """Generates token ids for one request at a time; see the module docstring.

    `compile_step`: None runs the step eagerly; otherwise torch.compile keyword arguments (backend,
    mode). Call `generate` from one thread only: CUDA graphs belong to the thread that captured them.
    """

    def __init__(self, model, cache_sizes: Sequence[int], *, compile_step: dict | None = None, chunk: int = 8,
                 top_k: int | None = None, compile_prefill: dict | None = None, reserve_tokens: int = 0):
        """`reserve_tokens`: make the KV storage at least this long, for a batched decoder's rows to share."""
        self.model = model
        self.device = model.device
        sizes = sorted(set(cache_sizes))
        self.kv = KVStorage(model, max(sizes[-1], reserve_tokens))
        self.caches = [self.kv.cache(model, n) for n in sizes]
        self.chunk = chunk
        # The checkpoint's own top_k (Gemma 3 ships 64), as HF generate would apply when sampling.
        self.top_k = int(top_k if top_k is not None else (getattr(model.generation_config, "top_k", 0) or 0))
        self.compiled = compile_step is not None
        self.step = self._step
        if compile_step is not None:
            # Whole step in one graph (fullgraph: a graph break would split the CUDA graph); fixed shapes.
            self.step = torch.compile(self._step, fullgraph=True, dynamic=False, **compile_step)
        self._compiled_prefill = None
        if compile_prefill is not None:
            # Only what varies is symbolic: the prompt's length, marked at each call (`prefill`), and the cache's
            # length once a second size has run (automatic dynamic): one graph for every prompt and later size,
            # and no CUDA graph (its shapes change with each prompt). dynamic=True also made the int4 layers'
            # tensor sizes symbolic, and Dynamo tied one of them (2,048) to the first cache's length: the prefill
            # recompiled for every cache size, two minutes each (SmolLM3 HQQ int4, H100, 2026-12-06).
            self._compiled_prefill = torch.compile(self._prefill, **compile_prefill)

    def prefill(self, inputs: dict, cache) -> torch.Tensor:
        """The prompt's forward into `cache` (compiled where asked): the last position's logits."""
        if self._compiled_prefill is None:
            return self._prefill(inputs, cache)
        for value in inputs.values():  # input_ids, attention_mask: [1, prompt length]
            if isinstance(value, torch.Tensor) and value.dim() >= 2:
                torch._dynamo.maybe_mark_dynamic(value, 1)
        with compiled_prompt():  # int4 layers (shared/int4_prefill.py): one graph for every length
            return self._compiled_prefill(inputs, cache)

    def _prefill(self, inputs: dict, cache) -> torch.Tensor:
        """The uncompiled forward of `prefill`."""
        return self.model(**inputs, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]

    def _step(self, cache, token: torch.Tensor, position: torch.Tensor, seed: torch.Tensor,
              temperature: torch.Tensor, top_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One token: forward over the cache, sample, and the next position. All on the device."""
        logits = self.model(input_ids=token, position_ids=position[:, None], past_key_values=cache,
                            use_cache=True, logits_to_keep=1).logits[:, -1]
        next_position = position + 1
        return sample(logits, seed, next_position, temperature, top_p, self.top_k)[:, None], next_position

    def cache_for(self, total_tokens: int):
        """The smallest cache that holds `total_tokens`, emptied. A longer request grows the largest cache
        (one recompile of the step); the inputs' limits make that rare by construction."""
        cache = next((c for c in self.caches if c.get_max_length() >= total_tokens), None)
        if cache is None:
            log_event("kv_cache.grow", tokens=total_tokens, previous=self.caches[-1].get_max_length())
            cache = self.caches[-1] = new_static_cache(self.model, total_tokens)
        cache.reset()
        return cache

    @torch.inference_mode()
    def start(self, inputs: dict, sampling: Sampling, cache) -> tuple[Stream, int]:
        """Prefill `cache` (emptied here) with the prompt and sample the first token: (the stream, that token)."""
        prompt = inputs["input_ids"]
        if prompt.shape[0] != 1:
            raise ValueError("DecodeEngine serves one sequence at a time")
        cache.reset()
        dev = self.device
        position = torch.tensor([prompt.shape[1]], device=dev)  # where the first new token's KV goes
        seed, temperature, top_p = sampling_tensors([sampling], dev)
        logits = self.prefill(inputs, cache)
        token = sample(logits, seed, position, temperature, top_p, self.top_k)[:, None]
        stream = Stream(cache, token, position, seed, temperature, top_p,
                        torch.empty(self.chunk, dtype=torch.long, device=dev))
        return stream, int(token[0, 0])

    @torch.inference_mode()
    def advance(self, stream: Stream, n: int) -> list[int]:
        """`n` (<= chunk) more tokens, queued on the device without waiting; one host sync reads them."""
        for i in range(n):
            token, position = self.step(stream.cache, stream.token, stream.position, stream.seed, stream.temperature,
                                        stream.top_p)
            # Graph outputs are overwritten by the next replay: keep copies.
            stream.token, stream.position = token.clone(), position.clone()
            stream.out[i] = stream.token[0, 0]
        return stream.out[:n].tolist()

    @torch.inference_mode()
    def generate(self, inputs: dict, *, max_new_tokens: int, sampling: Sampling, stop_ids: Sequence[int] = (),
                 cancelled: Callable[[], bool] = lambda: False, cache=None) -> Iterator[list[int]]:
        """Yield the new token ids in chunks (the first token alone, for time to first token). The last
        chunk ends with the stop token, if one came (as `generate` returns it); nothing follows it.
        `cache`: a cache of this engine to use (warm-up), instead of the smallest that fits."""
        if cache is None:
            cache = self.cache_for(inputs["input_ids"].shape[1] + max_new_tokens)
        stream, first = self.start(inputs, sampling, cache)
        stops = set(stop_ids)
        yield [first]
        done = 1
        if first in stops:
            return
        while done < max_new_tokens:
            chunk = self.advance(stream, min(self.chunk, max_new_tokens - done))
            done += len(chunk)
            hit = next((i for i, t in enumerate(chunk) if t in stops), None)
            if hit is not None:
                yield chunk[:hit + 1]
                return
            yield chunk
            if cancelled():
                return

    def warm_up(self, inputs: dict, steps: int = 3) -> float:
        """Compile and capture the step for every cache size before the first request, in the mode
        requests use (inference mode), on the calling thread. Returns seconds."""
        started = time.perf_counter()
        for cache in list(self.caches):
            size = cache.get_max_length()
            for _ in range(2):  # compile, then CUDA-graph warm-up and capture
                for _ in self.generate(inputs, max_new_tokens=steps + 1, sampling=Sampling(0.7, 0.9, 0), cache=cache):
                    pass
            log_event("warmup.cache", cache_tokens=size)
        return round(time.perf_counter() - started, 2)
