"""Weights from a mirror: a manifest-driven, parallel, resumable, verified download.

FLUX.1-dev and Gemma 3 are gated on the Hugging Face Hub, and a Replicate model gets no secret at boot
(Replicate's `Secret` is a `run()` input, which `setup()` cannot use). So the owner fills a mirror once,
with the token, and every boot downloads from it without one, the way replicate/cog-flux boots from
weights.replicate.delivery with pget:

    python -m shared.weights publish flux-lora-txt2img --dest mirror/   # Hub -> folder (HF_TOKEN)
    (upload mirror/ to any static HTTP host: a bucket, a CDN, nginx)
    WEIGHTS_URL=https://host/prefix  # or catalog.WEIGHTS_MIRROR, then WEIGHT_PROFILE=mirror (or auto)

Layout: `<base>/<bundle>/manifest.json` and every file under `<base>/<bundle>/<path>`, where the bundle is
`<checkpoint assets>/<checkpoint revision>` and the files are the checkpoint in its Hub layout plus
`loras/<adapter name>/<weight file>`: the local-folder layout `weights.WeightSource` already loads.
Compile-cache artifacts (shared/compile_cache.py) live in the same bundle under `compile-cache/`.

The manifest pins every file by size and sha256, per 64 MiB chunk as well as whole, so each chunk is
checked as it streams in (no second pass over 34 GB), and a download that stops resumes chunk by chunk.
It also names the checkpoint and LoRA revisions it was made from; a mirror of other revisions than the
catalog pins is refused. Credentials (WEIGHTS_TOKEN, a signed query string, user:password@) never reach
a log line or an error message: URLs are shown as scheme://host/path.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests
import tenacity

from .catalog import Deployment
from .runtime import log_event

MANIFEST = "manifest.json"
FORMAT = 1
CHUNK_SIZE = 64 * 2**20
# Bytes read from the socket at a time: what a cut connection can cost (urllib3 drops a short last read).
READ_SIZE = 2**16
TOKEN_ENV = "WEIGHTS_TOKEN"
WORKERS_ENV = "WEIGHTS_WORKERS"


class WeightDownloadError(RuntimeError):
    """The mirror could not give a verified copy; the message names the file and never a credential."""


# -- the manifest -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str
    chunks: tuple[str, ...]  # sha256 of each chunk_size piece, in order

    def chunk_range(self, index: int, chunk_size: int) -> tuple[int, int]:
        start = index * chunk_size
        return start, min(start + chunk_size, self.size)


@dataclass(frozen=True)
class Manifest:
    checkpoint: dict  # {"repo_id", "revision"}
    loras: tuple[dict, ...]  # ({"name", "repo_id", "revision", "weight_name"}, ...)
    files: tuple[FileEntry, ...]
    chunk_size: int = CHUNK_SIZE
    format: int = FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        raw = json.loads(text)
        if raw.get("format") != FORMAT:
            raise WeightDownloadError(f"{MANIFEST}: format {raw.get('format')!r}, this code reads format {FORMAT}")
        files = tuple(FileEntry(f["path"], int(f["size"]), f["sha256"], tuple(f["chunks"])) for f in raw["files"])
        for f in files:
            _check_relative(f.path)
        return cls(raw["checkpoint"], tuple(raw["loras"]), files, int(raw["chunk_size"]), raw["format"])

    def mismatches(self, dep: Deployment) -> list[str]:
        """How this manifest differs from the catalog's pins for `dep` (empty: it is the pinned bundle)."""
        ck = dep.checkpoint
        found = []
        if (self.checkpoint.get("repo_id"), self.checkpoint.get("revision")) != (ck.repo_id, ck.revision):
            found.append(f"checkpoint {self.checkpoint.get('repo_id')}@{self.checkpoint.get('revision')}, "
                         f"catalog pins {ck.repo_id}@{ck.revision}")
        have = {lo["name"]: lo for lo in self.loras}
        for lora in dep.loras:
            got = have.get(lora.name)
            if got is None:
                found.append(f"LoRA {lora.name} missing")
            elif (got["repo_id"], got["revision"], got["weight_name"]) != (lora.repo_id, lora.revision, lora.weight_name):
                found.append(f"LoRA {lora.name} is {got['repo_id']}@{got['revision']}/{got['weight_name']}, "
                             f"catalog pins {lora.repo_id}@{lora.revision}/{lora.weight_name}")
        return found


