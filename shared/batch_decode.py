"""Continuous batching: concurrent requests decoded together, one token for every row per step.

Decode is memory-bound: a step reads every weight once whether it serves one sequence or eight, so
rows decoded together cost little more than one. Requests join and leave between steps:

- `rows` slots, each a row of one static KV cache (`row_tokens` long); a row's KV is written at that
  row's own position (`_row_update`), and a per-row mask limits attention to its own tokens;
- joining requests are prefilled together: the prompts waiting at the head of the queue (Gemma's images
  too), as many as there are free rows, in one right-padded forward whose KV goes into their rows (eager,
  a short prompt's prefill is mostly a 3B model's Python, ~30-60 ms whatever its batch: eight one after
  another held eight simultaneous requests' decoding for a quarter to half a second); it decodes with the
  others from the next step;
- the step (forward + sampling, every row with its own temperature, top_p and seed: the engine's
  counter-based sampler) is compiled with CUDA graphs once, for all `rows`; empty rows ride along;
- the steps run `chunk` at a time without waiting for the device (the engine's rule: one host sync per
  chunk, not per token; a step per sync left the GPU idle while the host handed tokens out); a chunk
  never runs a row past its token budget, and tokens a row decoded past its stop token are dropped;
- between chunks the host hands each request its tokens, frees the rows that hit a stop token, their
  token budget or a cancellation, and admits waiting requests.
A request alone in the decoder runs on the single-stream `DecodeEngine`, whose one-row step costs less
than the rows' step; when another request arrives, its KV moves into a row and it goes on with the others.
A request longer than `row_tokens` runs alone on the engine when no row is busy, and the others wait.

Why not transformers' continuous batching (`generate_batch`, `ContinuousBatchingManager`): its sampling
takes one seed for the whole manager (`ContinuousBatchingConfig.seed`) and `torch.multinomial`, and
greedy or sampled is one setting for all requests (transformers 5.23). Here each request keeps its own
seed: the same seed gives the same text alone or next to others, exactly on CPU (the tests); on a GPU the
rows' kernels may round differently from the one-row ones, so a sampled text can part from its lone
version after a near tie.
"""

from __future__ import annotations

import contextvars
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .decode_engine import (DecodeEngine, KVStorage, Sampling, Stream, new_static_cache, same_memory, sample,
                            sampling_tensors)
from .runtime import log_event

# The most prompt positions (padding included) one joint prefill runs: its transient KV and activations
# (Phi-4: 0.84 GB of KV at 4,096 positions).
PREFILL_TOGETHER_TOKENS = 4096


@dataclass
class Request:
    inputs: dict
    max_new_tokens: int
    sampling: Sampling
    stop_ids: Sequence[int]
    emit: Callable[[list[int] | None, BaseException | None], None]  # tokens, or (None, error) / (None, None) at the end
    cancelled: threading.Event = field(default_factory=threading.Event)
    done: int = 0

    def send(self, tokens: list[int] | None, error: BaseException | None = None) -> None:
        """Hand the requester its tokens (or the end); a requester that is gone (its event loop closed) only
        cancels its own request, never the step the others are in."""
        try:
            self.emit(tokens, error)
        except BaseException:
            self.cancelled.set()

    @property
    def tokens(self) -> int:
        return self.inputs["input_ids"].shape[1] + self.max_new_tokens


@dataclass
class Job:
    """A function to run on the decoder's thread while no row is busy (warm-ups, benchmarks): CUDA graphs
    belong to the thread that captured them."""
    fn: Callable[[], object]
    future: Future = field(default_factory=Future)


def _row_update(layer, rows: torch.Tensor, positions: torch.Tensor):
    """StaticLayer.update for one new token per row, written at each row's own position."""

    def update(key_states, value_states, *args, **kwargs):
        layer.keys[rows, :, positions] = key_states[:, :, 0]
        layer.values[rows, :, positions] = value_states[:, :, 0]
        return layer.keys, layer.values

    return update


