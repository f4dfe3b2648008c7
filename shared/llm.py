"""The text-generation base runner: chat template, sampling, seeding, streaming and Replicate's LLM metrics.

Subclasses say what they load and how it is optimized (`load_model`), and which inputs they take;
`stream()` does the rest. Requests run concurrently (an async `run()` under `@cog.concurrent`): each is
handed to the batched decoder (shared/batch_decode.py), which decodes the requests in flight together on
its own thread, and its tokens are yielded as they come (Cog's AsyncConcatenateIterator, SSE when the
client asks); a cancelled or disconnected stream frees its row at the next step.
"""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator, Iterator

import torch
from cog import BaseRunner

from . import catalog, compile_cache, options as opts, url_input, weights
from .batch_decode import BatchedDecoder, Request
from .decode_attention import use_grouped_decode_attention
from .decode_engine import DecodeEngine, Sampling
from .int4_prefill import use_dequantized_prefill
from .runtime import (InputError, Phases, explain_oom, log_event, peak_memory_gb, resolve_seed, return_freed_memory,
                      select_device)


def with_system_prompt(messages: list[dict], system_prompt: str) -> list[dict]:
    """The chat with the user's system message first; each model's template places it (Gemma's inside the
    first user turn, SmolLM3's and Phi-4's instead of their default). Blank: the model's own default."""
    if not system_prompt.strip():
        return messages
    return [{"role": "system", "content": system_prompt}, *messages]


# Reasoning models write their reasoning between these tags; users must see where it ends, so the stream
# keeps them even where the tokenizer marks them special (decoding with skip_special_tokens would drop them).
KEPT_TOKENS = ("<think>", "</think>")


