"""The weight mirror: a verified, parallel, resumable download that never shows a credential."""

import dataclasses
import json
import logging

import pytest

from shared import catalog, compile_cache, weight_download, weights
from shared.weight_download import WeightDownloadError
from tests.mirror_server import MirrorServer

DEP = catalog.get("flux-lora-txt2img")
SECRET = "sentinel-mirror-secret-7f3a"
CHUNK = 2**18  # small chunks so a few hundred KB span several of them


@pytest.fixture
def bundle(tmp_path):
    """A published bundle for DEP: a few files of random bytes in the checkpoint + loras layout."""
    import os

    root = tmp_path / "mirror"
    folder = root / weight_download.bundle(DEP)
    for rel, size in [("transformer/diffusion_pytorch_model.safetensors", 3 * CHUNK + 1234), ("model_index.json", 300),
                      ("loras/ghibsky/lora.safetensors", CHUNK + 4_000), ("compile-cache/flux-lora-txt2img/k1.bin", 50),
                      ("compile-cache/flux-lora-img2img/k1.bin", 50)]:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(os.urandom(size))
    manifest = weight_download.build_manifest(folder, DEP, chunk_size=CHUNK)
    (folder / weight_download.MANIFEST).write_text(manifest.to_json())
    return root, folder, manifest


def _fetch(server, dest, **kwargs):
    return weight_download.fetch(DEP, server.url, dest, workers=4, backoff=0.01, **kwargs)


def _same_tree(a, b, manifest):
    for f in manifest.files:
        assert (a / f.path).read_bytes() == (b / f.path).read_bytes(), f.path


def test_a_bundle_downloads_verified_into_the_local_folder_layout(bundle, tmp_path):
    root, folder, manifest = bundle
    with MirrorServer(root) as server:
        out = _fetch(server, tmp_path / "dest")
    _same_tree(folder, out, manifest)
    assert not list(out.rglob("*.partial*")), "no partial files left behind"
    ranges = [r for _, r in server.requests if r]
    assert len(ranges) == sum(len(f.chunks) for f in manifest.files), "one ranged request per chunk"


def test_only_this_deployments_compile_cache_of_its_key_is_fetched(bundle, tmp_path):
    root, _, _ = bundle
    with MirrorServer(root) as server:
        out = _fetch(server, tmp_path / "dest", wanted=compile_cache.wanted_files("flux-lora-txt2img", "k1"))
    assert (out / "compile-cache/flux-lora-txt2img/k1.bin").is_file()
    assert not (out / "compile-cache/flux-lora-img2img").exists()
    assert (out / "loras/ghibsky/lora.safetensors").is_file()


def test_a_connection_cut_midway_resumes_instead_of_starting_over(bundle, tmp_path):
    root, folder, manifest = bundle
    big = "transformer/diffusion_pytorch_model.safetensors"
    total = sum(f.size for f in manifest.files)
    with MirrorServer(root) as server:
        # The first response for the big file stops 200,000 bytes into its chunk.
        server.cut_after[f"{weight_download.bundle(DEP)}/{big}"] = 200_000
        out = _fetch(server, tmp_path / "dest")
        resumed = [r for p, r in server.requests if p.endswith(big)]
    _same_tree(folder, out, manifest)
    manifest_bytes = len((folder / weight_download.MANIFEST).read_bytes())
    refetched = server.served - total - manifest_bytes
    assert 0 <= refetched <= weight_download.READ_SIZE, f"{refetched} bytes fetched twice: the cut chunk started over"
    starts = [int(r.split("=")[1].split("-")[0]) for r in resumed if r]
    assert any(s % CHUNK for s in starts), f"a request resumed inside the cut chunk: {resumed}"


def test_a_stopped_boot_resumes_with_the_chunks_it_had(bundle, tmp_path):
    root, folder, manifest = bundle
    big = f"{weight_download.bundle(DEP)}/loras/ghibsky/lora.safetensors"
    dest = tmp_path / "dest"
    with MirrorServer(root) as server:
        server.broken.add(big)  # first boot: this file's server keeps failing, the others arrive
        with pytest.raises(WeightDownloadError, match="lora.safetensors"):
            _fetch(server, dest, attempts=2)
        first = server.served
        server.broken.clear()
        server.served = 0
        out = _fetch(server, dest)
    _same_tree(folder, out, manifest)
    total = sum(f.size for f in manifest.files)
    manifest_bytes = len((folder / weight_download.MANIFEST).read_bytes())
    assert first > manifest_bytes and server.served < total, "the second boot resumed"
    assert first + server.served == total + 2 * manifest_bytes, "no verified byte was fetched twice"


def test_a_file_that_is_not_the_published_one_fails_naming_the_file(bundle, tmp_path):
    root, folder, _ = bundle
    path = folder / "loras/ghibsky/lora.safetensors"
    data = bytearray(path.read_bytes())
    data[CHUNK + 2500] ^= 0xFF
    path.write_bytes(bytes(data))
    with MirrorServer(root) as server, pytest.raises(WeightDownloadError) as err:
        _fetch(server, tmp_path / "dest")
    assert "loras/ghibsky/lora.safetensors" in str(err.value) and "sha256" in str(err.value)
    assert not (tmp_path / "dest/loras/ghibsky/lora.safetensors").exists(), "a bad file never takes the final name"


