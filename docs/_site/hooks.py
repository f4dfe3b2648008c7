"""MkDocs hooks: pages made from what the repository already holds, so the site cannot drift from it.

- `index.md` is the README, its `docs/...` links pointed at the site's pages;
- one page per deployment, its inputs table read from the committed `.cog/openapi_schema.json` (what
  `cog build` and the server enforce) and its model and LoRAs from the catalog;
- `charts.md`: PNG charts drawn from the benchmark results under `benchmarks/results/`;
- in every page, a path to another docs page written in a code span (`docs/operations.md`) becomes a link.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def on_files(files, config):
    from shared import catalog

    def add(uri: str, content: str | bytes) -> None:
        files.append(File.generated(config, uri, content=content))

    add("index.md", (ROOT / "README.md").read_text())
    for dep in catalog.DEPLOYMENTS.values():
        add(f"deployments/{dep.name}.md", deployment_page(dep))
    for name, png in charts().items():
        add(f"charts/{name}.png", png)
    add("charts.md", charts_page())
    return files


def on_page_markdown(markdown: str, page, config, files):
    depth = page.file.src_uri.count("/")
    up = "../" * depth

    def link(match: re.Match) -> str:
        name = match.group(1)
        return f"[`docs/{name}.md`]({up}{name}.md)"

    markdown = re.sub(r"`docs/([a-z_]+)\.md`", link, markdown)
    # The README's own links into docs/ (it is the home page here).
    return re.sub(r"\]\(docs/([a-z_]+\.md)", lambda m: f"]({up}{m.group(1)}", markdown)


# -- deployment pages -------------------------------------------------------------------------------

def _type(prop: dict, schemas: dict) -> tuple[str, str]:
    """(type, allowed values) of one input as the schema states it."""
    if "allOf" in prop:  # a choice: Cog writes it as a named enum
        enum = schemas[prop["allOf"][0]["$ref"].rsplit("/", 1)[1]]
        return enum.get("type", "string"), ", ".join(f"`{v}`" for v in enum["enum"])
    kind = "file (upload, data URI or URL)" if prop.get("format") == "uri" else prop.get("type", "")
    bounds = []
    if "minimum" in prop or "maximum" in prop:
        bounds.append(f"{prop.get('minimum', '')} to {prop.get('maximum', '')}")
    if "minLength" in prop:
        bounds.append(f"at least {prop['minLength']} character")
    return kind, "; ".join(bounds)


def inputs_table(schema: dict) -> str:
    schemas = schema["components"]["schemas"]
    inputs = schemas["Input"]
    required = set(inputs.get("required", []))
    rows = ["| input | type | default | allowed | what it does |", "|---|---|---|---|---|"]
    for name, prop in sorted(inputs["properties"].items(), key=lambda kv: kv[1].get("x-order", 0)):
        kind, allowed = _type(prop, schemas)
        default = "required" if name in required else ("empty" if prop.get("default") in (None, "") else
                                                        f"`{prop['default']}`")
        rows.append(f"| `{name}` | {kind} | {default} | {allowed} | {prop.get('description', '')} |")
    return "\n".join(rows)


def options_table(deployment: str) -> str:
    """The deployment's OPTIMIZE switches, from its runner (the table setup() resolves)."""
    from shared.cogserver import runner_class

    rows = ["| switch | on a GPU | on CPU | choices | what it does |", "|---|---|---|---|---|"]
    for name, option in runner_class(deployment).option_spec().items():
        choices = ", ".join(f"`{c}`" for c in option.choices)
        rows.append(f"| `{name}` | `{option.default_gpu}` | `{option.default_cpu}` | {choices} | {option.why} |")
    return "\n".join(rows)


def deployment_page(dep) -> str:
    schema = json.loads((ROOT / "deployments" / dep.name / ".cog" / "openapi_schema.json").read_text())
    output = schema["components"]["schemas"]["Output"]
    streamed = output.get("type") == "array"
    example = " ".join(f"{k}={json.dumps(v) if not isinstance(v, str) or ' ' in v else v}"
                       for k, v in dep.example.items())
    lines = [f"# {dep.name}", "", dep.description, "",
             f"Model: [{dep.checkpoint.repo_id}](https://huggingface.co/{dep.checkpoint.repo_id}) at revision "
             f"`{dep.checkpoint.revision}`."]
    if dep.loras:
        lines.append("")
    for lora in dep.loras:
        lines.append(f"- Style LoRA [{lora.repo_id}](https://huggingface.co/{lora.repo_id}) at `{lora.revision}`: "
                     f"triggers {', '.join(lora.triggers)}.")
    lines += ["", "## Inputs", "", "From the committed schema (`deployments/"
              f"{dep.name}/.cog/openapi_schema.json`), which the server enforces: a value out of range is a 422 "
              "naming the input.", "", inputs_table(schema), "",
              "## Output", "",
              "Text, streamed token by token (`Accept: text/event-stream`), whole in the prediction's `output`."
              if streamed else "An image file (a data URI from a local server, a URL on Replicate).", "",
              "## Optimization switches", "",
              "Chosen once at setup; set any of them with `OPTIMIZE=name=value,...` (an unknown name or value stops "
              "setup, naming the allowed ones). What each measured: `docs/optimizations.md`.", "",
              options_table(dep.name), "",
              "## Try it", "", "```bash", f"make predict D={dep.name} I='{example}'", f"make {dep.name}"
              "                 # the example request above, through the real Cog server", "```", ""]
    return "\n".join(lines)


