"""Weight profiles: where a deployment's weights come from, chosen by one environment variable.

    WEIGHT_PROFILE=tiny        random weights, real architecture shrunk; builds offline in seconds (tests, demo)
    WEIGHT_PROFILE=synthetic   random weights, full-size real architecture (GPU benchmarks)
    WEIGHT_PROFILE=hub         the pinned checkpoint from the Hugging Face Hub (default; production)
    WEIGHT_PROFILE=/some/dir   a local copy of the checkpoint (same layout as the Hub repo)

The Hub token is read from HF_TOKEN (or HUGGING_FACE_HUB_TOKEN) and never logged.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path

from .catalog import Checkpoint, Lora

ENV_VAR = "WEIGHT_PROFILE"
DEFAULT = "hub"


class WeightProfile(enum.Enum):
    TINY = "tiny"
    SYNTHETIC = "synthetic"
    HUB = "hub"
    LOCAL = "local"


@dataclass(frozen=True)
class WeightSource:
    profile: WeightProfile
    checkpoint: Checkpoint
    local_path: Path | None = None

    @property
    def tiny(self) -> bool:
        return self.profile is WeightProfile.TINY

    @property
    def is_random(self) -> bool:
        return self.profile in (WeightProfile.TINY, WeightProfile.SYNTHETIC)

    @property
    def location(self) -> str:
        if self.profile is WeightProfile.LOCAL:
            return str(self.local_path)
        return self.checkpoint.repo_id

    @property
    def from_pretrained_kwargs(self) -> dict:
        if self.profile is WeightProfile.LOCAL:
            return {"local_files_only": True}
        return {"revision": self.checkpoint.revision, "token": hub_token()}

    def describe(self) -> str:
        if self.profile is WeightProfile.HUB:
            return f"hub:{self.checkpoint.repo_id}@{self.checkpoint.revision}"
        if self.profile is WeightProfile.LOCAL:
            return f"local:{self.local_path}"
        return f"{self.profile.value}:{self.checkpoint.repo_id} (random weights)"

    def lora_location(self, lora: Lora) -> tuple[str, dict]:
        """Where a LoRA's weights load from: (repo or folder, kwargs for load_lora_weights)."""
        if self.profile is WeightProfile.LOCAL:
            # A local checkpoint folder keeps its LoRAs under loras/<adapter name>/.
            return str(self.local_path / "loras" / lora.name), {"weight_name": lora.weight_name}
        return lora.repo_id, {"weight_name": lora.weight_name, "revision": lora.revision, "token": hub_token()}


def hub_token() -> str | None:
    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or None


def resolve(checkpoint: Checkpoint, value: str | None = None) -> WeightSource:
    """The weight source named by WEIGHT_PROFILE (or `value`), with a clear error for anything else."""
    raw = (value if value is not None else os.environ.get(ENV_VAR, DEFAULT)).strip()
    names = {p.value for p in WeightProfile} - {"local"}
    if raw in names:
        return WeightSource(WeightProfile(raw), checkpoint)
    path = Path(raw).expanduser()
    if path.is_dir():
        return WeightSource(WeightProfile.LOCAL, checkpoint, path.resolve())
    raise ValueError(
        f"{ENV_VAR}={raw!r} is neither one of {sorted(names)} nor an existing local checkpoint folder"
    )
