"""compare: the one page a reviewer reads for two runs. Not a stage: it compares stages' results.

`python -m lifecycle.review.compare --base main --head workspace [--out review] [--fail-on-gate]`

Heads and bases are anything DVC takes as a revision: a branch, a commit, an experiment name, or `workspace`
(the files on disk; head only). Built on DVC's Python API: `Repo.params.diff`, `Repo.metrics.diff` and the plots
of both revisions as DVC's Vega-Lite specs with their data inline (lifecycle.review.plots, which draws the report's
figures too), so every metrics file and plot that dvc.yaml declares joins the page without code here. Each change
is judged against the noise (lifecycle.review.verdict): a paired test on the per-example files both runs have, the
seed-to-seed band of reports/noise.json. The page opens with the gates and the significant changes; the rest is
folded. Writes <out>/compare.md and <out>/plots/*.png. `--experiments` instead prints a readable `dvc exp show`.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import sys
from itertools import groupby
from pathlib import Path

from pydantic import ValidationError

from lifecycle.core import StageError
from lifecycle.io import atomic_path
from lifecycle.params.report import Gate
from lifecycle.review.exp_table import experiments_table
from lifecycle.review.markdown import fmt, slug
from lifecycle.review.plots import dvc_errors, open_repo, render_png, specs
from lifecycle.review.revision import WORKSPACE, Revision
from lifecycle.review.verdict import (
    NO_ESTIMATE,
    NOISE_FILE,
    NOT_COMPARABLE,
    SIGNIFICANT,
    UNCHANGED,
    WITHIN_NOISE,
    GateResult,
    MetricRow,
    Noise,
    environment_changes,
    examples_file,
    is_timing,
    judge,
    read_noise,
    signed,
)

log = logging.getLogger("llm-lifecycle.compare")

# Which way is better, by the metric's `file:key` (first matching pattern wins; no match: no verdict).
DIRECTIONS: list[tuple[str, int]] = [
    ("*name_disagreement*", -1), ("*any_name_flip_rate*", -1), ("*margin_over_baselines*", +1),
    ("*accuracy_drop*", -1), ("*demographic_parity_difference*", -1), ("*flip_rate*", -1),
    ("*demographic_parity_ratio*", +1),
    ("*accuracy*", +1), ("*f1*", +1), ("*roc_auc*", +1), ("*precision*", +1), ("*recall*", +1),
    ("*calibration_error*", -1), ("*unigram_perplexity*", 0), ("*perplexity*", -1), ("*loss*", -1),
    ("*bits_per_byte*", -1),
    ("*bits_per_character*", -1),
    ("*tokens_per_second*", +1), ("*per_second*", +1), ("*_per_s", +1), ("*throughput*", +1), ("*speedup*", +1),
    ("*speed_up*", +1), ("*mfu*", +1), ("*achieved_tflops*", +1),
    ("*latency*", -1), ("*_ms", -1), ("*_seconds", -1), ("*size_mb*", -1), ("*size_bytes*", -1), ("*_mb", -1),
]
# Not results: the machine a report ran on, and the noise estimate itself.
SKIPPED = ("*:environment.*", "*:*.environment.*", f"{NOISE_FILE}:*")


def direction(name: str) -> int:
    """+1 when a higher value is better, -1 when lower is better, 0 when neither."""
    for pattern, sign in DIRECTIONS:
        if fnmatch.fnmatchcase(name, pattern):
            return sign
    return 0


# ---------------------------------------------------------------- DVC

def revisions(base: str, head: str) -> list[str]:
    """The revision arguments of the DVC diff commands this stands for (the workspace is the default new side)."""
    if base == WORKSPACE:
        raise StageError("--base workspace: the base must be a commit, branch or experiment")
    return [base] if head == WORKSPACE else [base, head]


# ---------------------------------------------------------------- params

def changed_params(diff: dict) -> list[tuple[str, object, object]]:
    """(file:key, old, new) of every param that differs, from `Repo.params.diff(all=True)`'s "diff"."""
    rows = []
    for file, params in diff.items():
        for key, change in sorted(params.items()):
            if change.get("old") != change.get("new"):
                rows.append((f"{file}:{key}", change.get("old"), change.get("new")))
    return rows


