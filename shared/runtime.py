"""Device, precision, seeding, structured logs and user-facing errors: what every deployment shares."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import logging
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from structlog.processors import LogfmtRenderer

_log = logging.getLogger("cogdeploy")
if not _log.handlers:
    _h = logging.StreamHandler(sys.stderr)
    _h.setFormatter(logging.Formatter("%(message)s"))
    _log.addHandler(_h)
    _log.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())
    _log.propagate = False

# Values with spaces, quotes or "=" are double-quoted with backslash escapes; True/False print as true/false.
_LOGFMT = LogfmtRenderer(key_order=["event"], bool_as_flag=False)

SEED_MAX = 2**32 - 1


def cache_dir() -> Path:
    """Where built or downloaded files are kept between boots (stand-in weights, mirror downloads)."""
    return Path(os.environ.get("COGDEPLOY_CACHE", Path(tempfile.gettempdir()) / "cogdeploy-cache"))


def make_room(folder: Path, keep: int, pattern: str = "*") -> str:
    """Before adding an entry to `folder`: delete all but the newest `keep` - 1 entries matching `pattern` and
    return the name prefix the new one takes. Names start with the creation time, so they sort by age."""
    import shutil

    for old in sorted(folder.glob(pattern))[:-keep + 1 or None]:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    return f"{time.time_ns():020d}-"


def _flat(fields: dict, prefix: str = "") -> dict:
    """Nested dicts as dotted keys (`phases.load=3.41`), lists as compact JSON; keys keep to word characters
    (a dot inside a key would read back as nesting)."""
    out = {}
    for key, value in fields.items():
        name = prefix + "".join(c if c.isalnum() or c in "_-" else "_" for c in str(key))
        if isinstance(value, dict) and value:
            out.update(_flat(value, name + "."))
        elif isinstance(value, (dict, list, tuple)):
            out[name] = json.dumps(value, default=str, separators=(",", ":"))
        else:
            out[name] = value
    return out


def log_event(event: str, **fields) -> dict:
    """One logfmt line per event (model load, prediction start/end): `event=predict.end seconds=1.2 ...`.

    Cog's server (coglet) wraps every line the worker writes in its own JSON record; a JSON line arrived
    there as one escaped string inside another. A logfmt line stays readable there, in a prediction's
    `logs` and in a terminal, and still parses back (shared/cogserver.py `log_events`). Rendered by
    structlog's LogfmtRenderer (structlog comes with Cog)."""
    record = {"event": event, **fields}
    _log.info(_LOGFMT(None, "info", _flat(record)))
    return record


def return_freed_memory() -> bool:
    """Give the heap's freed pages back to the OS (glibc `malloc_trim`). glibc keeps freed blocks of a big
    request (a 12000x12000 input image, activations at 1440 px) in its arenas: a worker kept 2 GB after
    three such requests (tests/integration/test_flux.py). False where libc has no malloc_trim (not glibc)."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim else False


@functools.cache
def _malloc_trim():
    """libc's malloc_trim, looked up once (find_library runs `ldconfig -p`: not once per prediction)."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


class Phases:
    """Wall time of each named step of setup() or of a request: logged with setup.done / predict.end, read by
    the benchmarks. `announce`: each step is also logged as it ends (a slow boot shows where it is)."""

    def __init__(self, announce: str | None = None):
        self.seconds: dict[str, float] = {}
        self.announce = announce

    @contextlib.contextmanager
    def __call__(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - started, 3)
            if self.announce:
                log_event(self.announce, phase=name, seconds=self.seconds[name])


@dataclass(frozen=True)
class DeviceSetup:
    device: str
    dtype: torch.dtype

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")


GPU_MEMORY_ENV = "GPU_MEMORY_LIMIT_GB"  # GiB this process may allocate on the GPU (unset: all of it)


def gpu_memory_gb() -> float:
    """GiB this process may use on the GPU: the card's memory, or less under GPU_MEMORY_LIMIT_GB."""
    total = torch.cuda.get_device_properties(0).total_memory / 2**30
    return min(total, float(os.environ.get(GPU_MEMORY_ENV) or total))


def select_device(prefer_dtype: torch.dtype = torch.bfloat16) -> DeviceSetup:
    """CUDA when present (bf16 where the GPU supports it, else fp16, TF32 on); else CPU in float32.

    CPU runs float32: bf16 matmuls on CPU are slow and numerically different from the GPU anyway,
    and the tiny profile is about behaviour, not speed. FORCE_CPU=1 pins CPU on a GPU machine;
    GPU_MEMORY_LIMIT_GB caps what this process allocates on the GPU.
    """
    if torch.cuda.is_available() and os.environ.get("FORCE_CPU") != "1":
        if limit := os.environ.get(GPU_MEMORY_ENV):
            # The allocator refuses past this: a big GPU behaves as a smaller card would (what a low-memory
            # mode is measured under), or a process leaves room for another on the same GPU.
            total = torch.cuda.get_device_properties(0).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, float(limit) * 2**30 / total))
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        dtype = prefer_dtype if torch.cuda.is_bf16_supported() else torch.float16
        return DeviceSetup("cuda", dtype)
    return DeviceSetup("cpu", torch.float32)


def resolve_seed(seed: int | None) -> int:
    """The seed to use: the caller's, or a fresh random one (reported back so the run can be repeated)."""
    if seed is None:
        return int.from_bytes(os.urandom(4), "big")
    return int(seed)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator("cpu").manual_seed(seed)


class InputError(ValueError):
    """A bad input that the schema could not express; the message names the field and what is allowed."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def require(module: str, *, install: str, purpose: str):
    """Import an optional dependency, or fail saying what to install."""
    if importlib.util.find_spec(module) is None:
        raise ImportError(f"{purpose} needs the '{module}' package: pip install {install}")
    return importlib.import_module(module)


@contextlib.contextmanager
def explain_oom(what_to_lower: str):
    """Turn a CUDA out-of-memory error into one that says which input to lower."""
    try:
        yield
    except torch.OutOfMemoryError as e:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise RuntimeError(f"GPU out of memory: lower {what_to_lower} and try again") from e


def peak_memory_gb(*, reset: bool = False) -> float | None:
    """Peak GPU memory allocated since the last reset. setup() reads it with reset=True, so that what each
    request reports afterwards is the serving peak, not the building and quantizing of the weights."""
    if not torch.cuda.is_available():
        return None
    peak = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if reset:
        torch.cuda.reset_peak_memory_stats()
    return peak