# -- benchmark charts -------------------------------------------------------------------------------

def _latest(pattern: str) -> dict | None:
    found = sorted(RESULTS.glob(pattern))
    return json.loads(found[-1].read_text()) if found else None


def _pairs(title: str, pairs: dict[str, tuple[float, float]], labels: tuple[str, str], xlabel: str,
           target: float | None = None):
    """Two bars per deployment (before / after), grouped, with a legend."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 0.75 * len(pairs) + 2.0))
    names = list(pairs)[::-1]
    ys = range(len(names))
    ax.barh([y + 0.2 for y in ys], [pairs[n][0] for n in names], height=0.38, color="#9e9e9e", label=labels[0])
    ax.barh([y - 0.2 for y in ys], [pairs[n][1] for n in names], height=0.38, color="#3f51b5", label=labels[1])
    for y, n in enumerate(names):
        for offset, value in ((0.2, pairs[n][0]), (-0.2, pairs[n][1])):
            ax.text(value, y + offset, f" {value:g}", va="center", fontsize=8)
    return _finish(fig, ax, names, title, xlabel, target, legend_columns=3)


def _finish(fig, ax, names: list[str], title: str, xlabel: str, target: float | None, legend_columns: int):
    """The horizontal bar charts' common frame: row names, the target line, title, axis label, legend below."""
    if target:
        ax.axvline(target, color="#e53935", linestyle="--", linewidth=1, label=f"target {target:g}")
    ax.set_yticks(list(range(len(names))), names)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.margins(x=0.12)
    fig.legend(loc="lower center", ncol=legend_columns, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def _stacked(title: str, rows: dict[str, dict[str, float]], totals: dict[str, float], xlabel: str,
             target: float | None = None):
    """One bar per row, split into its named parts (the same parts, in order, for every row), labelled with
    the row's measured total."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(rows) + 2.0))
    names = list(rows)[::-1]
    parts = list(rows[names[0]])
    left = [0.0] * len(names)
    for part, color in zip(parts, ("#9fa8da", "#3f51b5", "#ffb74d", "#bdbdbd"), strict=False):
        widths = [rows[n][part] for n in names]
        ax.barh(range(len(names)), widths, left=left, color=color, label=part)
        left = [a + w for a, w in zip(left, widths, strict=True)]
    for y, (end, name) in enumerate(zip(left, names, strict=True)):
        ax.text(end, y, f" {totals[name]:.2f}", va="center", fontsize=8)
    return _finish(fig, ax, names, title, xlabel, target, legend_columns=5)


def flux_request_phases(case: str = "1024x1024_28_steps") -> tuple[dict | None, dict[str, dict[str, float]]]:
    """Where one FLUX request's predict_time goes, per configuration, from the newest flux-server file that
    has the worker's phases (bench.py reads them from predict.end) and the default among its configurations,
    the one the others are read against (a run of the low-memory mode alone is not this chart's). Each part is
    its own median, so the parts add up to the median predict_time only nearly; "the rest" is what the median
    predict_time has beyond them."""
    for path in sorted(RESULTS.glob("*-flux-server-*.json"), reverse=True):
        result = json.loads(path.read_text())
        rows = {}
        for dep, configs in result["deployments"].items():
            for config, row in configs.items():
                phases = (row.get(case) or {}).get("median_phases_s")
                if phases:
                    known = {"T5 + CLIP": phases["encode"], "denoise + VAE decode": phases["generate"],
                             "write the PNG": phases["save"]}
                    rows[f"{dep} {config}"] = {**known, "the rest": max(0.0, row[case]["median_s"] - sum(known.values()))}
        if any(name.endswith(" default") for name in rows):
            return result, rows
    return None, {}


def charts() -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    made = {}
    boots = {}
    for dep in ("flux-lora-txt2img", "flux-lora-img2img", "smollm3-3b", "gemma3-4b-it"):
        result = _latest(f"*cold-start-{dep}-synthetic-default-N*.json")
        if result and "cold" in result and "with_tar" in result:
            boots[f"{dep} ({_gpu(result)})"] = (result["cold"]["ready_s"], result["with_tar"]["ready_s"])
    if boots:
        made["cold-start"] = _png(_pairs("Boot: launch to READY through the Cog server", boots,
                                         ("cold (empty caches)", "with the compile artifact"), "seconds", target=90))
    speeds = decode_speeds()
    if speeds:
        made["text-decode"] = _png(_pairs("Decode, batch 1 (H100, synthetic weights)", speeds,
                                          ("bf16 eager", "optimized (default path)"), "tokens per second"))
    one, many = text_server_speeds()
    if one:
        made["text-server"] = _png(_pairs("One stream through the Cog server, 512 new tokens", one,
                                          ("HF generate bf16 eager (same run)", "served"), "tokens per second"))
    if many:
        made["text-server-concurrent"] = _png(_pairs("8 requests of 256 tokens at once, Cog server", many,
                                                     ("one stream", "8 at once, aggregate"), "tokens per second"))
    flux = _latest("*-flux-default-N*.json")
    if flux:
        made["flux-step"] = _png(_pairs(f"FLUX.1-dev transformer step, {flux['size']}x{flux['size']} (H100)",
                                        {"flux-lora-txt2img": (flux["baseline"]["ms_per_step"],
                                                               flux["optimized"]["ms_per_step"])},
                                        ("bf16 eager", "default (int8 T5, regional compile)"), "ms per step"))
    server = _latest("*-flux-server-default-N*.json")
    if server:
        old, new = server["configs"]
        cases = {f"{dep} {case.replace('_', ' ')}": (configs[old][case]["median_s"], configs[new][case]["median_s"])
                 for dep, configs in server["deployments"].items() for case in configs[new]
                 if isinstance(configs[new][case], dict) and "median_s" in configs[new][case]}
        made["flux-server"] = _png(_pairs(f"predict_time, Cog server, median of {server['repeats']} "
                                          f"({_gpu(server)})", cases, (old, new), "seconds"))
    result, rows = flux_request_phases()
    if rows:
        totals = {name: result["deployments"][name.split(" ", 1)[0]][name.split(" ", 1)[1]]["1024x1024_28_steps"]
                  ["median_s"] for name in rows}
        made["flux-phases"] = _png(_stacked(f"txt2img 1024x1024, 28 steps: predict_time by phase ({_gpu(result)})",
                                            rows, totals, "seconds (median of each part; label: median predict_time)",
                                            target=2.4))
    variants = _latest("*-flux-variants-graphs-N*.json")
    if variants:
        rows = {label: (row["ms_per_step"]["1024"], row["ms_per_step"]["768"])
                for label, row in variants["variants"].items() if "ms_per_step" in row}
        made["flux-variants"] = _png(_pairs(f"Transformer step, LoRA slot on ({_gpu(variants)})",
                                            rows, ("1024x1024", "768x768"), "ms per step"))
    return made


def decode_speeds() -> dict[str, tuple[float, float]]:
    """Each text deployment's bs1 decode, bf16 eager and the default path, from its newest `bench.py text` file."""
    speeds = {}
    for dep in ("smollm3-3b", "gemma3-4b-it"):
        result = _latest(f"????-??-??-{dep}-default-N*.json")  # `bench.py text` files only, not text-profile's
        if result and "baseline" in result:
            speeds[dep] = (result["baseline"]["tokens_per_s"], result["optimized"]["tokens_per_s"])
    return speeds


def text_server_speeds() -> tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float]]]:
    """From every `bench.py text-server` file, each measured configuration (the newest run of a deployment, label and
    GPU): (HF generate bf16 eager of its run, one stream through the Cog server) and (one stream, 8 requests at
    once, aggregate), in tokens per second. Runs cut off before a figure are left out."""
    runs = [json.loads(path.read_text()) for path in RESULTS.glob("*-text-server-*.json")]
    one, many = {}, {}
    for result in sorted(runs, key=lambda r: r.get("date", "")):
        for label, row in result.get("variants", {}).items():
            case = row.get("512_tokens") or {}
            alone = case.get("median_decode_tok_s")
            if not alone or "median_decode_tok_s" in case.get("wrong", ()) or "baseline" not in result:
                continue  # a figure a later check found wrong is marked so in its file
            name = f"{result['deployment']} {label} ({_gpu(result)})"
            one[name] = (result["baseline"]["tokens_per_s"], alone)
            together = next((v for k, v in row.items() if k.startswith("concurrent_")), {})
            aggregate = together.get("median_aggregate_tok_s") or together.get("aggregate_tok_s")  # one run, before 3672f47
            if aggregate:
                many[name] = (alone, aggregate)
    return one, many


def _gpu(result: dict) -> str:
    return result["device"].replace("NVIDIA ", "").split(" ")[0]


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def charts_page() -> str:
    return "\n".join([
        "# Benchmark charts", "",
        "Drawn when the site is built from the newest result files in `benchmarks/results/` (each file names "
        "its device, commit and date; `docs/benchmarks.md` says how they are made).", "",
        "## Boot time, cold and with the compile artifact", "", "![cold start](charts/cold-start.png)", "",
        "## Text decode through the Cog server", "", "![text server](charts/text-server.png)", "",
        "## Text, 8 requests at once", "", "![text concurrent](charts/text-server-concurrent.png)", "",
        "## Text decode speed (in process, first measurement)", "", "![decode speed](charts/text-decode.png)", "",
        "## FLUX through the Cog server, old default against new", "", "![FLUX server](charts/flux-server.png)", "",
        "## Where a FLUX request's time goes", "", "![FLUX request phases](charts/flux-phases.png)", "",
        "## FLUX transformer step, each optimization", "", "![FLUX variants](charts/flux-variants.png)", "",
        "## FLUX step time (first measurement)", "", "![FLUX step](charts/flux-step.png)", ""])
