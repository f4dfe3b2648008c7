"""The docs site's charts page: every chart it shows is drawn from the committed benchmark results."""

import importlib.util
import re

from tests.conftest import ROOT


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_site_hooks", ROOT / "docs" / "_site" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_decode_chart_has_every_text_deployment_measured():
    """text-profile's result file once matched the decode chart's file pattern and, being newest, hid SmolLM3's
    bars without a word."""
    assert set(_hooks().decode_speeds()) == {"smollm3-3b", "gemma3-4b-it"}


def test_the_server_charts_have_each_text_deployment_and_the_newest_run_of_a_configuration(tmp_path):
    """Figures as the result files hold them; of two runs of one configuration on one GPU, the later one (the
    files' names do not sort by date: a same-day rerun at another commit carries its commit in its name)."""
    hooks = _hooks()
    one, many = hooks.text_server_speeds()
    assert {name.split(" ")[0] for name in one} == {"smollm3-3b", "phi4-reasoning-plus", "gemma3-4b-it"}
    assert one["smollm3-3b hqq (H100)"] == (51.04, 354.0)  # 7b145db's run, not 71c0392's earlier (31.42, 342.2)
    assert many["phi4-reasoning-plus 4bit-grouped (H100)"] == (115.0, 288.9)
    assert set(many) <= set(one)
    assert many["smollm3-3b hqq (H100)"] == (354.0, 1337.7)
    # The H200 run of 2026-12-04 timed the first text piece, not the first token: its file marks the figure wrong
    # (782.7 tok/s). The chart has the 2026-12-06 H200 run of the same configuration, and with the 2026-12-04 file
    # alone it has no H200 figure at all.
    assert one["smollm3-3b hqq (H200)"] == (36.57, 363.0)
    wrong = "2026-12-04-text-server-smollm3-3b-quantize_hqq-NVIDIA-H200.json"
    (tmp_path / wrong).write_text((hooks.RESULTS / wrong).read_text())
    hooks.RESULTS = tmp_path
    assert hooks.text_server_speeds() == ({}, {})


def test_every_chart_on_the_page_is_drawn_from_a_result_file():
    hooks = _hooks()
    shown = set(re.findall(r"\(charts/([\w-]+)\.png\)", hooks.charts_page()))
    drawn = hooks.charts()
    assert shown and shown <= set(drawn), f"named on the page but not drawn: {sorted(shown - set(drawn))}"
    assert all(png.startswith(b"\x89PNG") for png in drawn.values())


def test_the_phase_chart_splits_each_configurations_predict_time_into_its_measured_parts():
    result, rows = _hooks().flux_request_phases()
    assert result is not None and "flux-lora-txt2img default" in rows
    for config, parts in rows.items():
        name = config.removeprefix("flux-lora-txt2img ")
        measured = result["deployments"]["flux-lora-txt2img"][name]["1024x1024_28_steps"]
        assert parts["denoise + VAE decode"] == measured["median_phases_s"]["generate"]
        assert parts["the rest"] >= 0  # medians do not add up exactly: within 1% of predict_time's
        assert abs(sum(parts.values()) - measured["median_s"]) < 0.01 * measured["median_s"]


def test_each_deployment_page_lists_exactly_the_optimize_switches_its_setup_resolves():
    from shared import catalog
    from shared.cogserver import runner_class

    hooks = _hooks()
    for dep in catalog.DEPLOYMENTS.values():
        page = hooks.deployment_page(dep)
        table = page.split("## Optimization switches", 1)[1].split("## Try it", 1)[0]
        listed = re.findall(r"^\| `([\w-]+)` \| `", table, flags=re.M)
        assert listed == list(runner_class(dep.name).option_spec()), dep.name
