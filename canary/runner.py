"""Run a deployment's canary cases against stable and candidate, and judge every check.

For each case the two targets get the same request `samples` times, alternately (stable, candidate,
stable, ...), so drift in the machine or the network lands on both sides. Then, per case:

    schema      the candidate's input schema is backward compatible, and it accepts the case
    functional  every candidate prediction succeeded
    sanity      each output decodes, has the expected size/format/length, is not black, flat or looping
    semantic    same seed, same answer: image SSIM, text embedding similarity and length ratio
    latency     not slower than stable by a set ratio, at a set false-alarm rate: a paired rank test over
                interleaved pairs of the server's predict_time, with more pairs only while it is close; a
                candidate shown slower is timed again after the other cases and fails only if slower again

A verdict is `pass`, `regression` (the candidate is worse: exit 1) or `error` (the canary could not
judge: stable failed, a target was unreachable, a case does not fit stable: exit 2).
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import asdict, dataclass, field

from . import cases as case_files
from . import sanity, schema_compat, semantic
from . import thresholds as T
from .targets import Prediction, TargetError, output_text, redact

PASS, REGRESSION, ERROR = "pass", "regression", "error"
ALL_CASES = "(all)"


@dataclass
class Row:
    case: str
    check: str
    stable: str
    candidate: str
    verdict: str
    detail: str = ""
    value: float | None = None  # the measured figure the verdict rests on (SSIM, similarity, latency ratio)


@dataclass
class Outcome:
    deployment: str
    stable: str
    candidate: str
    cases_version: int
    samples: int
    rows: list[Row] = field(default_factory=list)
    # (case, side) -> the first output that side returned (image bytes or text): kept beside the report
    outputs: dict[tuple[str, str], bytes | str] = field(default_factory=dict, repr=False)

    def add(self, case, check, stable, candidate, verdict, detail="", value=None) -> None:
        self.rows.append(Row(case, check, redact(str(stable)), redact(str(candidate)), verdict, redact(detail), value))

    @property
    def exit_code(self) -> int:
        verdicts = {r.verdict for r in self.rows}
        return 1 if REGRESSION in verdicts else 2 if ERROR in verdicts or not self.rows else 0

    @property
    def result(self) -> str:
        return {0: "pass", 1: "regression", 2: "error"}[self.exit_code]

    def failed(self, verdict: str = REGRESSION) -> set[tuple[str, str]]:
        """(case, check) pairs with this verdict."""
        return {(r.case, r.check) for r in self.rows if r.verdict == verdict}

    def to_dict(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k not in ("rows", "outputs")}, "result": self.result,
                "exit_code": self.exit_code, "rows": [asdict(r) for r in self.rows]}


def run(deployment: str, stable, candidate, *, samples: int = T.DEFAULT_SAMPLES,
        allow_default_changes: bool = False, allow_output_change: bool = False) -> Outcome:
    cases = case_files.load(deployment)
    out = Outcome(deployment, str(stable), str(candidate), case_files.version(deployment), samples)
    try:
        s_schema, c_schema = stable.schema(), candidate.schema()
    except TargetError as e:
        out.add(ALL_CASES, "schema", "?", "?", ERROR, str(e))
        return out
    check_schemas(out, s_schema, c_schema, allow_default_changes, allow_output_change)
    slower_at_first = []
    for case in cases:
        if problems := case_files.invalid_for(case, s_schema):
            out.add(case.name, "schema", "rejects the case", "-", ERROR,
                    "the case does not fit stable's schema, fix the case file: " + "; ".join(problems))
            continue
        if problems := case_files.invalid_for(case, c_schema):
            out.add(case.name, "schema", "accepts", "rejects", REGRESSION, "; ".join(problems))
        if confirm := run_case(out, case, stable, candidate, samples):
            slower_at_first.append(confirm)
    # A candidate shown slower is timed again after every other case, and is a regression only if it is slower
    # again: a busy machine can slow one of two servers for seconds on end (an identical candidate measured x1.53
    # over 10 pairs of one case, then x1.10 on the next, 2026-12-06), which no test on the pairs themselves can
    # tell from a slower candidate.
    for confirm in slower_at_first:
        confirm()
    return out


def bootstrap(deployment: str, candidate, committed_schema: dict, *, samples: int = T.DEFAULT_SAMPLES) -> Outcome:
    """A first release, with no stable to compare against: the candidate's schema is the repository's
    (nothing a client could rely on is missing), and every case succeeds with a sane output."""
    cases = case_files.load(deployment)
    out = Outcome(deployment, "(none: first release)", str(candidate), case_files.version(deployment), samples)
    try:
        c_schema = candidate.schema()
    except TargetError as e:
        out.add(ALL_CASES, "schema", "?", "?", ERROR, str(e))
        return out
    check_schemas(out, committed_schema, c_schema, allow_default_changes=False)
    for case in cases:
        if rejected := case_files.invalid_for(case, c_schema):
            out.add(case.name, "schema", "-", "rejects", REGRESSION, "; ".join(rejected))
            continue
        predictions = [_predict(candidate, case.request()) for _ in range(samples)]
        bad = next((p for p in predictions if not p.ok), None)
        out.add(case.name, "functional", "-", f"{sum(p.ok for p in predictions)}/{samples} succeeded",
                (ERROR if bad.status == "unreachable" else REGRESSION) if bad else PASS, bad.error if bad else "")
        if bad:
            continue
        try:
            outputs = [read_output(candidate, case, p) for p in predictions]
        except (TargetError, ValueError, OSError) as e:
            out.add(case.name, "sanity", "-", "unreadable", REGRESSION, str(e))
            continue
        found = next((p for p in (problems(case, o) for o in outputs) if p), [])
        out.add(case.name, "sanity", "-", ", ".join(found) or "ok", REGRESSION if found else PASS,
                "candidate output: " + ", ".join(found) if found else "")
    return out


def check_schemas(out: Outcome, s_schema: dict, c_schema: dict, allow_default_changes: bool,
                  allow_output_change: bool = False) -> None:
    findings = schema_compat.compare(s_schema, c_schema, allow_default_changes=allow_default_changes,
                                     allow_output_change=allow_output_change)
    n_s, n_c = (len(s["components"]["schemas"]["Input"]["properties"]) for s in (s_schema, c_schema))
    out.add(ALL_CASES, "schema", f"{n_s} inputs", f"{n_c} inputs", REGRESSION if findings else PASS,
            "; ".join(f"{f.input}: {f.kind} ({f.detail})" for f in findings) or "backward compatible")


def _predict(target, request: dict) -> Prediction:
    try:
        return target.predict(request)
    except TargetError as e:
        return Prediction("unreachable", error=str(e))


def run_case(out: Outcome, case, stable, candidate, samples: int):
    """The case's checks, into `out`. Returns the latency check's confirmation when the candidate was shown slower
    (run() calls it after the other cases), else None."""
    request = case.request()
    pairs = [(_predict(stable, request), _predict(candidate, request)) for _ in range(samples)]
    s_preds, c_preds = [p[0] for p in pairs], [p[1] for p in pairs]
    s_ok, c_ok = [p for p in s_preds if p.ok], [p for p in c_preds if p.ok]

    counts = (f"{len(s_ok)}/{samples} succeeded", f"{len(c_ok)}/{samples} succeeded")
    c_bad = next((p for p in c_preds if not p.ok), None)
    s_bad = next((p for p in s_preds if not p.ok), None)
    if c_bad and c_bad.status == "unreachable":
        out.add(case.name, "functional", *counts, ERROR, c_bad.error)
    elif c_bad:
        out.add(case.name, "functional", *counts, REGRESSION, f"candidate {c_bad.status}: {c_bad.error}")
    elif s_bad:
        out.add(case.name, "functional", *counts, ERROR, f"stable {s_bad.status}: {s_bad.error}")
    else:
        out.add(case.name, "functional", *counts, PASS)
    if not (s_ok and c_ok):
        return None

    try:
        s_outputs = [read_output(stable, case, p) for p in s_ok]
    except (TargetError, ValueError, OSError) as e:
        out.add(case.name, "sanity", "unreadable", "-", ERROR, f"cannot read stable's output: {e}")
        return None
    try:
        c_outputs = [read_output(candidate, case, p) for p in c_ok]
    except TargetError as e:
        out.add(case.name, "sanity", "ok", "unreadable", ERROR, f"cannot fetch the candidate's output: {e}")
        return None
    except (ValueError, OSError) as e:
        out.add(case.name, "sanity", "ok", "unreadable", REGRESSION, f"candidate output is not a {case.expect['kind']}: {e}")
        return None
    out.outputs[case.name, "stable"], out.outputs[case.name, "candidate"] = s_outputs[0], c_outputs[0]
    if check_sanity(out, case, s_outputs, c_outputs):
        check_semantic(out, case, s_outputs[0], c_outputs[0])
    # The first pair warms both servers up for this case (a candidate started just before the canary pays
    # one-time costs its long-running stable does not): it is not timed.
    ok_pairs = [(s, c) for s, c in pairs[1:] if s.ok and c.ok]
    added = itertools.count()

    def more():  # each new pair sends its two requests in the opposite order to the last one
        if next(added) % 2 == 0:
            c = _predict(candidate, request)
            return _predict(stable, request), c
        return _predict(stable, request), _predict(candidate, request)

    if any(s.ok and c.ok for s, c in pairs):  # nothing to time when a side never succeeds (functional says so)
        return check_latency(out, case, ok_pairs, more)
    return None


def read_output(target, case, prediction: Prediction):
    if case.expect["kind"] == "image":
        return target.fetch(prediction.output)
    return output_text(prediction.output)


def problems(case, output) -> list[str]:
    if case.expect["kind"] == "image":
        return sanity.image_problems(output, expected_size=case.expect.get("size"),
                                     expected_format=case.expect.get("format"))
    return sanity.text_problems(output, max_chars=case.expect.get("max_chars"))


def check_sanity(out: Outcome, case, s_outputs: list, c_outputs: list) -> bool:
    """Adds the sanity row; False when an output cannot even be decoded (nothing to compare then)."""
    s_problems = next((p for p in (problems(case, o) for o in s_outputs) if p), [])
    c_problems = next((p for p in (problems(case, o) for o in c_outputs) if p), [])
    shown = (", ".join(s_problems) or "ok", ", ".join(c_problems) or "ok")
    if c_problems:
        out.add(case.name, "sanity", *shown, REGRESSION, "candidate output: " + ", ".join(c_problems))
    elif s_problems:
        out.add(case.name, "sanity", *shown, ERROR, "stable's own output fails the sanity check")
    else:
        out.add(case.name, "sanity", *shown, PASS)
    return not any(p.startswith(sanity.UNDECODABLE) for p in s_problems + c_problems)


def check_semantic(out: Outcome, case, s_output, c_output) -> None:
    if case.expect["kind"] == "image":
        ssim = semantic.image_ssim(s_output, c_output)
        if ssim is None:
            out.add(case.name, "semantic", "-", "different size", REGRESSION, "images differ in size")
        else:
            out.add(case.name, "semantic", "reference", f"SSIM {ssim:.3f}",
                    PASS if ssim >= T.MIN_IMAGE_SSIM else REGRESSION, f"minimum {T.MIN_IMAGE_SSIM}", ssim)
        return
    similarity = semantic.text_similarity(s_output, c_output)
    ratio = semantic.length_ratio(s_output, c_output)
    low, high = T.TEXT_LENGTH_RATIO
    failures = ([f"similarity {similarity:.3f} < {T.MIN_TEXT_SIMILARITY}"] if similarity < T.MIN_TEXT_SIMILARITY else []) + \
        ([f"length ratio {ratio:.2f} outside [{low}, {high}]"] if not low <= ratio <= high else [])
    out.add(case.name, "semantic", f"{len(s_output)} chars", f"similarity {similarity:.3f}, {len(c_output)} chars",
            REGRESSION if failures else PASS, "; ".join(failures), similarity)


@dataclass(frozen=True)
class LatencyVerdict:
    slower: bool
    ratio: float  # median of the pairs' candidate / stable
    p_value: float  # that the candidate is not slower at all, one-sided
    pairs: int

    @property
    def close(self) -> bool:
        """Looks slower but is not shown to be: worth more pairs (3 noisy pairs can hide a 2x slowdown)."""
        return not self.slower and self.ratio > T.LATENCY_LOOK_AGAIN_RATIO

    def describe(self) -> str:
        sure = "regression" if self.slower else "inconclusive" if self.close else "pass"
        return (f"{sure}: {self.pairs} interleaved pairs, median ratio x{self.ratio:.2f} (limit x{T.MAX_LATENCY_RATIO}), "
                f"p={self.p_value:.4f} that it is not slower (regression below {T.LATENCY_ALPHA / len(T.LATENCY_LOOKS):.4f})")


def latency_verdict(pairs: list[tuple[float, float]]) -> LatencyVerdict:
    """Is the candidate slower, and by more than MAX_LATENCY_RATIO? Each pair was taken back to back, so a
    busy machine slows both of its members: the test is on the pairs' ratios, not on two separate medians."""
    import numpy as np
    from scipy.stats import wilcoxon

    stable, candidate = (np.maximum(np.array(side), 1e-6) for side in zip(*pairs, strict=True))
    log_ratio = np.log(candidate / stable)
    ratio = float(np.exp(np.median(log_ratio)))
    p = 1.0 if np.all(log_ratio == 0) else float(wilcoxon(log_ratio, alternative="greater", method="exact").pvalue)
    slower = (p <= T.LATENCY_ALPHA / len(T.LATENCY_LOOKS) and ratio > T.MAX_LATENCY_RATIO
              and float(np.median(candidate) - np.median(stable)) > T.LATENCY_NOISE_FLOOR_S)
    return LatencyVerdict(slower, ratio, p, len(pairs))