def bundle(dep: Deployment) -> str:
    """Where a deployment's weights live under the mirror's base URL (FLUX deployments share one)."""
    return f"{dep.checkpoint.assets}/{dep.checkpoint.revision}"


def _check_relative(path: str) -> None:
    # A manifest path becomes a local path: nothing absolute, nothing that climbs out of the folder.
    parts = Path(path).parts
    if not parts or Path(path).is_absolute() or ".." in parts:
        raise WeightDownloadError(f"{MANIFEST}: refusing file path {path!r} (must be relative, inside the bundle)")


def hash_file(path: Path, chunk_size: int = CHUNK_SIZE) -> tuple[str, tuple[str, ...]]:
    whole, chunks = hashlib.sha256(), []
    with open(path, "rb") as f:
        while piece := f.read(chunk_size):
            whole.update(piece)
            chunks.append(hashlib.sha256(piece).hexdigest())
    return whole.hexdigest(), tuple(chunks)


def build_manifest(folder: Path, dep: Deployment, *, chunk_size: int = CHUNK_SIZE) -> Manifest:
    """The manifest of a complete local bundle (checkpoint in its Hub layout + loras/ + compile-cache/)."""
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        rel = path.relative_to(folder).as_posix()
        if rel.startswith(".") or "/." in rel:  # .cache/ of huggingface_hub, partial downloads
            continue
        whole, chunks = hash_file(path, chunk_size)
        files.append(FileEntry(rel, path.stat().st_size, whole, chunks))
    ck = dep.checkpoint
    loras = tuple({"name": lo.name, "repo_id": lo.repo_id, "revision": lo.revision, "weight_name": lo.weight_name}
                  for lo in dep.loras)
    return Manifest({"repo_id": ck.repo_id, "revision": ck.revision}, loras, tuple(files), chunk_size)


COMMIT = re.compile(r"[0-9a-f]{40}")


def refuse_moving_revisions(dep: Deployment, token: str | None) -> None:
    """A mirror is a release artifact: made only from commits. A branch ("main") in the catalog is looked
    up on the Hub and reported as the commit to pin, so the owner pins it before anything is published."""
    pins = [("checkpoint", dep.checkpoint.repo_id, dep.checkpoint.revision)]
    pins += [(f"LoRA {lora.name}", lora.repo_id, lora.revision) for lora in dep.loras]
    moving = [(what, repo, rev) for what, repo, rev in pins if not COMMIT.fullmatch(rev)]
    if not moving:
        return
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    found = [f"{what} {repo}@{rev} is {api.model_info(repo, revision=rev).sha} today" for what, repo, rev in moving]
    raise ValueError(f"{dep.name}: a mirror is made only from pinned commits; pin in shared/catalog.py: "
                     + "; ".join(found))


def publish(dep: Deployment, folder: Path, *, token: str | None = None, from_hub: bool = True) -> Manifest:
    """Make `folder` a mirror bundle for `dep`: (optionally) the pinned Hub files, then the manifest.

    Run once by the owner, on a machine with HF_TOKEN; upload the folder's contents to <base>/<bundle>/.
    """
    if from_hub:
        from huggingface_hub import hf_hub_download, snapshot_download

        refuse_moving_revisions(dep, token)
        ck = dep.checkpoint
        snapshot_download(ck.repo_id, revision=ck.revision, allow_patterns=list(ck.files), local_dir=folder, token=token)
        for lora in dep.loras:
            hf_hub_download(lora.repo_id, lora.weight_name, revision=lora.revision, token=token,
                            local_dir=folder / "loras" / lora.name)
    manifest = build_manifest(folder, dep)
    (folder / MANIFEST).write_text(manifest.to_json())
    log_event("weights.published", deployment=dep.name, bundle=bundle(dep), files=len(manifest.files),
              bytes=sum(f.size for f in manifest.files))
    return manifest