def hidden_token_ids(tokenizer) -> list[int]:
    """The special tokens a user never sees in the text (end of turn, padding...), all but KEPT_TOKENS."""
    special = set(tokenizer.all_special_ids)
    special |= {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    return sorted(special - {tokenizer.convert_tokens_to_ids(t) for t in KEPT_TOKENS})


def _counting_streamer(tokenizer, hidden: torch.Tensor | None = None):
    """A TextIteratorStreamer that counts the tokens generated (decoded text can re-tokenize differently)
    and shows every token but the `hidden` ones (default: hidden_token_ids)."""
    from transformers import TextIteratorStreamer

    hidden = torch.tensor(hidden_token_ids(tokenizer)) if hidden is None else hidden

    class CountingStreamer(TextIteratorStreamer):
        generated = 0

        def put(self, value):
            if not (self.skip_prompt and self.next_tokens_are_prompt):
                self.generated += int(value.numel())
                value = value.cpu()
                value = value[~torch.isin(value, hidden)]
            super().put(value)

    return CountingStreamer(tokenizer, skip_prompt=True, skip_special_tokens=False)


def _drain(streamer) -> Iterator[str]:
    """The text a TextIteratorStreamer has finished so far (it holds back an unfinished word)."""
    while not streamer.text_queue.empty():
        piece = streamer.text_queue.get_nowait()
        if piece is not streamer.stop_signal and piece:
            yield piece


def explain_oom_error(error: BaseException) -> BaseException:
    """The decoder thread's error as the request sees it: an out-of-memory error says what to lower."""
    try:
        with explain_oom("max_new_tokens or the prompt length"):
            raise error
    except BaseException as explained:
        return explained


def collect(stream: AsyncIterator[str]) -> Iterator[str]:
    """An async stream read from synchronous code (tests, benchmarks); closing it cancels the request."""
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(stream.__anext__())
            except StopAsyncIteration:
                return
    finally:
        loop.run_until_complete(stream.aclose())
        loop.run_until_complete(loop.shutdown_default_executor())  # the thread that encoded the prompt
        loop.close()


def attention_option(gpu_default: str) -> opts.Option:
    """OPTIMIZE=attention: SDPA, or grouped decode attention (shared/decode_attention.py), which attends over
    the grouped KV heads where transformers' SDPA path copies them out to every query head each step; flex, the
    same through FlexAttention reading each row's KV only up to its length (opt-in everywhere until measured)."""
    return opts.Option(gpu_default, "sdpa", ("sdpa", "grouped", "flex"),
                       "decode steps attend over grouped KV heads without copying them; flex: reading each row's KV "
                       "only up to its length (shared/decode_attention.py)")


def int4_prefill_option(gpu_default: str) -> opts.Option:
    """OPTIMIZE=int4_prefill: how prompts go through tinygemm int4 layers (hqq's torchao_int4 backend, on a GPU):
    tinygemm itself, or each layer's weight dequantized for a bf16 matmul (shared/int4_prefill.py), eagerly or as
    one compiled kernel per weight shape (`dequantize-compiled`, compiled at load). Nothing changes where no layer
    is tinygemm's (quantize=none, gemlite, CPU)."""
    return opts.Option(gpu_default, "tinygemm", ("tinygemm", "dequantize", "dequantize-compiled"),
                       "prompts through int4 layers: tinygemm, or the weights dequantized for a dense matmul")


class TextGenerationRunner(BaseRunner):
    """Base for the chat deployments. Subclasses set `deployment`, `OPTIONS` and define `load_model()`."""

    deployment: str
    OPTIONS: dict[str, opts.Option] = {}
    # Options of every text deployment, next to its own OPTIONS.
    TEXT_OPTIONS = {
        # Opt-in where not measured on a GPU (all three text deployments measured it and take it: their predict.py).
        "attention": attention_option(gpu_default="sdpa"),
    }
    # Template to render prompts with: "vendored" always uses shared/assets/<model>/chat_template.jinja
    # (SmolLM3: its think/no_think logic lives there); "checkpoint" uses the checkpoint's own template
    # and falls back to the vendored one where the checkpoint has none (tiny/synthetic tokenizers).
    template_source = "checkpoint"
    # The largest KV cache: the longest prompt expected plus the largest max_new_tokens. Longer requests
    # still work; they grow the cache once (a recompile of the compiled step).
    static_cache_tokens = 2048 + 8192
    # The most tokens one request may use, where less than the model's context (None: all of it).
    window_tokens: int | None = None
    # Smaller caches next to it: attention reads the whole static cache at every step, so a short request
    # in SmolLM3's 18k-token cache decoded at 87 tok/s against 163 in a small one (bf16, H100). A request
    # takes the smallest cache that holds it; each size compiles once, in setup.
    static_cache_buckets: tuple[int, ...] = (2048,)
    # torch.compile arguments for the engine's one-token step (load_model sets them: decode_step_compile()),
    # or None for an eager step.
    decode_compile: dict | None = None
    # torch.compile arguments for the prompt's forward (text-only deployments: llm_backends.prefill_compile()),
    # or None for an eager prefill.
    prefill_compile: dict | None = None
    # Length of each batched row: requests up to this many tokens (prompt + max_new_tokens) are decoded
    # together; a longer one runs alone on the single-stream engine once the rows are free.
    batch_row_tokens = 2048
    # How many requests are decoded together; None: as many as run() accepts at once (@cog.concurrent(max=N)).
    # Fewer rows cost less KV memory; the requests beyond them wait for a free row.
    batch_rows: int | None = None

    @classmethod
    def option_spec(cls) -> dict[str, opts.Option]:
        """Every OPTIMIZE switch of this deployment: the text deployments' own and its model's."""
        return {**cls.TEXT_OPTIONS, **cls.OPTIONS}

    def prepare(self, phases: Phases | None = None) -> None:
        """What `load_model()` needs: the catalog entry, the device, OPTIMIZE resolved and the weight source (with
        the compile-cache files this configuration wants). The first part of setup(); tests and the fidelity
        benchmark call it and then `load_model()` alone."""
        self.dep = catalog.get(self.deployment)
        self.hw = select_device()
        self.options = opts.resolve(self.option_spec(), cuda=self.hw.is_cuda)
        with (phases or Phases())("weights"):
            wanted = compile_cache.wanted_files(self.dep.name, compile_cache.key(self.options))
            self.source = weights.for_deployment(self.dep, wanted=wanted)

    def setup(self) -> None:
        started, phases = time.perf_counter(), Phases(announce="setup.phase")
        self.prepare(phases)
        url_input.limit_cog_file_inputs(type(self))  # Cog fetches an `image` URL before run(): bound it
        cache_key = compile_cache.key(self.options)
        with phases("compile_cache"):
            compile_cache.load(self.source.local_path, self.dep.name, cache_key)
        with phases("load"):  # load, quantize, prune; says whether the decode step is compiled
            self.model, self.tokenizer, self.path = self.load_model()
            if self.options["attention"] in ("grouped", "flex"):
                self.path += "+" + use_grouped_decode_attention(self.model, flex=self.options["attention"] == "flex")
            int4_prefill = self.options.get("int4_prefill", "tinygemm")
            patched = int4_prefill != "tinygemm" and use_dequantized_prefill(
                self.model, compiled=int4_prefill == "dequantize-compiled")
            if patched:
                self.path += "+" + patched
        self.template = self._template()
        self.stop_ids = self.stop_token_ids()
        self.hidden_ids = torch.tensor(hidden_token_ids(self.text_tokenizer))  # once: Gemma has thousands of added tokens
        sizes = sorted({min(n, self.max_positions()) for n in (*self.static_cache_buckets, self.static_cache_tokens)})
        # Rows: the concurrency the deployment's run() declares (@cog.concurrent(max=N)). Every generation
        # runs on the decoder's one thread: CUDA graphs belong to the thread that captured them.
        rows = self.batch_rows or getattr(type(self).run, "__cog_concurrent_max__", 1)
        row_tokens = min(self.batch_row_tokens, sizes[-1])
        # The rows and the engine's buckets share one KV allocation (decode_engine.KVStorage).
        self.engine = DecodeEngine(self.model, sizes, compile_step=self.decode_compile, compile_prefill=self.prefill_compile,
                                   reserve_tokens=rows * row_tokens)
        self.batch = BatchedDecoder(self.model, rows=rows, row_tokens=row_tokens, single=self.engine,
                                    compile_step=self.decode_compile)
        if self.engine.compiled:
            with phases("warmup"):  # where compilation happens: 75 s in SmolLM3's first request otherwise
                ids = self.text_tokenizer("warm up", return_tensors="pt", add_special_tokens=False)["input_ids"]
                warm = {"input_ids": ids.to(self.model.device)}
                seconds = self.batch.call(lambda: self.engine.warm_up(warm))
                self.batch.call(self.before_batched_compile)  # on the thread that compiles (compile settings are per thread)
                started_batch = time.perf_counter()
                self.batch.warm_up(warm)
                log_event("warmup.done", cache_tokens=sizes, seconds=seconds, rows=rows,
                          batch_seconds=round(time.perf_counter() - started_batch, 2))
        compile_cache.save(self.dep.name, cache_key)
        kv_bytes = sum(kv.nbytes for kv in {id(kv): kv for kv in (self.engine.kv, self.batch.kv)}.values())
        log_event("setup.done", deployment=self.dep.name, weights=self.source.describe(), device=self.hw.device,
                  dtype=str(self.hw.dtype), path=self.path, options=self.options, phases=phases.seconds,
                  kv_cache_gb=round(kv_bytes / 1e9, 3),
                  compile_cache=compile_cache.stats(),
                  seconds=round(time.perf_counter() - started, 2), peak_gpu_gb=peak_memory_gb(reset=True))

    def before_batched_compile(self) -> None:
        """Between the warm-ups (the compiles) of the single-stream step and of the batched step: a deployment may
        change the compile settings of the batched one here (Gemma's `kernel_tuning=one-row`)."""

    def load_model(self):
        """Return (model, tokenizer or processor, a short description of the path taken)."""
        raise NotImplementedError

    def stop_token_ids(self) -> list[int]:
        from .builders.text import stop_token_ids

        return stop_token_ids(self.text_tokenizer, self.model.config.model_type.replace("_text", ""))

    @property
    def text_tokenizer(self):
        return getattr(self.tokenizer, "tokenizer", self.tokenizer)

    def _template(self) -> str:
        from .builders.text import chat_template

        own = getattr(self.tokenizer, "chat_template", None)
        if self.template_source == "vendored" or not own or self.source.is_random:
            return chat_template(self.dep)
        return own

    def window(self) -> int:
        """Tokens one request may use (prompt + max_new_tokens): the model's context, or less (window_tokens)."""
        return min(self.max_positions(), self.window_tokens or self.max_positions())

    def max_positions(self) -> int:
        cfg = self.model.config
        return getattr(cfg, "max_position_embeddings", None) or cfg.get_text_config().max_position_embeddings

    # -- one prediction ---------------------------------------------------------------------------

    def encode(self, messages: list[dict], template_kwargs: dict, images=None) -> dict:
        text = self.tokenizer.apply_chat_template(messages, chat_template=self.template, tokenize=False,
                                                  add_generation_prompt=True, **template_kwargs)
        if images:
            # The template already starts with BOS (Gemma's does): the processor must not add another.
            enc = self.tokenizer(text=text, images=images, return_tensors="pt", add_special_tokens=False)
        else:
            enc = self.text_tokenizer(text, return_tensors="pt", add_special_tokens=False)
        return {k: v.to(self.model.device) for k, v in enc.items()}

    async def stream(self, *, messages: list[dict], max_new_tokens: int, temperature: float, top_p: float,
                     seed: int | None, system_prompt: str = "", template_kwargs: dict | None = None,
                     images=None) -> AsyncIterator[str]:
        started = time.perf_counter()
        seed = resolve_seed(seed)
        messages = with_system_prompt(messages, system_prompt)
        # Off the event loop: other requests keep streaming while this one's prompt (and image) is prepared.
        inputs = await asyncio.to_thread(self.encode, messages, template_kwargs or {}, images)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        limit = self.window()
        max_new_tokens = int(max_new_tokens)  # the server passes an integral float (4.0) through as it came
        if prompt_tokens >= limit:
            # Name the input that made it long: the system prompt when it is the larger part.
            asked = sum(len(str(m.get("content", ""))) for m in messages if m.get("role") != "system")
            field, with_other = ("system_prompt", " with the prompt") if len(system_prompt) > asked else ("prompt", "")
            raise InputError(field, f"has {prompt_tokens} tokens{with_other} and the chat template; this deployment "
                                    f"serves {limit} tokens per request (prompt + system_prompt + max_new_tokens)")
        if prompt_tokens + max_new_tokens > limit:
            raise InputError("max_new_tokens", f"the prompt has {prompt_tokens} tokens, so max_new_tokens must be at most "
                             f"{limit - prompt_tokens} ({limit} tokens per request)")
        self.record_metric("seed", seed)
        log_event("predict.start", deployment=self.dep.name, seed=seed, prompt_tokens=prompt_tokens,
                  system_prompt_chars=len(system_prompt.strip()),
                  max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, **(template_kwargs or {}))

        loop = asyncio.get_running_loop()
        arrived: asyncio.Queue = asyncio.Queue()
        request = Request(inputs, max_new_tokens, Sampling(temperature=temperature, top_p=top_p, seed=seed),
                          self.stop_ids, lambda tokens, error: loop.call_soon_threadsafe(arrived.put_nowait, (tokens, error)))
        streamer = _counting_streamer(self.text_tokenizer, self.hidden_ids)  # detokenizes; used on this task only
        streamer.put(inputs["input_ids"].cpu())  # it skips the prompt, as generate() gives it
        self.batch.submit(request)
        pieces: list[str] = []
        first_token_at = None
        try:
            while True:
                tokens, error = await arrived.get()
                if tokens is None:
                    if error is not None:
                        raise explain_oom_error(error)
                    break
                first_token_at = first_token_at or time.perf_counter()
                streamer.put(torch.tensor(tokens))
                for piece in _drain(streamer):
                    pieces.append(piece)
                    yield piece
            streamer.end()
            for piece in _drain(streamer):
                pieces.append(piece)
                yield piece
        finally:
            request.cancelled.set()  # finished, cancelled or the client went away: free the row
        new_tokens, seconds = streamer.generated, time.perf_counter() - started
        # The names Replicate's official language models report (Cog's docs, "Metrics"). The text itself is
        # the streamed output: the server keeps it whole in the prediction, so no copy is written here.
        metrics = {"input_token_count": prompt_tokens, "output_token_count": new_tokens,
                   "time_to_first_token": round(first_token_at - started, 4) if first_token_at else None,
                   "tokens_per_second": round(new_tokens / seconds, 2) if seconds > 0 else None}
        for name, value in metrics.items():
            if value is not None:
                self.record_metric(name, value)
        # An image request decoded a picture (up to 4096 px a side) and freed it: give that heap back to the OS
        # (three 12000x12000 inputs left Gemma's worker 1,369 MB larger).
        returned = {"memory_returned": return_freed_memory()} if images else {}
        log_event("predict.end", deployment=self.dep.name, seconds=round(seconds, 3), chars=sum(map(len, pieces)),
                  peak_gpu_gb=peak_memory_gb(), **metrics, **returned)
