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


def test_every_chart_on_the_page_is_drawn_from_a_result_file():
    hooks = _hooks()
    shown = set(re.findall(r"\(charts/([\w-]+)\.png\)", hooks.charts_page()))
    drawn = hooks.charts()
    assert shown and shown <= set(drawn), f"named on the page but not drawn: {sorted(shown - set(drawn))}"
    assert all(png.startswith(b"\x89PNG") for png in drawn.values())