def head_gates(diff: dict) -> list[Gate]:
    """The head run's `gates:` (from the params diff's new side), validated like the rest of params.yaml."""
    raw = diff.get("params.yaml", {}).get("gates", {}).get("new") or []
    if isinstance(raw, str):  # DVC shows lists it cannot diff as their text
        import ast
        raw = ast.literal_eval(raw)
    gates = []
    for i, gate in enumerate(raw):
        try:
            gates.append(Gate.model_validate(gate))
        except ValidationError as err:
            message = err.errors()[0]['msg'].removeprefix('Value error, ')
            raise StageError(f"params.yaml: gates[{i}]: {message}") from None
    return gates


# ---------------------------------------------------------------- metrics

def metric_rows(diff: dict, gates: list[Gate]) -> tuple[list[MetricRow], list[GateResult], int]:
    """Rows for the metrics that changed or carry a gate (from `Repo.metrics.diff(all=True)`'s "diff"; no
    environment keys), sorted by file and key; the gates' results on them; how many metrics did not change."""
    values = {f"{file}:{key}": (change.get("old"), change.get("new"))
              for file, metrics in diff.items() for key, change in metrics.items()}
    values = {k: v for k, v in values.items() if not any(fnmatch.fnmatchcase(k, p) for p in SKIPPED)}
    gated = {g.metric for g in gates}
    rows, unchanged = {}, 0
    for name in sorted(set(values) | gated, key=lambda n: n.split(":", 1)):
        old, new = values.get(name, (None, None))
        if old == new and name not in gated:
            unchanged += 1
            continue
        rows[name] = MetricRow(name, old, new, direction(name))
    return list(rows.values()), [GateResult(g, rows[g.metric]) for g in gates], unchanged


# ---------------------------------------------------------------- plots

def changed_plots(plots: dict) -> dict[str, dict]:
    """title -> Vega-Lite spec of the plots whose data differ between the revisions (`plots.specs` of both, the
    "data" of `dvc plots diff --json`)."""
    out = {}
    for title, renders in plots.get("data", plots).items():
        for render in renders:
            if render.get("type") != "vega":
                continue
            spec = render["content"]
            by_rev: dict[str, list] = {rev: [] for rev in render.get("revisions", [])}
            for row in spec.get("data", {}).get("values", []):
                row = dict(row)
                by_rev.setdefault(row.pop("rev", ""), []).append(json.dumps(row, sort_keys=True))
            if len({json.dumps(sorted(rows)) for rows in by_rev.values()}) > 1:
                out[title] = spec
    return out


# ---------------------------------------------------------------- Markdown

METRIC_HEADER = ["| metric | base | head | Δ | Δ % | |", "| --- | ---: | ---: | ---: | ---: | --- |"]


def cells(*values) -> str:
    return "| " + " | ".join(str(v) for v in values) + " |"


def notes(base: str, head: str, changes: list[str], noise: Noise | None, rows: list[MetricRow]) -> list[str]:
    """The warning and what the verdicts stand on: the noise file used and the paired tests run."""
    lines = []
    if changes:
        lines += [f"> ⚠️ base and head ran on different hardware: {'; '.join(changes)}; speed figures are not "
                  "comparable", ""]
    if noise:
        seeds = ", ".join(map(str, noise.seeds)) or "none recorded"
        lines.append(f"Noise: seed-to-seed bands (±) from {NOISE_FILE} of `{noise.revision}` (seeds {seeds}; "
                     f"{noise.confidence:.0%}).")
    else:
        lines.append(f"Noise: no {NOISE_FILE} in `{head}`, `{base}` or the workspace (`make noise` measures one): "
                     "a metric without per-example files in both runs has no noise estimate.")
    tested = {}
    for row in rows:
        if row.paired is not None:
            tested.setdefault(examples_file(row.name), row.paired)
    if tested:
        level = next(iter(tested.values())).confidence
        parts = []
        for path, test in tested.items():
            left = [f"{count} {what}" for count, what in ((test.only_base, "only in base"), (test.only_head,
                    "only in head"), (test.label_mismatch, "with another label")) if count]
            parts.append(f"`{path}` ({test.n:,} pairs{'; ' + ', '.join(left) if left else ''})")
        lines += ["", f"Paired tests ([{level:.0%} interval] of head − base over resampled test examples; McNemar "
                      f"p for accuracy) on {', '.join(parts)}."]
    return lines + [""]