def cuda_graphs_on_this_thread() -> None:
    """Let torch.compile's CUDA graphs ("reduce-overhead") run on this thread. Inductor keeps its CUDA-graph
    trees in thread-local storage set up for the importing thread and the threads autograd starts; on any
    other thread the first replay fails `assert torch._C._is_key_in_tls("tree_manager_containers")` (torch
    2.11, H200). This gives the thread its own trees, as Inductor's module does for the importing thread
    (torch 2.11 does it inline; 2.13 names it `_initialize_tls`: the same four lines, written here)."""
    from collections import defaultdict

    from torch._inductor import cudagraph_trees

    if not torch._C._is_key_in_tls("tree_manager_containers"):
        local = cudagraph_trees.local  # a threading.local: what is set here belongs to this thread
        local.tree_manager_containers = {}
        local.tree_manager_locks = defaultdict(threading.Lock)
        torch._C._stash_obj_in_tls("tree_manager_containers", local.tree_manager_containers)
        torch._C._stash_obj_in_tls("tree_manager_locks", local.tree_manager_locks)


# The inputs a joint prefill knows how to pad and stack: token ids, and Gemma 3's images (`pixel_values`, one
# entry per image, stacked in row order as the model scatters them) with the token types that mark them.
JOINABLE_INPUTS = {"input_ids", "attention_mask", "token_type_ids", "pixel_values"}


def _joinable(request: Request) -> bool:
    return set(request.inputs) <= JOINABLE_INPUTS


