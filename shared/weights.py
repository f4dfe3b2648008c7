"""Weight profiles: where a deployment's weights come from, chosen by one environment variable.

    WEIGHT_PROFILE=tiny        random weights, real architecture shrunk; builds offline in seconds (tests, demo)
    WEIGHT_PROFILE=synthetic   random weights, full-size real architecture (GPU benchmarks)
    WEIGHT_PROFILE=hub         the pinned checkpoint from the Hugging Face Hub (self-hosting with HF_TOKEN)
    WEIGHT_PROFILE=mirror      the pinned bundle from the weight mirror (WEIGHTS_URL or catalog.WEIGHTS_MIRROR),
                               downloaded and verified into WEIGHTS_DIR, then loaded as a local folder (Replicate)
    WEIGHT_PROFILE=auto        mirror when one is configured, else hub (the default)
    WEIGHT_PROFILE=/some/dir   a local copy of the checkpoint (same layout as the Hub repo, LoRAs under loras/)

The Hub token is read from HF_TOKEN (or HUGGING_FACE_HUB_TOKEN), the mirror's from WEIGHTS_TOKEN (if it
needs one); neither is ever logged.

    python -m shared.weights publish <deployment> --dest DIR   # fill a mirror bundle from the Hub (HF_TOKEN)
    python -m shared.weights fetch <deployment> --dest DIR     # download a bundle from the mirror
"""

from __future__ import annotations

import argparse
import enum
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from . import catalog, weight_download
from .runtime import cache_dir
from .catalog import Checkpoint, Deployment, Lora

ENV_VAR = "WEIGHT_PROFILE"
DEFAULT = "auto"
MIRROR_ENV = "WEIGHTS_URL"
DIR_ENV = "WEIGHTS_DIR"


class WeightProfile(enum.Enum):
    TINY = "tiny"
    SYNTHETIC = "synthetic"
    HUB = "hub"
    MIRROR = "mirror"
    LOCAL = "local"


@dataclass(frozen=True)
class WeightSource:
    profile: WeightProfile
    checkpoint: Checkpoint
    local_path: Path | None = None
    mirror: str | None = None  # the mirror a local folder was downloaded from (shown without credentials)

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
            return f"local:{self.local_path}" + (f" (from mirror {self.mirror})" if self.mirror else "")
        if self.profile is WeightProfile.MIRROR:
            return f"mirror:{weight_download.shown(mirror_url() or '')}"
        return f"{self.profile.value}:{self.checkpoint.repo_id} (random weights)"

    def lora_location(self, lora: Lora) -> tuple[str, dict]:
        """Where a LoRA's weights load from: (repo or folder, kwargs for load_lora_weights)."""
        if self.profile is WeightProfile.LOCAL:
            # A local checkpoint folder keeps its LoRAs under loras/<adapter name>/.
            return str(self.local_path / "loras" / lora.name), {"weight_name": lora.weight_name}
        return lora.repo_id, {"weight_name": lora.weight_name, "revision": lora.revision, "token": hub_token()}


def hub_token() -> str | None:
    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or None


def mirror_url() -> str | None:
    return os.environ.get(MIRROR_ENV) or catalog.WEIGHTS_MIRROR


def mirror_dir(dep: Deployment) -> Path:
    return Path(os.environ.get(DIR_ENV) or cache_dir() / "weights") / weight_download.bundle(dep)


def resolve(checkpoint: Checkpoint, value: str | None = None) -> WeightSource:
    """The weight source named by WEIGHT_PROFILE (or `value`), with a clear error for anything else."""
    raw = (value if value is not None else os.environ.get(ENV_VAR, DEFAULT)).strip()
    names = {p.value for p in WeightProfile} - {"local"} | {"auto"}
    if raw == "auto":
        raw = "mirror" if mirror_url() else "hub"
    if raw == "mirror" and not mirror_url():
        raise ValueError(f"{ENV_VAR}=mirror needs the mirror's base URL: set {MIRROR_ENV} (or catalog.WEIGHTS_MIRROR)")
    if raw in names:
        return WeightSource(WeightProfile(raw), checkpoint)
    path = Path(raw).expanduser()
    if path.is_dir():
        return WeightSource(WeightProfile.LOCAL, checkpoint, path.resolve())
    raise ValueError(
        f"{ENV_VAR}={raw!r} is neither one of {sorted(names)} nor an existing local checkpoint folder"
    )


def for_deployment(dep: Deployment, value: str | None = None, *, wanted=None) -> WeightSource:
    """resolve() for a deployment's setup(): a mirror bundle is downloaded and verified first (resuming
    what an earlier boot left), then loads as a local folder. `wanted(path)` picks the bundle's files."""
    source = resolve(dep.checkpoint, value)
    if source.profile is not WeightProfile.MIRROR:
        return source
    base = mirror_url()
    folder = weight_download.fetch(dep, base, mirror_dir(dep), token=os.environ.get(weight_download.TOKEN_ENV),
                                   wanted=wanted)
    return WeightSource(WeightProfile.LOCAL, dep.checkpoint, folder, mirror=weight_download.shown(base))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fill or read the weight mirror (shared/weight_download.py).")
    sub = parser.add_subparsers(dest="command", required=True)
    pub = sub.add_parser("publish", help="download the pinned Hub files (HF_TOKEN) and write the bundle's manifest")
    pub.add_argument("deployment", choices=list(catalog.DEPLOYMENTS))
    pub.add_argument("--dest", type=Path, required=True, help="folder to fill; upload its contents to <base>/<bundle>/")
    pub.add_argument("--no-hub", action="store_true", help="only (re)write the manifest of what the folder holds")
    get = sub.add_parser("fetch", help="download a deployment's bundle from the mirror (WEIGHTS_URL)")
    get.add_argument("deployment", choices=list(catalog.DEPLOYMENTS))
    get.add_argument("--dest", type=Path, help="default: WEIGHTS_DIR/<bundle>")
    args = parser.parse_args(argv)
    dep = catalog.get(args.deployment)
    try:
        if args.command == "publish":
            weight_download.publish(dep, args.dest, token=None if args.no_hub else hub_token(), from_hub=not args.no_hub)
            print(f"now upload {args.dest}/ to <base>/{weight_download.bundle(dep)}/")
        elif not mirror_url():
            print(f"error: set {MIRROR_ENV}", file=sys.stderr)
            return 2
        else:
            weight_download.fetch(dep, mirror_url(), args.dest or mirror_dir(dep),
                                  token=os.environ.get(weight_download.TOKEN_ENV))
    except weight_download.WeightDownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
