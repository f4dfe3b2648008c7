"""The LoRA trigger router: a trigger word picks a style adapter, hot-swapped into one compiled slot.

Every style shares one adapter slot: every layer any style targets, at the largest published rank. Each
adapter is padded to exactly that shape, so a `load_lora_weights(..., hotswap=True)` only copies weights
into the existing tensors: the base model is never reloaded and a compiled transformer never recompiles.
"No trigger" hot-swaps in an all-zero adapter of the same shape, which is exactly the base model
(the LoRA branch adds zeros), without the graph change that unloading would cause.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import fused_qkv
from .catalog import Lora
from .runtime import InputError, log_event

SLOT = "style"  # the one adapter name every style is hot-swapped into
BASE = "__base__"  # the all-zero adapter: the base model


@dataclass(frozen=True)
class Route:
    trigger: str | None  # canonical spelling, or None for the base model
    lora: Lora | None
    user: str | None = None  # a user's own adapter (its key in the router), instead of a style

    @property
    def adapter(self) -> str:
        return self.user or (self.lora.name if self.lora else BASE)

    @property
    def label(self) -> str:
        """What a request used, as reported: "user" (a user's own LoRA), a style's name, or "none"."""
        return "user" if self.user else self.lora.name if self.lora else "none"

    def apply_to(self, prompt: str) -> str:
        if self.lora is None:
            return prompt
        return self.lora.prompt_template.format(trigger=self.trigger) + prompt


class LoraTriggerRouter:
    """Maps trigger words (case-insensitive, exact names) to adapters and keeps the right one loaded."""

    def __init__(self, loras: tuple[Lora, ...]):
        self.loras = loras
        self._by_trigger: dict[str, tuple[str, Lora]] = {}
        for lora in loras:
            for trigger in lora.triggers:
                key = trigger.casefold()
                if key in self._by_trigger:
                    raise ValueError(f"trigger {trigger!r} is claimed by two LoRAs")
                self._by_trigger[key] = (trigger, lora)
        self._slot: dict[str, torch.Tensor] = {}  # state-dict key -> the slot's own parameter
        self._ready: dict[str, list[torch.Tensor]] = {}  # adapter -> its padded weights, in slot order, on the device
        self._active: tuple[str, float] | None = None  # (adapter, scale) in the slot
        self._user: tuple[str, list[torch.Tensor]] | None = None  # the last user adapter, slot-ready
        self.shapes: dict = {}
        self.rank = 0

    @property
    def triggers(self) -> list[str]:
        return [t for lora in self.loras for t in lora.triggers]

    def route(self, trigger_word: str | None) -> Route:
        if trigger_word is None or not trigger_word.strip():
            return Route(None, None)
        found = self._by_trigger.get(trigger_word.strip().casefold())
        if found is None:
            raise InputError(
                "trigger_word",
                f"unknown trigger {trigger_word!r}; use one of: {', '.join(self.triggers)} (or leave it empty)",
            )
        return Route(*found)

    # -- loading -------------------------------------------------------------------------------

    def attach(self, pipe, adapters: dict[str, dict[str, torch.Tensor]], target_rank: int) -> None:
        """Keep every adapter on the model's device, ready to copy, and prepare the pipeline for hot-swapping.

        `adapters` maps adapter name to a state dict from `load_normalized` (scaling baked in). Must run
        before the transformer is compiled. Every adapter, and the all-zero base, is padded with zeros to
        one shape: every layer any adapter targets, at `target_rank` (`pad_to_slot`). The published files
        differ in both (rank 8 on 342 layers, rank 16 on 494), and diffusers turns mixed ranks in a file
        without alphas into an alpha pattern that PEFT's hot-swap then refuses, deleting the slot. Padded
        adapters are the same function (the extra rank rows and columns are zero) and every swap is a plain
        copy of identical tensors.
        """
        missing = {lora.name for lora in self.loras} - set(adapters)
        if missing:
            raise ValueError(f"no weights for LoRA(s): {sorted(missing)}")
        too_big = {n: _rank(sd) for n, sd in adapters.items() if _rank(sd) > target_rank}
        if too_big:
            raise ValueError(f"LoRA rank above the slot's rank {target_rank}: {too_big}")
        shapes = self.shapes = slot_shapes(adapters.values())
        self.rank = target_rank
        pipe.enable_lora_hotswap(target_rank=target_rank)
        pipe.load_lora_weights(pad_to_slot({}, shapes, target_rank), adapter_name=SLOT)
        # The slot's parameters, found once. A swap copies an adapter into them: what peft's hotswap does
        # for equal shapes (`old.data.copy_(new)`), without diffusers' per-call key conversion and checks
        # (250-280 ms a swap on an H200) and from weights already on the GPU.
        self.find_slot(pipe.transformer)
        self._ready = {n: self._on_device(pad_to_slot(sd, shapes, target_rank)) for n, sd in adapters.items()}
        self._active = (BASE, 1.0)
        log_event("lora.attached", adapters=sorted(adapters), target_rank=target_rank, layers=len(shapes),
                  ranks={n: _rank(sd) for n, sd in adapters.items()},
                  layers_per_adapter={n: len(sd) // 2 for n, sd in adapters.items()})

    def find_slot(self, transformer) -> None:
        """(Re)find the slot's tensors in the transformer: after attach, and after an optimization that moved
        them (fused projections hold them as views: shared/fused_qkv.py)."""
        self._slot = {f"{prefix}.lora_{ab}.weight": fused_qkv.slot_tensor(transformer, prefix.removeprefix("transformer."),
                                                                          ab, SLOT)
                      for prefix in self.shapes for ab in "AB"}

    def route_user(self, key: str, read) -> Route:
        """A route to a user's adapter, kept ready for the slot; `read()` gives it (checked to fit:
        shared/user_lora.py) and is called only when it is not the one already kept."""
        if self._user is None or self._user[0] != key:
            self._user = None  # the last one's GPU copy goes before the next is made
            self._user = (key, self._on_device(pad_to_slot(read(), self.shapes, self.rank)))
        return Route(None, None, user=key)

    def to_device(self) -> None:
        """After the model moved (the low-memory load quantizes it onto the GPU after attach()): the kept adapters
        follow the slot, so a swap stays a copy on the device."""
        self._ready = {name: self._like_slot(weights) for name, weights in self._ready.items()}
        if self._user is not None:
            self._user = (self._user[0], self._like_slot(self._user[1]))

    def _on_device(self, padded: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """A padded adapter as the slot holds it: in slot order, on its device, in its dtype."""
        return self._like_slot([padded[key] for key in self._slot])

    def _like_slot(self, weights: list[torch.Tensor]) -> list[torch.Tensor]:
        """Weights in slot order moved to each slot parameter's device and dtype."""
        return [w.to(param.device, param.dtype) for w, param in zip(weights, self._slot.values(), strict=True)]

    def activate(self, route: Route, scale: float = 1.0) -> bool:
        """Hot-swap the route's adapter, at `scale`, into the slot; returns whether a swap happened."""
        name = route.adapter
        if name == BASE:
            scale = 1.0  # zeros at any scale
        if (name, scale) == self._active:
            return False
        with torch.no_grad():
            if name == BASE:
                for param in self._slot.values():
                    param.zero_()
            else:
                weights = self._user[1] if route.user else self._ready[name]
                for (key, param), value in zip(self._slot.items(), weights, strict=True):
                    param.copy_(value)
                    if scale != 1.0 and ".lora_B." in key:
                        # Baked into lora_B, like alpha/r: a PEFT scaling would be a recompile under compile.
                        param.mul_(scale)
        self._active = (name, scale)
        return True

    def state_dict(self, adapter: str) -> dict[str, torch.Tensor]:
        """An adapter as the slot holds it (padded, on the device), keyed as diffusers loads it."""
        return dict(zip(self._slot, self._ready[adapter], strict=True))

    @property
    def active(self) -> str | None:
        return self._active[0] if self._active else None


