"""Bring your own LoRA: a user's adapter file, fetched once, checked against the slot, hot-swapped like a style.

A URL in the `lora_weights` input is downloaded with a deadline and a size cap into an on-disk LRU cache
(a repeated URL is not fetched again), read by diffusers (its own format, and the kohya / ai-toolkit / XLabs
layouts it converts), and checked before anything touches the model: transformer layers only, each one a
layer of the compiled slot, at a rank the slot holds. What does not fit is an input error naming it; the
slot is left as it was. Then it is padded to the slot's shape and copied in, as the styles are
(shared/lora_router.py): no reload, no recompile.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import torch

from . import url_input
from .lora_router import normalize
from .runtime import InputError, cache_dir, log_event
from .weight_download import shown  # URLs without credentials or a signed query

FIELD = "lora_weights"
MAX_BYTES = 2 * 2**30  # a rank-128 FLUX LoRA on every block layer is ~1.4 GB in bf16
DEADLINE_S = 300  # the whole download, however slowly the server sends
CACHE_BYTES = 10 * 2**30  # adapters kept on disk, least recently used evicted first


class AdapterCache:
    """Downloaded adapter files by URL, least recently used evicted past `capacity` bytes."""

    def __init__(self, folder: Path | None = None, capacity: int = CACHE_BYTES):
        self.folder = Path(folder or cache_dir() / "user-loras")
        self.capacity = capacity

    def path(self, url: str) -> Path:
        return self.folder / (hashlib.sha256(url.encode()).hexdigest()[:32] + ".safetensors")

    def fetch(self, url: str, *, max_bytes: int = MAX_BYTES, deadline_s: float = DEADLINE_S) -> Path:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InputError(FIELD, "must be an http(s) URL of a .safetensors LoRA file")
        path = self.path(url)
        if path.is_file():
            self._touch(path)
            log_event("user_lora.cached", url=shown(url), bytes=path.stat().st_size)
            return path
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".partial")
        started = time.monotonic()
        try:
            size = url_input.download(url, tmp, field=FIELD, max_bytes=max_bytes, deadline_s=deadline_s)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)
        self._touch(path)
        log_event("user_lora.downloaded", url=shown(url), bytes=size, seconds=round(time.monotonic() - started, 2))
        self._evict(keep=path)
        return path

    def _touch(self, path: Path) -> None:
        """Mark `path` the most recently used: an mtime above every other file's, even within one clock tick."""
        newest = max((p.stat().st_mtime_ns for p in self.folder.glob("*.safetensors") if p != path), default=0)
        now = max(time.time_ns(), newest + 1)
        os.utime(path, ns=(now, now))

    def _evict(self, keep: Path) -> None:
        files = sorted((p for p in self.folder.glob("*.safetensors") if p != keep), key=lambda p: p.stat().st_mtime_ns)
        total = sum(p.stat().st_size for p in files) + keep.stat().st_size
        for old in files:
            if total <= self.capacity:
                break
            total -= old.stat().st_size
            old.unlink(missing_ok=True)
            log_event("user_lora.evicted", file=old.name)


def read_adapter(pipeline_cls, path: Path, shapes: dict, rank: int) -> dict[str, torch.Tensor]:
    """The user's adapter with its alpha/r baked in, or an InputError saying what does not fit the slot.

    `shapes` are the slot's layers (lora_router.slot_shapes) and `rank` its rank.
    """
    try:
        state_dict, alphas, metadata = pipeline_cls.lora_state_dict(str(path), return_alphas=True,
                                                                    return_lora_metadata=True)
    except Exception as e:  # not safetensors, or a layout diffusers does not know
        raise InputError(FIELD, f"is not a FLUX LoRA diffusers can read ({e.__class__.__name__}: {str(e)[:200]})") from None
    adapter = normalize(state_dict, alphas, metadata, 1.0, what="your LoRA")
    if not adapter:
        raise InputError(FIELD, "has no weights for the FLUX transformer (text-encoder LoRAs are not supported)")
    outside = sorted(p.removeprefix("transformer.") for p in {k.split(".lora_")[0] for k in adapter} - shapes.keys())
    if outside:
        raise InputError(FIELD, f"targets {len(outside)} layer(s) outside the LoRA slot (the Linear layers of the 57 "
                                f"transformer blocks), e.g. {', '.join(outside[:3])}")
    for key, tensor in adapter.items():
        prefix = key.split(".lora_")[0]
        fan_in, fan_out = shapes[prefix][:2]
        layer = prefix.removeprefix("transformer.")
        if ".lora_A." in key and tensor.shape[0] > rank:
            raise InputError(FIELD, f"layer {layer}: rank {tensor.shape[0]}, the slot holds at most {rank}")
        if ".lora_A." in key and tensor.shape[1] != fan_in:
            raise InputError(FIELD, f"layer {layer}: {tensor.shape[1]} inputs, the layer has {fan_in}")
        if ".lora_B." in key and tensor.shape[0] != fan_out:
            raise InputError(FIELD, f"layer {layer}: {tensor.shape[0]} outputs, the layer has {fan_out}")
    return adapter
