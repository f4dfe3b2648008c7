"""The canary's latency check under noise: its false-alarm rate is the one it states, and real slowdowns are caught.

Simulated seconds, not measured ones (no timing decides this test): each pair shares a load factor (a busy
machine slows both sides of a back-to-back pair), and each prediction has its own jitter, both far wider
than the H100's 0.60-1.43 s spread for one request.
"""

import random
from types import SimpleNamespace

import pytest

from canary import thresholds as T
from canary.runner import Outcome, check_latency
from canary.targets import Prediction


def _pair(rng, slowdown):
    load = rng.lognormvariate(0, 0.5)  # the whole machine, both sides of the pair
    base = 0.4 * load
    return (Prediction("succeeded", predict_time=base * rng.lognormvariate(0, 0.3)),
            Prediction("succeeded", predict_time=slowdown * base * rng.lognormvariate(0, 0.3)))


def _canary(rng, slowdown, samples=T.DEFAULT_SAMPLES):
    out = Outcome("d", "s", "c", 1, samples)
    taken = [_pair(rng, slowdown) for _ in range(samples)]
    extra = []

    def more():
        extra.append(_pair(rng, slowdown))
        return extra[-1]

    check_latency(out, SimpleNamespace(name="case"), taken, more)
    [row] = out.rows
    return row, len(taken) + len(extra)


def test_identical_candidates_raise_false_alarms_no_more_often_than_stated():
    rng = random.Random(1)
    runs = [_canary(rng, 1.0) for _ in range(2000)]
    alarms = sum(row.verdict == "regression" for row, _ in runs)
    assert alarms / len(runs) <= T.LATENCY_ALPHA, alarms
    assert max(n for _, n in runs) <= T.LATENCY_LOOKS[-1]


@pytest.mark.parametrize("slowdown", [2.0, 3.0])
def test_a_really_slower_candidate_is_caught(slowdown):
    rng = random.Random(2)
    runs = [_canary(rng, slowdown) for _ in range(300)]
    caught = sum(row.verdict == "regression" for row, _ in runs)
    assert caught / len(runs) >= 0.9, caught


def test_more_pairs_are_taken_only_while_it_is_close():
    rng = random.Random(3)
    row, pairs = _canary(rng, 1.0)
    assert pairs == T.DEFAULT_SAMPLES and row.verdict == "pass", "a clearly equal candidate stops at the first look"
    row, pairs = _canary(rng, 3.0)
    assert pairs > T.DEFAULT_SAMPLES and row.verdict == "regression"
    assert "p=" in row.detail and "interleaved pairs" in row.detail


def test_the_old_fixed_ratio_over_three_medians_would_cry_wolf():
    """Counterpart: the check this replaced (median ratio > 1.5 over 3 samples each) on the same noise."""
    import statistics

    rng = random.Random(1)
    alarms = 0
    for _ in range(2000):
        pairs = [_pair(rng, 1.0) for _ in range(3)]
        s, c = (statistics.median(p.seconds for p in side) for side in zip(*pairs, strict=True))
        alarms += c / s > T.MAX_LATENCY_RATIO and c - s > T.LATENCY_NOISE_FLOOR_S
    assert alarms / 2000 > 0.05