def _rank(state_dict: dict[str, torch.Tensor]) -> int:
    return max(v.shape[0] for k, v in state_dict.items() if "lora_A" in k)


def slot_shapes(adapters) -> dict[str, tuple[int, int, torch.dtype]]:
    """Every layer any adapter targets: its LoRA prefix -> (in_features, out_features, dtype)."""
    shapes = {}
    for sd in adapters:
        for key, a in sd.items():
            if ".lora_A." in key:
                prefix = key.split(".lora_A.")[0]
                shapes.setdefault(prefix, (a.shape[1], sd[f"{prefix}.lora_B.weight"].shape[0], a.dtype))
    return shapes


def pad_to_slot(state_dict: dict[str, torch.Tensor], shapes: dict, rank: int) -> dict[str, torch.Tensor]:
    """`state_dict` on every layer of the slot at `rank`, in host memory: zero rows of lora_A and columns of
    lora_B add nothing (B @ A is unchanged), and a layer the adapter lacks gets zeros."""
    out = {}
    for prefix, (fan_in, fan_out, dtype) in shapes.items():
        a, b = torch.zeros(rank, fan_in, dtype=dtype), torch.zeros(fan_out, rank, dtype=dtype)
        if f"{prefix}.lora_A.weight" in state_dict:
            own_a, own_b = state_dict[f"{prefix}.lora_A.weight"], state_dict[f"{prefix}.lora_B.weight"]
            a[: own_a.shape[0]] = own_a.to("cpu", dtype)
            b[:, : own_b.shape[1]] = own_b.to("cpu", dtype)
        out[f"{prefix}.lora_A.weight"], out[f"{prefix}.lora_B.weight"] = a, b
    return out


