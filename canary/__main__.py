"""The canary: promote a candidate only when it matches the pinned stable version.

    python -m canary --candidate http://127.0.0.1:5001 --stable http://127.0.0.1:5000
    python -m canary --deployment smollm3-3b --candidate cog-deployments/smollm3-3b:<version>   # stable from pins.json
    python -m canary ... --dry-run                    # what would run; sends nothing
    python -m canary promote --deployment smollm3-3b --candidate cog-deployments/smollm3-3b:<version>
    python -m canary latest --deployment smollm3-3b   # the newest pushed version: the release's candidate

Exit codes: 0 every check passed, 1 a regression, 2 the canary could not judge (or bad usage).
The report is printed and written to --out as markdown and JSON (docs/canary.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from shared.catalog import DEPLOYMENTS, REPLICATE_OWNER, REPO_ROOT

from . import cases as case_files
from . import pins, report, runner
from . import thresholds as T
from .targets import TOKEN_ENV, ReplicateTarget, TargetError, call, parse, redact, replicate_client


def serves(target) -> str | None:
    """The deployment a target says it is: its schema's x-deployment, or its Replicate model's name."""
    if isinstance(target, ReplicateTarget):
        model = target.model or target.release[0]
        owner, _, name = model.partition("/")
        return name if owner == REPLICATE_OWNER else model
    return target.schema().get("info", {}).get("x-deployment")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["promote"]:
            return promote(argv[1:])
        if argv[:1] == ["latest"]:
            return latest(argv[1:])
        if argv[:1] == ["bootstrap"]:
            return first_release(argv[1:])
        if argv[:1] == ["pins-commit"]:
            return pins_commit(argv[1:])
        return check(argv)
    except (TargetError, LookupError, ValueError) as e:
        print(f"canary: {redact(str(e))}", file=sys.stderr)
        return 2


def check(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m canary", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidate", required=True, help="Cog URL, owner/model:version or deployment:owner/name")
    p.add_argument("--stable", help="same forms; default: the deployment's pin in canary/pins.json")
    p.add_argument("--deployment", choices=list(DEPLOYMENTS), help="default: what the candidate says it serves")
    p.add_argument("--samples", type=int, default=T.DEFAULT_SAMPLES, help="predictions per case per side")
    p.add_argument("--allow-default-changes", action="store_true",
                   help="a changed input default is intended (it changes what clients that omit it get)")
    p.add_argument("--allow-output-change", action="store_true",
                   help="a changed output type is intended (clients that read the output must change too)")
    p.add_argument("--dry-run", action="store_true", help="show what would run; send no prediction")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "canary", help="report folder")
    args = p.parse_args(argv)
    if args.samples < 1:
        p.error("--samples must be at least 1")

    candidate = parse(args.candidate)
    deployment = args.deployment or serves(candidate)
    if deployment not in DEPLOYMENTS:
        raise LookupError(f"cannot tell which deployment {args.candidate} serves ({deployment!r}): pass --deployment")
    stable_spec = args.stable or pins.stable(deployment)
    stable = parse(stable_spec)
    if args.dry_run:
        print(plan(deployment, stable, candidate, args, pinned=args.stable is None))
        return 0
    for side, target in (("stable", stable), ("candidate", candidate)):
        if target.kind == "replicate":
            target.client  # noqa: B018 - a missing token fails here, before any report
        if (name := serves(target)) and name != deployment:
            raise LookupError(f"{side} {target} serves {name}, not {deployment}: refusing to compare different models")
    outcome = runner.run(deployment, stable, candidate, samples=args.samples,
                         allow_default_changes=args.allow_default_changes, allow_output_change=args.allow_output_change)
    md_path, json_path = report.write(outcome, args.out)
    print(report.markdown(outcome))
    print(f"report: {md_path}\n        {json_path}")
    return outcome.exit_code


def plan(deployment: str, stable, candidate, args, *, pinned: bool) -> str:
    cases = case_files.load(deployment)
    token = "set" if os.environ.get(TOKEN_ENV) else "NOT set"

    def where(target):
        return f"Replicate (the official client; {TOKEN_ENV} is {token})" if target.kind == "replicate" \
            else "a Cog server's HTTP API"

    lines = [f"Canary dry run for {deployment}: nothing is sent.",
             f"  stable     {stable}  ({'pinned in canary/pins.json' if pinned else '--stable'}; {where(stable)})",
             f"  candidate  {candidate}  ({where(candidate)})",
             f"  cases      canary/cases/{deployment}.json v{case_files.version(deployment)}:"]
    lines += [f"    {c.name}: {json.dumps(c.input)} -> {c.expect}" for c in cases]
    lines += ["  checks     schema (default changes " + ("allowed" if args.allow_default_changes else "are regressions")
              + ", output type changes " + ("allowed" if args.allow_output_change else "are regressions")
              + "), functional, sanity, semantic, latency",
              "  thresholds " + ", ".join(f"{k}={v}" for k, v in report.thresholds().items()),
              f"  would send {len(cases)} case(s) x {args.samples} sample(s) x 2 sides = "
              f"{len(cases) * args.samples * 2} predictions; report to {args.out}"]
    return "\n".join(lines)


def promote(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m canary promote",
                                description="make a candidate the stable pin (after its canary passed)")
    p.add_argument("--deployment", choices=list(DEPLOYMENTS), required=True)
    p.add_argument("--candidate", required=True, help=f"{REPLICATE_OWNER}/<deployment>:<version>")
    p.add_argument("--update-replicate-deployment", action="store_true",
                   help=f"also point the Replicate deployment {REPLICATE_OWNER}/<deployment> at the version")
    p.add_argument("--no-pin", action="store_true", help="leave canary/pins.json alone (a release commits its pins "
                                                          "in one job: `python -m canary pins-commit`)")
    args = p.parse_args(argv)
    if why := pins.problem(args.deployment, args.candidate):
        raise ValueError(why)
    if args.update_replicate_deployment:
        owner, name = DEPLOYMENTS[args.deployment].replicate_model.split("/")
        call(f"deployment:{owner}/{name}", "update deployment", replicate_client().deployments.update, owner, name,
             version=args.candidate.rsplit(":", 1)[1])
        print(f"Replicate deployment {owner}/{name} now serves {args.candidate}")
    if not args.no_pin:
        pins.pin(args.deployment, args.candidate)
        print(f"canary/pins.json: {args.deployment} stable = {args.candidate}")
    return 0


def latest(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m canary latest", description="print the newest version of a model")
    p.add_argument("--deployment", choices=list(DEPLOYMENTS), required=True)
    p.add_argument("--test-model", action="store_true",
                   help=f"of {REPLICATE_OWNER}/<deployment>-test, where a release pushes its candidate first")
    args = p.parse_args(argv)
    model = DEPLOYMENTS[args.deployment].replicate_model + ("-test" if args.test_model else "")
    found = call(model, "get model", replicate_client().models.get, model)
    if found.latest_version is None:
        raise LookupError(f"{model} has no version yet: push one with `cog push r8.im/{model}`")
    print(f"{model}:{found.latest_version.id}")
    return 0


def first_release(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m canary bootstrap",
                                description="a first release (no stable pin yet): the candidate's schema is the "
                                            "repository's, and every case succeeds with a sane output")
    p.add_argument("--deployment", choices=list(DEPLOYMENTS), required=True)
    p.add_argument("--candidate", required=True, help="Cog URL or owner/model:version")
    p.add_argument("--samples", type=int, default=T.DEFAULT_SAMPLES)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "canary")
    args = p.parse_args(argv)
    from shared.schema import committed

    outcome = runner.bootstrap(args.deployment, parse(args.candidate), committed(args.deployment), samples=args.samples)
    md_path, json_path = report.write(outcome, args.out)
    print(report.markdown(outcome))
    print(f"report: {md_path}\n        {json_path}")
    return outcome.exit_code


def pins_commit(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m canary pins-commit",
                                description="commit every promoted pin in one commit, rebased onto main until it lands")
    p.add_argument("pins", nargs="*", type=Path, help="files holding one owner/model:version each (release artifacts)")
    args = p.parse_args(argv)
    updates = {}
    for path in args.pins:
        ref = path.read_text().strip()
        model = ref.split(":")[0]
        name = model.split("/")[-1]
        if name not in DEPLOYMENTS:
            raise ValueError(f"{path}: {ref!r} is not a version of a deployment's model")
        updates[name] = ref
    if not updates:
        print("no pins to commit")
        return 0
    print(f"pins committed in {pins.commit(updates, REPO_ROOT)}: " + ", ".join(f"{d}={r}" for d, r in updates.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
