"""Which of gemlite's tuned config files a GPU loads (shared/llm_backends.gemlite_config_for).

The tags are the file names gemlite 0.6.0.post2 ships in gemlite/configs/."""

from shared.llm_backends import gemlite_config_for

SHIPPED = ["4090", "5090", "6000_ada", "a100", "a40", "a6000", "h100", "l4", "l40", "l40s", "mi300x"]


def test_h200_takes_the_h100_tunings():
    assert gemlite_config_for("NVIDIA H200", (9, 0), SHIPPED) == "h100"


def test_a_gpu_gemlite_matches_itself_is_left_to_gemlite():
    assert gemlite_config_for("NVIDIA H100 80GB HBM3", (9, 0), SHIPPED) is None
    assert gemlite_config_for("NVIDIA A100-SXM4-80GB", (8, 0), SHIPPED) is None


def test_an_architecture_without_a_file_loads_nothing():
    assert gemlite_config_for("NVIDIA B200", (10, 0), SHIPPED) is None
    assert gemlite_config_for("NVIDIA H200", (9, 0), ["a100"]) is None