def load_normalized(pipeline_cls, location: str, lora: Lora, **kwargs) -> dict[str, torch.Tensor]:
    """A LoRA's transformer weights with its alpha/r and catalog scale baked into lora_B (see `normalize`)."""
    state_dict, alphas, metadata = pipeline_cls.lora_state_dict(
        location, return_alphas=True, return_lora_metadata=True, **kwargs
    )
    out = normalize(state_dict, alphas, metadata, lora.scale, what=lora.name)
    if not out:
        raise ValueError(f"LoRA {lora.repo_id} has no transformer weights")
    return out


def normalize(state_dict: dict, alphas: dict | None, metadata: dict | None, scale: float, *, what: str) -> dict:
    """Transformer weights with alpha/r and `scale` baked into lora_B.

    Adapters loaded from a plain dict get scaling 1 in PEFT, and hot-swapping between adapters whose
    scalings differ would need the scaling tensors updated too; baking the factor into the weights
    makes every adapter a pure weight copy, and a scale costs nothing per step.
    """
    # diffusers returns adapter metadata flattened ("transformer.lora_alpha") or nested by component.
    meta = metadata or {}
    global_alpha = meta.get("transformer.lora_alpha", (meta.get("transformer") or {}).get("lora_alpha", meta.get("lora_alpha")))
    out, dropped = {}, []
    for key, value in state_dict.items():
        if not key.startswith("transformer."):
            dropped.append(key)
            continue
        if ".lora_B." in key:
            prefix = key.split(".lora_B.")[0]
            rank = state_dict[f"{prefix}.lora_A.weight"].shape[0]
            alpha = alphas.get(f"{prefix}.alpha", global_alpha) if alphas else global_alpha
            value = value * ((float(alpha) / rank if alpha is not None else 1.0) * scale)
        out[key] = value
    if dropped:
        log_event("lora.keys_dropped", adapter=what, count=len(dropped), reason="only transformer layers are hot-swapped")
    return out
