"""Where a deployment's setup() spends its time: run it in this process under py-spy, then summarize.

    py-spy record --nonblocking --idle -r 10 --format raw -o setup.txt -- python benchmarks/profile_setup.py flux-lora-txt2img
    python benchmarks/profile_setup.py --summarize setup.txt

The summary counts the main thread's samples by the first of a few telling frames in each stack (kernel
tuning, Triton's compiler, Dynamo, AOTAutograd, Inductor, weight loading). It found torchao's process-wide
coordinate-descent tuning in FLUX's boot (docs/operations.md, "Where the FLUX boot went").
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Most specific first: a stack is counted under the first of these it contains.
TELLING = ("_coordinate_descent_tuning", "benchmark_all_configs", "CUDABackend.make_", "_precompile_config",
           "bytecode_tracing", "create_aot_dispatcher_function", "compile_fx_inner", "load_state_dict",
           "from_pretrained", "write_random_lora", "_warmup", "_warm_static_cache", "setup")


def summarize(path: Path) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if "profile_setup.py" not in stack.split(";", 1)[0]:  # other threads: compile workers' pipes, tqdm
            continue
        frames = [frame.split(" (")[0] for frame in stack.split(";")]
        tag = next((t for t in TELLING if any(t in f for f in frames)), "other")
        counts[tag] += int(samples)
    return dict(counts.most_common())


def main() -> int:
    if sys.argv[1] == "--summarize":
        counts = summarize(Path(sys.argv[2]))
        total = sum(counts.values())
        for tag, n in counts.items():
            print(f"{n:7d} {100 * n / total:5.1f}%  {tag}")
        return 0
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("WEIGHT_PROFILE", "synthetic")
    from shared import compile_cache
    from tests.conftest import load_runner

    started = time.perf_counter()
    load_runner(sys.argv[1]).setup()
    print("setup", sys.argv[1], round(time.perf_counter() - started, 1), json.dumps(compile_cache.stats()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