def gate_section(gates: list[GateResult]) -> list[str]:
    if not gates:
        return []
    failed = [g for g in gates if not g.passed]
    title = f"### Gates: {len(gates) - len(failed)} of {len(gates)} passed"
    title += " — ❌ " + ", ".join(f"`{g.gate.metric}`" for g in failed) if failed else " ✅"
    lines = [title, "", "| metric | base | head | Δ | change | rule | |",
             "| --- | ---: | ---: | ---: | --- | --- | --- |"]
    for g in gates:
        status = ("✅" if g.passed else "❌") + (f" {g.note}" if g.note else "")
        lines.append(cells(f"`{g.gate.metric}`", fmt(g.row.old), fmt(g.value), g.row.delta_text(), g.row.mark, g.rule,
                           status))
    return lines + [""]


BOUNDS = ("*.ci_low", "*.ci_high", "*.row_bootstrap.*")  # an interval's ends move with its value


def is_headline(row: MetricRow) -> bool:
    """A significant change a reviewer reads first: a figure itself, not a timing or an interval's bound."""
    return not is_timing(row.name) and not any(fnmatch.fnmatchcase(row.name, p) for p in BOUNDS)


def significant_section(rows: list[MetricRow]) -> list[str]:
    """The significant changes of quality figures; those of timings and interval bounds folded after them (a busy
    machine moves every timing at once)."""
    lines = ["### Significant changes", ""]
    significant = [row for row in rows if row.verdict in SIGNIFICANT]
    if not significant:
        return lines + ["No metric changed beyond its noise.", ""]
    headline = [row for row in significant if is_headline(row)]
    folded = [row for row in significant if not is_headline(row)]

    def table(chosen: list[MetricRow]) -> list[str]:
        return METRIC_HEADER + [cells(f"`{row.name}`", fmt(row.old), fmt(row.new), row.delta_text(),
                                      signed(row.delta_pct, "%"), row.mark) for row in chosen]
    lines += table(headline) if headline else ["No figure other than timings and interval bounds changed beyond "
                                               "its noise."]
    if folded:
        timings = sum(is_timing(row.name) for row in folded)
        lines += ["", f"<details><summary>{len(folded)} more beyond their noise: {timings} timings (was either "
                      f"machine busy?), {len(folded) - timings} interval bounds</summary>", "", *table(folded), "",
                  "</details>"]
    return lines + [""]


def params_section(params: list[tuple[str, object, object]]) -> list[str]:
    lines = ["### Params changed", ""]
    if not params:
        return lines + ["No param changed.", ""]
    lines += ["| param | base | head |", "| --- | --- | --- |"]
    return lines + [cells(f"`{name}`", fmt(old), fmt(new)) for name, old, new in params] + [""]


