"""The FLUX server benchmark's own code (benchmarks/flux_speed.py `serve_config`) on tiny weights, CPU: what
a device run records, checked where it is cheap to run, so a GPU call is not the first to find its bugs."""

import argparse
import contextlib

import pytest

from benchmarks import flux_speed
from shared import catalog

pytestmark = pytest.mark.integration


def test_one_configuration_records_time_phases_and_every_swap_including_a_users_lora(tmp_path, monkeypatch):
    monkeypatch.setenv("WEIGHT_PROFILE", "tiny")
    triggers = [t for lora in catalog.STYLE_LORAS for t in lora.triggers]
    case = {"prompt": "a lighthouse", "width": 256, "height": 256, "num_inference_steps": 2, "seed": 1}
    row = {}
    with contextlib.ExitStack() as stack:
        args = argparse.Namespace(setup_timeout=300, repeats=2, go_fast=False,
                                  user_lora_url=flux_speed.user_lora_url(stack, tmp_path, tiny=True))
        flux_speed.serve_config("flux-lora-txt2img", "default",
                                {"WEIGHT_PROFILE": "tiny", "TORCH_LOGS": "recompiles", "OPTIMIZE": "compile=on"},
                                tmp_path / "server.log", {"small": case}, row, args, triggers)
    small = row["small"]
    assert len(small["predict_time_s"]) == 2 and small["median_s"] > 0
    assert set(small["median_phases_s"]) == {"route", "encode", "generate", "save", "whole_run"}
    # 13 triggers (12 styles of one LoRA, GHIBSKY), none and a user's LoRA: 15 different images
    assert row["distinct_outputs_of_styles_none_and_user"] == len(triggers) + 2
    assert row["user_lora_comes_back_identical"] and row["style_comes_back_identical"]
    assert len(row["user_lora_predict_time_s"]) == 2 and row["swap_ms"]
    assert row["recompiles_after_setup"] == 0