class BatchedDecoder:
    """Serves requests from many threads on one scheduler thread; see the module docstring."""

    def __init__(self, model, *, rows: int, row_tokens: int, single: DecodeEngine, compile_step: dict | None = None,
                 chunk: int = 8, solo: bool = True):
        self.model, self.rows, self.row_tokens, self.single, self.chunk = model, rows, row_tokens, single, chunk
        # A lone request decodes on the engine's one-row step: 317 tok/s against 143 in the 8-row step (H200,
        # SmolLM3 int4, benchmarks/results/2026-12-05-text-profile-*); False keeps every request in the rows.
        self.solo = solo
        self.device = model.device
        config = model.config.get_text_config(decoder=True)
        self.sliding = getattr(config, "sliding_window", None) if "sliding_attention" in (
            getattr(config, "layer_types", None) or ()) else None
        # The rows, over the engine's KV memory where it is long enough (DecodeEngine's reserve_tokens): the engine
        # decodes only while no row is busy.
        self.kv = single.kv if single.kv.tokens >= rows * row_tokens else KVStorage(model, rows * row_tokens)
        self.cache = self.kv.cache(model, row_tokens, batch=rows)
        self.prefill_cache = new_static_cache(model, row_tokens)  # inputs a joint prefill does not know (lazy)
        dev = self.device
        self.row_ids = torch.arange(rows, device=dev)
        self.positions = torch.zeros(rows, dtype=torch.long, device=dev)  # where each row writes next
        self.tokens = torch.zeros(rows, 1, dtype=torch.long, device=dev)
        self.seeds = torch.zeros(rows, dtype=torch.long, device=dev)
        self.temperature = torch.zeros(rows, device=dev)
        self.top_p = torch.ones(rows, device=dev)
        self.busy = torch.zeros(rows, dtype=torch.long, device=dev)  # 1 where a request decodes: only those advance
        self.out = torch.zeros(rows, chunk, dtype=torch.long, device=dev)  # a chunk's tokens wait here until read
        for layer in self.cache.layers:
            layer.update = _row_update(layer, self.row_ids, self.positions)
        self.slots: list[Request | None] = [None] * rows
        self.waiting: deque[Request | Job] = deque()
        self.arrived = threading.Condition()
        self.step = self._step if compile_step is None else torch.compile(self._step, fullgraph=True, dynamic=False,
                                                                         **compile_step)
        # Every step compiles on this thread. From torch 2.12, Dynamo and Inductor settings are per thread
        # (ContextVars): the thread starts with the creator's (kernel tuning, set in load_model), as one
        # process-wide setting gave under torch 2.11; later changes must be made on it (BatchedDecoder.call).
        self.thread = threading.Thread(target=contextvars.copy_context().run, args=(self._loop,), name="batched-decode",
                                       daemon=True)
        self.thread.start()

    # -- what runs on the device ----------------------------------------------------------------

    def _mask(self, positions: torch.Tensor):
        """[rows, 1, 1, row_tokens] True where a row may attend: its own tokens up to its position (and
        within the sliding window, for the sliding layers)."""
        kv = torch.arange(self.row_tokens, device=positions.device)
        full = (kv[None, :] <= positions[:, None])[:, None, None, :]
        if self.sliding is None:
            return full
        window = full & (kv[None, :] > positions[:, None] - self.sliding)[:, None, None, :]
        return {"full_attention": full, "sliding_attention": window}

    def _step(self, cache, tokens, positions, seeds, temperature, top_p):
        logits = self.model(input_ids=tokens, position_ids=positions[:, None], attention_mask=self._mask(positions),
                            past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        next_positions = positions + 1
        return sample(logits, seeds, next_positions, temperature, top_p, self.single.top_k)[:, None]

    # -- requests ---------------------------------------------------------------------------------

    def call(self, fn: Callable[[], object]):
        """Run `fn` on the decoder's thread when no row is busy; returns its result."""
        job = Job(fn)
        self.submit(job)
        return job.future.result()

    def submit(self, request: Request | Job) -> None:
        with self.arrived:
            self.waiting.append(request)
            self.arrived.notify()

    def _loop(self):
        try:
            cuda_graphs_on_this_thread()
        except Exception as e:  # the thread must live on: a dead decoder thread would hang every request
            log_event("batch.error", error=f"CUDA graphs on the decoder thread: {type(e).__name__}: {e}"[:500])
        with torch.inference_mode():
            while True:
                try:
                    self._admit()
                    if any(self.slots):
                        self._decode_chunk()
                except BaseException as e:  # a failed step fails the requests in it, not the server
                    log_event("batch.error", error=f"{type(e).__name__}: {e}"[:500])
                    for i, request in enumerate(self.slots):
                        if request is not None:
                            request.send(None, e)
                            self.slots[i] = None
                    self.positions.zero_()
                    self.busy.zero_()

    def _admit(self):
        """Move waiting requests into free rows, first come first served; wait while there is nothing to do."""
        while True:
            with self.arrived:
                while not self.waiting and not any(self.slots):
                    self.arrived.wait()
                if not self.waiting:
                    return
                request = self.waiting[0]
                busy = any(self.slots)
                long_alone = isinstance(request, Job) or request.tokens > self.row_tokens
                if (long_alone and busy) or (not long_alone and None not in self.slots):
                    return  # it waits at the head: the rows drain (or one frees) step by step
                self.waiting.popleft()
            if isinstance(request, Job):
                try:
                    request.future.set_result(request.fn())
                except BaseException as e:
                    request.future.set_exception(e)
            elif request.cancelled.is_set():
                request.send(None, None)
            elif long_alone:  # alone, on the single-stream engine, to its end: no row can hold it
                self._run_on_engine(request, may_join=False)
            elif self.solo and not busy and not self.waiting:
                self._run_on_engine(request, may_join=True)
            elif _joinable(request):
                group = [request] + self._take_joiners(request)
                try:
                    self._prefill_together(group)
                except BaseException as e:
                    for member in group:
                        member.send(None, e)
            else:
                try:
                    self._prefill(request, self.slots.index(None))
                except BaseException as e:
                    request.send(None, e)

    def _take_joiners(self, head: Request) -> list[Request]:
        """The requests waiting right behind `head` that free rows can take with it, within the joint prefill's
        padded size; taken off the queue in arrival order."""
        taken: list[Request] = []
        free, rows = self.slots.count(None) - 1, 1  # rows: the group's live requests, the head's included
        longest = head.inputs["input_ids"].shape[1]
        with self.arrived:
            while self.waiting and rows <= free:
                nxt = self.waiting[0]
                if not isinstance(nxt, Request) or nxt.tokens > self.row_tokens or not _joinable(nxt):
                    break
                if not nxt.cancelled.is_set():  # a cancelled one is only answered: it takes no row
                    length = max(longest, nxt.inputs["input_ids"].shape[1])
                    if length * (rows + 1) > PREFILL_TOGETHER_TOKENS:
                        break
                    longest, rows = length, rows + 1
                taken.append(self.waiting.popleft())
        return taken

    def _run_on_engine(self, request: Request, *, may_join: bool):
        """Decode a request alone on the engine, a chunk at a time, until it ends; or, `may_join`, until another
        request arrives: then its KV moves into row 0 and it goes on with the others."""
        engine = self.single
        try:
            stream, first = engine.start(request.inputs, request.sampling, engine.cache_for(request.tokens))
            if self._hand_out(request, [first]):
                return
            while not self._hand_out(request, engine.advance(stream, min(self.chunk, request.max_new_tokens - request.done))):
                if may_join and self._joining():
                    self._move_into_row(request, stream, 0)
                    return
        except BaseException as e:
            request.send(None, e)

    def _joining(self) -> bool:
        """A request waits that a row can take (jobs and long requests wait until the decoder is idle)."""
        with self.arrived:
            head = self.waiting[0] if self.waiting else None
        return isinstance(head, Request) and head.tokens <= self.row_tokens

    def _prefill_together(self, requests: list[Request]):
        """Prompts (with their images) in one forward, straight into free rows; each row's first token is sampled
        as the engine samples it alone (same seed, position and settings).

        Right padding: a prompt's tokens attend only to positions before them, so the pads after a shorter
        prompt change nothing it computes; the pads' KV lands past that row's position, where the row's mask
        hides it until the row's own tokens overwrite it. The forward's KV goes to a DynamicCache of full
        layers (Gemma's sliding layers take their window from the mask, as in `new_static_cache`) and is then
        copied into the rows: no cache of its own is kept for it."""
        from transformers import DynamicCache

        live = [r for r in requests if not r.cancelled.is_set()]
        for request in requests:
            if request.cancelled.is_set():
                request.send(None, None)
        if not live:
            return
        dev = self.device
        rows = [i for i, slot in enumerate(self.slots) if slot is None][:len(live)]
        lengths = [r.inputs["input_ids"].shape[1] for r in live]
        ids = torch.zeros(len(live), max(lengths), dtype=torch.long, device=dev)
        typed = any("token_type_ids" in r.inputs for r in live)  # image tokens, marked (Gemma 3)
        types = torch.zeros_like(ids) if typed else None
        for i, request in enumerate(live):
            ids[i, :lengths[i]] = request.inputs["input_ids"][0]
            if typed and "token_type_ids" in request.inputs:
                types[i, :lengths[i]] = request.inputs["token_type_ids"][0]
        images = [r.inputs["pixel_values"] for r in live if "pixel_values" in r.inputs]
        extra = ({"token_type_ids": types} if typed else {}) | ({"pixel_values": torch.cat(images)} if images else {})
        last = torch.tensor(lengths, device=dev) - 1
        keep = torch.unique(last)  # sorted: the positions whose logits some row needs
        kv = DynamicCache()
        logits = self.model(input_ids=ids, **extra, past_key_values=kv, use_cache=True, logits_to_keep=keep).logits
        logits = logits[torch.arange(len(live), device=dev), torch.searchsorted(keep, last)]
        seed, temperature, top_p = sampling_tensors([r.sampling for r in live], dev)
        first = sample(logits, seed, last + 1, temperature, top_p, self.single.top_k)
        at = torch.tensor(rows, device=dev)
        for src, dst in zip(kv.layers, self.cache.layers, strict=True):
            dst.keys[at, :, :ids.shape[1]] = src.keys
            dst.values[at, :, :ids.shape[1]] = src.values
        self._seat(rows, live, seed, temperature, top_p, last + 1, first)
        for row, token in zip(rows, first.tolist(), strict=True):
            self._deliver(row, [token])

    def _prefill(self, request: Request, row: int):
        stream, first = self.single.start(request.inputs, request.sampling, self.prefill_cache)
        self._move_into_row(request, stream, row)
        self._deliver(row, [first])

    def _move_into_row(self, request: Request, stream: Stream, row: int):
        """A stream's KV, next token, position and sampling settings into `row`, which decodes it from the next step."""
        position = int(stream.position[0])
        # Over the same memory (the engine's bucket and the rows), a bucket shorter than a row lays the heads out
        # closer together than the row: writing a head could overwrite one not yet read. Copy through a clone.
        overlap = same_memory(stream.cache, self.cache)
        for src, dst in zip(stream.cache.layers, self.cache.layers, strict=True):
            keys, values = src.keys[0, :, :position], src.values[0, :, :position]
            dst.keys[row, :, :position] = keys.clone() if overlap else keys
            dst.values[row, :, :position] = values.clone() if overlap else values
        self._seat([row], [request], stream.seed, stream.temperature, stream.top_p, stream.position, stream.token[:, 0])

    def _seat(self, rows: list[int], requests: list[Request], seed, temperature, top_p, position, token):
        """Requests into `rows`, whose KV is in place: each row's sampling settings, the position its next KV goes
        to and the token it feeds next; they decode from the next step."""
        at = torch.tensor(rows, device=self.device)
        self.seeds[at], self.temperature[at], self.top_p[at] = seed, temperature, top_p
        self.positions[at] = position
        self.tokens[at, 0] = token
        self.busy[at] = 1
        for row, request in zip(rows, requests, strict=True):
            self.slots[row] = request

    def _decode_chunk(self):
        busy = [row for row, request in enumerate(self.slots) if request is not None]
        # No row may run past its token budget (and so its row's end) inside a chunk.
        n = min(self.chunk, *(self.slots[row].max_new_tokens - self.slots[row].done for row in busy))
        for i in range(n):  # queued on the device without waiting: the host runs ahead
            tokens = self.step(self.cache, self.tokens, self.positions, self.seeds, self.temperature, self.top_p)
            self.tokens.copy_(tokens)
            self.positions.add_(self.busy)  # an empty row stays at 0: it must never run past its row's end
            self.out[:, i] = tokens[:, 0]
        chunk = self.out[:, :n].tolist()  # the one sync per chunk
        for row in busy:
            self._deliver(row, chunk[row])

    def _deliver(self, row: int, tokens: list[int]):
        """Hand a row's request its tokens and free the row if it is done."""
        if self._hand_out(self.slots[row], tokens):
            self.slots[row] = None
            self.positions[row] = 0
            self.busy[row] = 0

    @staticmethod
    def _hand_out(request: Request, tokens: list[int]) -> bool:
        """Send a request its tokens, up to its stop token; True (and the end sent) if it is done."""
        hit = next((i for i, t in enumerate(tokens) if t in request.stop_ids), None)
        tokens = tokens if hit is None else tokens[:hit + 1]
        request.done += len(tokens)
        request.send(tokens, None)
        if hit is not None or request.done >= request.max_new_tokens or request.cancelled.is_set():
            request.send(None, None)
            return True
        return False

    def warm_up(self, inputs: dict, steps: int = 3) -> None:
        """Compile and capture the batched step (every row busy) before the first request, twice. Every
        warm-up request goes into a row: one that ran alone on the engine would leave the step uncompiled."""
        solo, self.solo = self.solo, False
        try:
            for _ in range(2):
                finished = threading.Semaphore(0)
                for i in range(self.rows):
                    self.submit(Request(inputs, steps + 1, Sampling(0.7, 0.9, i), (),
                                        lambda tokens, error, f=finished: f.release() if tokens is None else None))
                for _ in range(self.rows):
                    finished.acquire()
        finally:
            self.solo = solo