def others_section(rows: list[MetricRow], unchanged: int) -> list[str]:
    """Every other change, folded, one table per metrics file."""
    others = [row for row in rows if row.verdict not in (*SIGNIFICANT, UNCHANGED)]
    unchanged += sum(row.verdict == UNCHANGED for row in rows)
    if not others:
        return [f"{unchanged} other metrics unchanged.", ""]
    counts = [(sum(row.verdict == v for row in others), label) for v, label in (
        (WITHIN_NOISE, "within noise"), (NO_ESTIMATE, "without a noise estimate"),
        (NOT_COMPARABLE, "not comparable (hardware)"))]
    counts.append((sum(row.verdict == "" for row in others), "without a better direction, new or removed"))
    lines = [f"<details><summary>{len(others)} other metric changes (within noise or without a noise estimate)"
             "</summary>", "", "; ".join(f"{n} {label}" for n, label in counts if n) + f"; {unchanged} unchanged.", ""]
    for file, group in groupby(others, key=lambda row: row.name.split(":", 1)[0]):
        lines += [f"**`{file}`**", "", *METRIC_HEADER]
        lines += [cells(f"`{row.name.split(':', 1)[1]}`", fmt(row.old), fmt(row.new), row.delta_text(),
                        signed(row.delta_pct, "%"), row.mark) for row in group]
        lines.append("")
    return lines + ["</details>", ""]


def markdown(base: str, head: str, params: list, rows: list[MetricRow], unchanged: int, gates: list[GateResult],
             images: dict[str, str], changes: list[str] = (), noise: Noise | None = None) -> str:
    lines = [f"## Comparison: `{base}` → `{head}`", "", *notes(base, head, list(changes), noise, rows)]
    lines += gate_section(gates) + significant_section(rows) + params_section(params) + others_section(rows, unchanged)
    lines += ["### Plots changed", ""]
    lines += [f"![{title}]({path})" for title, path in images.items()] or ["No plot changed."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- main

def compare(base: str, head: str, out: Path) -> tuple[str, list[GateResult]]:
    revs = " ".join(revisions(base, head))  # errors name the DVC command this stands for
    with open_repo() as repo:  # DVC calls the workspace "workspace" too
        with dvc_errors(f"params diff --all {revs}"):
            params_diff = repo.params.diff(base, head, all=True).get("diff", {})
        with dvc_errors(f"metrics diff --all {revs}"):
            metrics_diff = repo.metrics.diff(base, head, all=True).get("diff", {})
        plots, problems = specs(repo, [base, head])
        sides = {name: Revision(repo, name) for name in dict.fromkeys([head, base, WORKSPACE])}
        noise = read_noise(list(sides.values()))  # the head's, else the base's, else the workspace's
        rows, gates, unchanged = metric_rows(metrics_diff, head_gates(params_diff))
        changes = environment_changes(metrics_diff)
        judge(rows, sides[base], sides[head], noise, hardware_differs=bool(changes))
    for problem in problems:
        log.warning("%s", problem)
    params = changed_params(params_diff)  # a loosened gate shows here too
    images = {}
    for stale in (out / "plots").glob("*.png"):  # a reused folder must not show another comparison's plots
        stale.unlink()
    for title, spec in changed_plots(plots).items():
        name = f"plots/{slug(title)}.png"
        render_png(spec, out / name)
        images[title] = name
    return markdown(base, head, params, rows, unchanged, gates, images, changes, noise), gates


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lifecycle.review.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="commit, branch or experiment to compare against (main)")
    parser.add_argument("--head", default=WORKSPACE, help="commit, branch, experiment or 'workspace' (workspace)")
    parser.add_argument("--out", type=Path, default=Path("review"), help="folder for compare.md and plots/ (review)")
    parser.add_argument("--fail-on-gate", action="store_true", help="exit with code 1 when a quality gate fails")
    parser.add_argument("--experiments", action="store_true",
                        help="instead: `dvc exp show` cut to the changed params and the gated metrics")
    args = parser.parse_args(argv)
    if args.experiments:
        print(experiments_table(), end="")
        return
    text, gates = compare(args.base, args.head, args.out)
    with atomic_path(args.out / "compare.md") as tmp:
        tmp.write_text(text, encoding="utf-8")
    failed = [g for g in gates if not g.passed]
    log.info("wrote %s (%d of %d gates passed)", args.out / "compare.md", len(gates) - len(failed), len(gates))
    if failed and args.fail_on_gate:
        for g in failed:
            print(g.failure(), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    from lifecycle.core import run
    run(main)