def _series(seconds: list[tuple[float, float]], more) -> LatencyVerdict | None:
    """Judge `seconds` (interleaved pairs), taking more pairs through `more()` only while it is close; None when no
    pair of successful predictions could be timed."""
    attempts, verdict = 0, None
    for look in T.LATENCY_LOOKS:
        while len(seconds) < look and attempts < 2 * T.LATENCY_LOOKS[-1]:  # a flaky side cannot loop forever
            attempts += 1
            s, c = more()
            if s.ok and c.ok:
                seconds.append((s.seconds, c.seconds))
        if not seconds:
            return None
        verdict = latency_verdict(seconds)
        if not verdict.close:
            break  # decided; more pairs only while the candidate looks slower but is not shown to be
    return verdict


def check_latency(out: Outcome, case, pairs: list[tuple[Prediction, Prediction]], more):
    """`pairs` of successful predictions; `more()` takes one more interleaved pair, while the result is close.
    Adds the case's latency row, or, when the candidate is shown slower, returns the confirmation that adds it:
    a second series of fresh pairs, to be taken later (run() takes it after the other cases)."""
    seconds = [(s.seconds, c.seconds) for s, c in pairs]
    verdict = _series(seconds, more)
    if verdict is None:
        out.add(case.name, "latency", "-", "-", ERROR, "no pair of successful predictions to time")
        return None
    if not verdict.slower:
        _latency_row(out, case, PASS, verdict, seconds)
        return None

    def confirm() -> None:
        again: list[tuple[float, float]] = []
        second = _series(again, more)
        first = f"first series: {verdict.describe()}; seconds: {_sides(seconds)}"
        if second is not None and second.slower:
            _latency_row(out, case, REGRESSION, second, again, f"slower again after the other cases. {first}")
        elif second is None:
            out.add(case.name, "latency", "-", "-", ERROR, f"no pair could be timed for the confirmation. {first}")
        else:
            _latency_row(out, case, PASS, second, again, f"not confirmed after the other cases. {first}")

    return confirm


def _latency_row(out: Outcome, case, verdict: str, judged: LatencyVerdict, seconds, note: str = "") -> None:
    s_med, c_med = (statistics.median(side) for side in zip(*seconds, strict=True))
    detail = f"{judged.describe()}; seconds: {_sides(seconds)}" + (f". {note}" if note else "")
    out.add(case.name, "latency", f"{s_med:.3f} s", f"{c_med:.3f} s (x{judged.ratio:.2f})", verdict, detail, judged.ratio)


def _sides(seconds) -> str:
    return f"stable {_list(s for s, _ in seconds)}, candidate {_list(c for _, c in seconds)}"


def _list(seconds) -> str:
    return " ".join(f"{x:.3f}" for x in seconds)