def test_a_bundle_of_other_revisions_than_the_catalog_pins_is_refused(bundle, tmp_path):
    root, folder, manifest = bundle
    stale = dataclasses.replace(manifest, checkpoint={"repo_id": DEP.checkpoint.repo_id, "revision": "0" * 40})
    (folder / weight_download.MANIFEST).write_text(stale.to_json())
    with MirrorServer(root) as server, pytest.raises(WeightDownloadError, match="catalog pins"):
        _fetch(server, tmp_path / "dest")


def test_a_manifest_path_outside_the_bundle_is_refused(bundle, tmp_path):
    root, folder, _ = bundle
    raw = json.loads((folder / weight_download.MANIFEST).read_text())
    raw["files"][0]["path"] = "../../outside.bin"
    (folder / weight_download.MANIFEST).write_text(json.dumps(raw))
    with MirrorServer(root) as server, pytest.raises(WeightDownloadError, match="refusing file path"):
        _fetch(server, tmp_path / "dest")


def test_an_unpublished_bundle_says_so(tmp_path):
    with MirrorServer(tmp_path) as server, pytest.raises(WeightDownloadError, match="404.*published"):
        _fetch(server, tmp_path / "dest")


def test_credentials_reach_the_mirror_but_no_log_or_error(bundle, tmp_path, caplog, capsys):
    root, folder, manifest = bundle
    base_with_signature = None
    with MirrorServer(root, token=SECRET) as server:
        base_with_signature = f"{server.url}?X-Signature={SECRET}"
        with pytest.raises(WeightDownloadError) as err:  # wrong token: 401, message without the secret
            weight_download.fetch(DEP, base_with_signature, tmp_path / "nope", token="wrong-" + SECRET, workers=2)
        with caplog.at_level(logging.INFO, logger="cogdeploy"):
            out = weight_download.fetch(DEP, base_with_signature, tmp_path / "dest", token=SECRET, workers=2)
    _same_tree(folder, out, manifest)
    assert "401" in str(err.value)
    printed = str(err.value) + caplog.text + "".join(capsys.readouterr())
    assert "weights.download.done" in printed
    assert SECRET not in printed


def test_the_mirror_profile_needs_a_url_and_auto_picks_it(monkeypatch):
    monkeypatch.delenv("WEIGHTS_URL", raising=False)
    with pytest.raises(ValueError, match="WEIGHTS_URL"):
        weights.resolve(DEP.checkpoint, "mirror")
    assert weights.resolve(DEP.checkpoint, "auto").profile is weights.WeightProfile.HUB
    monkeypatch.setenv("WEIGHTS_URL", f"https://user:{SECRET}@mirror.example/w?sig={SECRET}")
    source = weights.resolve(DEP.checkpoint, "auto")
    assert source.profile is weights.WeightProfile.MIRROR
    assert SECRET not in source.describe() and "mirror.example/w" in source.describe()


def test_every_checkpoint_and_lora_is_pinned_to_a_commit():
    # No public commit id of unsloth/phi-4-reasoning-plus could be found offline (docs/models.md); publishing
    # its mirror refuses until it is pinned (next test). Remove this exception when it is pinned.
    unpinned_known = {"unsloth/phi-4-reasoning-plus"}
    pins = {d.checkpoint.repo_id: d.checkpoint.revision for d in catalog.DEPLOYMENTS.values()}
    pins |= {lo.repo_id: lo.revision for lo in catalog.STYLE_LORAS}
    bad = {repo: rev for repo, rev in pins.items() if not weight_download.COMMIT.fullmatch(rev)}
    assert set(bad) == unpinned_known, bad


def test_publishing_from_a_branch_is_refused_naming_the_commit_to_pin(monkeypatch, tmp_path):
    import huggingface_hub

    asked = []

    class Hub:  # the Hub as huggingface_hub answers: model_info(repo, revision).sha is the commit
        def __init__(self, token=None):
            pass

        def model_info(self, repo_id, revision):
            asked.append((repo_id, revision))
            return type("Info", (), {"sha": "ab" * 20})()

    monkeypatch.setattr(huggingface_hub, "HfApi", Hub)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: pytest.fail("downloaded from a branch"))
    dep = catalog.get("phi4-reasoning-plus")
    with pytest.raises(ValueError, match=rf"checkpoint {dep.checkpoint.repo_id}@main is {'ab' * 20} today"):
        weight_download.publish(dep, tmp_path / "bundle")
    assert asked == [(dep.checkpoint.repo_id, "main")]
    lora = catalog.get("flux-lora-txt2img").loras[0]
    moved = dataclasses.replace(catalog.get("flux-lora-txt2img"), loras=(dataclasses.replace(lora, revision="main"),))
    with pytest.raises(ValueError, match=f"LoRA {lora.name} {lora.repo_id}@main"):
        weight_download.publish(moved, tmp_path / "bundle")
