"""The text-generation base runner: chat template, sampling, seeding, streaming and Replicate's LLM metrics.

Subclasses say what they load and how it is optimized (`load_model`), and which inputs they take;
`stream()` does the rest. Tokens come from the decode engine (shared/decode_engine.py) on a worker
thread and are yielded as they come (Cog's ConcatenateIterator, SSE when the client asks); a cancelled
or disconnected stream stops the generation at the next chunk instead of running to max_new_tokens.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import torch
from cog import BaseRunner

from . import catalog, compile_cache, options as opts, url_input, weights
from .decode_engine import DecodeEngine, Sampling
from .runtime import InputError, Phases, explain_oom, log_event, peak_memory_gb, resolve_seed, select_device


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


class TextGenerationRunner(BaseRunner):
    """Base for the chat deployments. Subclasses set `deployment`, `OPTIONS` and define `load_model()`."""

    deployment: str
    OPTIONS: dict[str, opts.Option] = {}
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

    def setup(self) -> None:
        started, phases = time.perf_counter(), Phases()
        self.dep = catalog.get(self.deployment)
        self.hw = select_device()
        self.options = opts.resolve(self.OPTIONS, cuda=self.hw.is_cuda)
        url_input.limit_cog_file_inputs(type(self))  # Cog fetches an `image` URL before run(): bound it
        cache_key = compile_cache.key(self.options)
        with phases("weights"):
            self.source = weights.for_deployment(self.dep, wanted=compile_cache.wanted_files(self.dep.name, cache_key))
        with phases("compile_cache"):
            compile_cache.load(self.source.local_path, self.dep.name, cache_key)
        with phases("load"):  # load, quantize, prune; says whether the decode step is compiled
            self.model, self.tokenizer, self.path = self.load_model()
        self.template = self._template()
        self.stop_ids = self.stop_token_ids()
        self.hidden_ids = torch.tensor(hidden_token_ids(self.text_tokenizer))  # once: Gemma has thousands of added tokens
        sizes = sorted({min(n, self.max_positions()) for n in (*self.static_cache_buckets, self.static_cache_tokens)})
        self.engine = DecodeEngine(self.model, sizes, compile_step=self.decode_compile)
        # Every generation runs on this one thread: CUDA-graph trees (compiled decode) belong to the
        # thread that captured them, and a fresh thread per request failed with an AssertionError.
        self.generation_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
        if self.engine.compiled:
            with phases("warmup"):  # where compilation happens: 75 s in SmolLM3's first request otherwise
                ids = self.text_tokenizer("warm up", return_tensors="pt", add_special_tokens=False)["input_ids"]
                seconds = self.generation_thread.submit(self.engine.warm_up, {"input_ids": ids.to(self.model.device)}).result()
                log_event("warmup.done", cache_tokens=sizes, seconds=seconds)
        compile_cache.save(self.dep.name, cache_key)
        log_event("setup.done", deployment=self.dep.name, weights=self.source.describe(), device=self.hw.device,
                  dtype=str(self.hw.dtype), path=self.path, options=self.options, phases=phases.seconds,
                  compile_cache=compile_cache.stats(),
                  seconds=round(time.perf_counter() - started, 2), peak_gpu_gb=peak_memory_gb(reset=True))

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

    def stream(self, *, messages: list[dict], max_new_tokens: int, temperature: float, top_p: float,
               seed: int | None, system_prompt: str = "", template_kwargs: dict | None = None,
               images=None) -> Iterator[str]:
        started = time.perf_counter()
        seed = resolve_seed(seed)
        messages = with_system_prompt(messages, system_prompt)
        inputs = self.encode(messages, template_kwargs or {}, images=images)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        limit = self.window()
        max_new_tokens = int(max_new_tokens)  # the server passes an integral float (4.0) through as it came
        if prompt_tokens >= limit:
            raise InputError("prompt", f"has {prompt_tokens} tokens with the chat template; this deployment serves "
                                       f"{limit} tokens per request (prompt + max_new_tokens)")
        if prompt_tokens + max_new_tokens > limit:
            raise InputError("max_new_tokens", f"the prompt has {prompt_tokens} tokens, so max_new_tokens must be at most "
                             f"{limit - prompt_tokens} ({limit} tokens per request)")
        self.record_metric("seed", seed)
        log_event("predict.start", deployment=self.dep.name, seed=seed, prompt_tokens=prompt_tokens,
                  system_prompt_chars=len(system_prompt.strip()),
                  max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, **(template_kwargs or {}))

        streamer = _counting_streamer(self.text_tokenizer, self.hidden_ids)
        stop = threading.Event()
        failure: list[BaseException] = []
        sampling = Sampling(temperature=temperature, top_p=top_p, seed=seed)

        def work():
            try:
                with explain_oom("max_new_tokens or the prompt length"):
                    streamer.put(inputs["input_ids"].cpu())  # the streamer skips the prompt, as generate() gives it
                    for chunk in self.engine.generate(inputs, max_new_tokens=max_new_tokens, sampling=sampling,
                                                      stop_ids=self.stop_ids, cancelled=stop.is_set):
                        # The first token, not the first text: the streamer holds text back to a word's end.
                        first_token_at[:] = first_token_at or [time.perf_counter()]
                        streamer.put(torch.tensor(chunk))
            except BaseException as e:  # re-raised in the consumer so the prediction fails loudly
                failure.append(e)
            finally:
                streamer.end()

        first_token_at: list[float] = []
        job = self.generation_thread.submit(work)
        pieces: list[str] = []
        try:
            for piece in streamer:
                if piece:
                    pieces.append(piece)
                    yield piece
        finally:
            stop.set()  # consumer finished or went away: stop generating
            job.result()
        if failure:
            raise failure[0]
        new_tokens, seconds = streamer.generated, time.perf_counter() - started
        # The names Replicate's official language models report (Cog's docs, "Metrics"). The text itself is
        # the streamed output: the server keeps it whole in the prediction, so no copy is written here.
        metrics = {"input_token_count": prompt_tokens, "output_token_count": new_tokens,
                   "time_to_first_token": round(first_token_at[0] - started, 4) if first_token_at else None,
                   "tokens_per_second": round(new_tokens / seconds, 2) if seconds > 0 else None}
        for name, value in metrics.items():
            if value is not None:
                self.record_metric(name, value)
        log_event("predict.end", deployment=self.dep.name, seconds=round(seconds, 3), chars=sum(map(len, pieces)),
                  peak_gpu_gb=peak_memory_gb(), **metrics)
