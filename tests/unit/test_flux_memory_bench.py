"""`bench.py flux-memory` (benchmarks/flux_speed.py) on the tiny pipeline with CUDA's memory counters faked:
the phases' own peaks and the whole request's peak, which the phases' resets of the allocator's peak
counter once hid (the whole request read as its last phase, the VAE decode)."""

import argparse

import torch

from benchmarks import flux_speed
from shared import flux

GIB = 2**30


class FakeAllocator:
    """CUDA's allocated / peak counters, moved by the phases this test makes allocate."""

    def __init__(self):
        self.allocated = self.peak = 3 * GIB  # the weights

    def holding(self, gib: float, fn):
        def run(*args, **kwargs):
            self.allocated += int(gib * GIB)
            self.peak = max(self.peak, self.allocated)
            try:
                return fn(*args, **kwargs)
            finally:
                self.allocated -= int(gib * GIB)
        return run


def test_each_phase_and_the_whole_request_get_their_own_peak(monkeypatch):
    import tests.conftest

    fake = FakeAllocator()
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *a: fake.allocated)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: fake.peak)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a: setattr(fake, "peak", fake.allocated))
    monkeypatch.setattr(torch.cuda.memory, "_snapshot", lambda *a: {"segments": [
        {"segment_pool_id": (0, 0), "total_size": fake.allocated + GIB, "allocated_size": fake.allocated}]})
    real_load = tests.conftest.load_runner

    def load_runner(name):  # the denoising step holds 8 GiB while it runs, the VAE decode 5
        runner = real_load(name)
        real_setup = runner.setup

        def setup():
            real_setup()
            runner.pipe.transformer.forward = fake.holding(8, runner.pipe.transformer.forward)
            runner.pipe.vae.decode = fake.holding(5, runner.pipe.vae.decode)
        runner.setup = setup
        return runner

    monkeypatch.setattr(tests.conftest, "load_runner", load_runner)
    monkeypatch.setattr(flux, "VAE_TILE_PX", 64)  # tiles of the tiny 128 px image, as 512 px ones of FLUX's 1024
    result = flux_speed.bench_flux_memory(argparse.Namespace(deployment="flux-lora-txt2img", sizes="128", steps=2))
    request = result["requests"]["128x128_2_steps"]
    assert request["phases"]["transformer_step"]["above_start_gib"] == 8.0
    assert request["phases"]["transformer_step"]["calls"] == 2
    assert request["phases"]["vae_decode"]["above_start_gib"] == 5.0
    assert request["whole_request_peak_gib"] == 11.0  # the weights and the step: not the VAE's 8
    assert result["pools_after_setup"] == {"(0, 0)": {"reserved_gib": 4.0, "allocated_gib": 3.0}}
    # the request's latents decoded both ways: tiles blend at their seams, so near but not the same image
    modes = request["vae_decode_modes"]
    assert modes["full"]["above_start_gib"] == modes["tiled"]["above_start_gib"] == 5.0
    assert 10 < modes["psnr_db_tiled_vs_full"] < float("inf")
