"""Every deployment boots from a weight mirror through the real Cog server, as a Replicate boot would.

The mirror is a loopback static file server (tests/mirror_server.py) holding tiny checkpoints in the
Hub layout plus their LoRAs, published with the same `weight_download.publish` the owner runs on the
real files. It wants a bearer token and the base URL carries a signed query string: both are sentinels
that must reach the mirror and never the server's log or a prediction.
"""

import json

import pytest
import torch

from shared import catalog, weight_download
from shared.cogserver import CogServer, example_inputs
from tests.integration.conftest import ok
from tests.mirror_server import MirrorServer

pytestmark = pytest.mark.integration

SECRET = "sentinel-signed-4c1d9e"
BUNDLES = {"flux-lora-txt2img": "flux", "smollm3-3b": "causal", "phi4-reasoning-plus": "causal", "gemma3-4b-it": "gemma3"}


def save_tiny_checkpoint(dep, folder):
    """A tiny random checkpoint of `dep` written the way the Hub repo lays it out (LoRAs under loras/)."""
    from shared.builders import flux, text

    kind = BUNDLES[dep.name]
    if kind == "flux":
        from diffusers import FluxPipeline

        from shared.builders.loras import write_random_lora

        pipe = flux.build_random(dep, tiny=True, device="cpu", dtype=torch.float32, pipeline_cls=FluxPipeline)
        pipe.save_pretrained(folder)
        for index, lora in enumerate(dep.loras):
            write_random_lora(FluxPipeline, pipe.transformer, lora, index, folder / "loras", magnitude=4.0)
        return
    build = text.build_random_gemma3 if kind == "gemma3" else text.build_random_causal_lm
    model, tokenizer = build(dep, tiny=True, device="cpu", dtype=torch.float32)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    root = tmp_path_factory.mktemp("mirror")
    for name in BUNDLES:
        dep = catalog.get(name)
        folder = root / weight_download.bundle(dep)
        save_tiny_checkpoint(dep, folder)
        weight_download.publish(dep, folder, from_hub=False)
    with MirrorServer(root, token=SECRET) as server:
        yield server


def boot_env(mirror, tmp_path):
    return {"WEIGHT_PROFILE": "mirror", "WEIGHTS_URL": f"{mirror.url}?X-Amz-Signature={SECRET}",
            "WEIGHTS_TOKEN": SECRET, "WEIGHTS_DIR": str(tmp_path / "weights"), "HF_HUB_OFFLINE": "1"}


@pytest.mark.parametrize("name", list(catalog.DEPLOYMENTS))
def test_boots_from_the_mirror_and_predicts_without_leaking_credentials(mirror, tmp_path, name):
    dep = catalog.get(name)
    with CogServer(name, env=boot_env(mirror, tmp_path), setup_timeout=300) as server:
        body = ok(server.predict(example_inputs(name)))
        log = server.log_path.read_text()
        [setup] = server.events("setup.done")
        announced = {e["phase"]: e["seconds"] for e in server.events("setup.phase")}
    assert announced == setup["phases"]  # each boot step is logged as it ends, not only in the summary
    assert setup["weights"].startswith("local:") and f"from mirror {mirror.url}" in setup["weights"]
    assert any((tmp_path / "weights" / weight_download.bundle(dep)).rglob("*.safetensors"))
    assert SECRET not in log and SECRET not in json.dumps(body)


def test_a_corrupt_file_fails_setup_naming_it(mirror, tmp_path):
    dep = catalog.get("smollm3-3b")
    path = next((mirror.root / weight_download.bundle(dep)).glob("*.safetensors"))
    original = path.read_bytes()
    path.write_bytes(original[:100] + bytes([original[100] ^ 0xFF]) + original[101:])
    try:
        with pytest.raises(RuntimeError) as err, CogServer(dep.name, env=boot_env(mirror, tmp_path), setup_timeout=300):
            pass
    finally:
        path.write_bytes(original)
    assert path.name in str(err.value) and "sha256" in str(err.value)
    assert SECRET not in str(err.value)
