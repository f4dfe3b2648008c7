"""Log events are one logfmt line each (shared/runtime.log_event) and read back whole (shared/cogserver.log_events)."""

import json
import logging

from shared.cogserver import log_events, parse_event
from shared.runtime import log_event

RECORD = {"deployment": "smollm3-3b", "weights": "tiny:HuggingFaceTB/SmolLM3-3B (random weights)",
          "options": {"quantize": "hqq", "compile": "off"}, "phases": {"weights": 0.0, "load": 3.41},
          "compile_cache": {"seconds": {}, "inductor_fxgraph_cache_hit": 3}, "cache_tokens": [2048, 18432],
          "peak_gpu_gb": None, "enable_thinking": True, "error": 'it\'s "quoted" = x', "classes": ["A", "B"]}


def _line(caplog, event="setup.done", **fields):
    with caplog.at_level(logging.INFO, logger="cogdeploy"):
        log_event(event, **fields)
    return caplog.records[-1].getMessage()


def test_an_event_is_one_logfmt_line_that_reads_back_whole(caplog):
    line = _line(caplog, **RECORD)
    assert "\n" not in line and line.startswith("event=setup.done ")
    assert "phases.load=3.41" in line and "options.quantize=hqq" in line  # readable, not a JSON document
    assert parse_event(line) == {"event": "setup.done", **RECORD}


def test_inside_coglets_record_the_message_is_no_escaped_json_and_still_reads_back(caplog):
    """Cog's server wraps each line the worker writes in its own JSON record; a JSON event became an escaped
    string inside it (what users saw in the container's log)."""
    line = _line(caplog, "predict.end", seconds=1.5, peak_gpu_gb=3.54, output_token_count=512)
    wrapped = json.dumps({"timestamp": "2026-12-05T02:24:36Z", "level": "INFO", "fields": {"message": line},
                          "target": "coglet::user"})
    assert '\\"' not in wrapped  # no quotes inside quotes: one readable line
    assert log_events(wrapped + "\nother line\n" + line, "predict.end") == [
        {"event": "predict.end", "seconds": 1.5, "peak_gpu_gb": 3.54, "output_token_count": 512}] * 2


def test_lines_that_are_not_events_are_skipped():
    assert parse_event("Loading checkpoint shards: 100% 2/2") is None
    assert parse_event('event=x unterminated="quote') is None
    assert log_events("event=predict.endless a=1\nW1205 predict.end happened", "predict.end") == []