# -- the download ---------------------------------------------------------------------------------------

def shown(url: str) -> str:
    """A URL as it may appear in logs and errors: no user:password@, no query string (signatures)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else "",
                       parts.path, "", ""))


def file_url(base: str, *path: str) -> str:
    """`base` (which may carry a signed query string) with `path` appended to its path."""
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path="/".join([parts.path.rstrip("/"), *path])))


class _Transient(Exception):
    """A failure worth retrying: the connection, a timeout, a 5xx/408/429, a response cut short."""


@dataclass
class _Progress:
    fetched: int = 0  # bytes transferred in this run (a resumed download fetches less than the total)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, n: int) -> None:
        with self.lock:
            self.fetched += n


class MirrorDownload:
    """Download one bundle from `base` into `dest`, verified, resuming whatever an earlier run left."""

    def __init__(self, base: str, dest: Path, *, token: str | None = None, workers: int | None = None,
                 attempts: int = 5, backoff: float = 0.5, timeout: float = 60):
        self.base = base
        self.dest = Path(dest)
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.workers = workers or int(os.environ.get(WORKERS_ENV, "16"))
        self.retrying = tenacity.Retrying(retry=tenacity.retry_if_exception_type(_Transient),
                                          wait=tenacity.wait_exponential(multiplier=backoff, max=20),
                                          stop=tenacity.stop_after_attempt(attempts), reraise=True)
        self.timeout = timeout
        self.log_lock = threading.Lock()

    def manifest(self) -> Manifest:
        url = file_url(self.base, MANIFEST)
        try:
            response = self.retrying.copy()(self._get, url, {}, MANIFEST)
            return Manifest.from_json(response.content.decode("utf-8"))
        except (ValueError, KeyError, TypeError) as e:
            raise WeightDownloadError(f"{MANIFEST} from {shown(url)} is not a valid manifest: {e.__class__.__name__}") from None

    def run(self, manifest: Manifest, wanted=lambda path: True) -> Path:
        """Fetch every wanted file of `manifest` into dest; returns dest once all are verified."""
        started = time.perf_counter()
        files = [f for f in manifest.files if wanted(f.path)]
        todo = [(f, i) for f in files if not self._complete(f) for i in self._missing_chunks(f)]
        total, progress = sum(f.size for f in files), _Progress()
        log_event("weights.download.start", source=shown(self.base), files=len(files), bytes=total,
                  chunks_to_fetch=len(todo), chunks=sum(len(f.chunks) for f in files), workers=self.workers)
        for f in files:
            if not self._complete(f):
                self._partial(f).parent.mkdir(parents=True, exist_ok=True)
                with open(self._partial(f), "ab") as handle:
                    handle.truncate(f.size)  # preallocate; chunks are written at their offsets
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="weights") as pool:
            futures = [pool.submit(self._chunk, f, i, manifest.chunk_size, progress) for f, i in todo]
            try:
                for future in as_completed(futures):
                    future.result()
            except BaseException:
                pool.shutdown(cancel_futures=True)  # a bad file or a dead mirror: stop, keep what verified
                raise
        for f in files:
            if not self._complete(f):
                os.replace(self._partial(f), self.dest / f.path)
                self._done_log(f).unlink(missing_ok=True)
        seconds = time.perf_counter() - started
        log_event("weights.download.done", files=len(files), bytes=total, fetched=progress.fetched,
                  seconds=round(seconds, 2), mb_per_s=round(progress.fetched / 2**20 / seconds, 1) if seconds else None)
        return self.dest

    # A file is complete once renamed from .partial, which happens only after every chunk verified.
    def _complete(self, f: FileEntry) -> bool:
        final = self.dest / f.path
        return final.is_file() and final.stat().st_size == f.size

    def _partial(self, f: FileEntry) -> Path:
        return self.dest / (f.path + ".partial")

    def _done_log(self, f: FileEntry) -> Path:
        return self.dest / (f.path + ".partial.done")

    def _missing_chunks(self, f: FileEntry) -> list[int]:
        # The log names each verified chunk by its sha256: a chunk verified against another manifest (the
        # bundle was published again) is fetched again.
        done = set()
        if self._partial(f).is_file() and self._done_log(f).is_file():
            done = {tuple(line.split()) for line in self._done_log(f).read_text().splitlines()}
        return [i for i, digest in enumerate(f.chunks) if (str(i), digest) not in done]

    def _chunk(self, f: FileEntry, index: int, chunk_size: int, progress: _Progress) -> None:
        start, end = f.chunk_range(index, chunk_size)
        state = {"hasher": hashlib.sha256(), "offset": start}  # survives retries: a cut resumes mid-chunk
        self.retrying.copy()(self._fetch_range, f, start, end, state, progress)
        digest = state["hasher"].hexdigest()
        if digest != f.chunks[index]:
            raise WeightDownloadError(
                f"{f.path}: bytes {start}-{end - 1} (chunk {index + 1} of {len(f.chunks)}) do not match the manifest's "
                f"sha256 (got {digest[:16]}..., expected {f.chunks[index][:16]}...): the mirror's copy of {f.path} "
                "is not the one the manifest was made from; re-publish it")
        with self.log_lock:
            with open(self._done_log(f), "a") as log:
                log.write(f"{index} {digest}\n")

    def _fetch_range(self, f: FileEntry, start: int, end: int, state: dict, progress: _Progress) -> None:
        offset = state["offset"]
        if offset >= end:
            return
        url = file_url(self.base, *f.path.split("/"))
        response = self._get(url, {"Range": f"bytes={offset}-{end - 1}"}, f.path, stream=True)
        if response.status_code != 206 and not (offset == 0 and end == f.size and response.status_code == 200):
            response.close()
            raise WeightDownloadError(f"{f.path}: {shown(url)} ignored a byte-range request (HTTP {response.status_code}); "
                                      "the mirror must support Range requests")
        fd = os.open(self._partial(f), os.O_WRONLY)
        try:
            for piece in response.iter_content(chunk_size=READ_SIZE):
                piece = piece[: end - state["offset"]]
                os.pwrite(fd, piece, state["offset"])
                state["hasher"].update(piece)
                state["offset"] += len(piece)
                progress.add(len(piece))
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
            raise _Transient(f"{f.path}: connection lost at byte {state['offset']} ({e.__class__.__name__})") from None
        finally:
            os.close(fd)
            response.close()
        if state["offset"] < end:
            raise _Transient(f"{f.path}: response ended at byte {state['offset']} of {end}")

    def _get(self, url: str, headers: dict, what: str, stream: bool = False) -> requests.Response:
        try:
            response = self.session.get(url, headers=headers, stream=stream, timeout=self.timeout)
        except (requests.ConnectionError, requests.Timeout) as e:
            raise _Transient(f"{what}: {e.__class__.__name__} reaching {shown(url)}") from None
        if response.status_code in (408, 429) or response.status_code >= 500:
            response.close()
            raise _Transient(f"{what}: HTTP {response.status_code} from {shown(url)}")
        if response.status_code >= 400:
            response.close()
            hint = {401: "the mirror wants credentials (WEIGHTS_TOKEN)", 403: "access denied (check WEIGHTS_TOKEN)",
                    404: "not on the mirror: was this bundle published?"}.get(response.status_code, "")
            raise WeightDownloadError(f"{what}: HTTP {response.status_code} from {shown(url)}" + (f": {hint}" if hint else ""))
        return response


def fetch(dep: Deployment, base: str, dest: Path, *, token: str | None = None, wanted=None, **kwargs) -> Path:
    """The verified local folder of `dep`'s bundle from the mirror at `base` (resumes an earlier run)."""
    mirror = MirrorDownload(file_url(base, *bundle(dep).split("/")), dest, token=token, **kwargs)
    try:
        manifest = mirror.manifest()
        wrong = manifest.mismatches(dep)
        if wrong:
            raise WeightDownloadError(f"{dep.name}: the mirror's bundle is not the catalog's pinned one: {'; '.join(wrong)}")
        return mirror.run(manifest, wanted or (lambda path: True))
    except _Transient as e:
        raise WeightDownloadError(f"{dep.name}: gave up after retries: {e}") from None


