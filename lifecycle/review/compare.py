"""compare: the one page a reviewer reads for two runs. Not a stage: it compares stages' results.

`python -m lifecycle.review.compare --base main --head workspace [--out review] [--fail-on-gate]`

Heads and bases are anything DVC takes as a revision: a branch, a commit, an experiment name, or `workspace`
(the files on disk; head only). Built on DVC's Python API: `Repo.params.diff`, `Repo.metrics.diff` and the plots
of both revisions as DVC's Vega-Lite specs with their data inline (lifecycle.review.plots, which draws the report's
figures too), so every metrics file and plot that dvc.yaml declares joins the page without code here. Writes
<out>/compare.md and <out>/plots/*.png. `--experiments` instead prints a readable `dvc exp show`.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from lifecycle.core import StageError
from lifecycle.io import atomic_path
from lifecycle.params.base import load
from lifecycle.params.report import Gate
from lifecycle.review.markdown import flatten, fmt, slug
from lifecycle.review.plots import dvc_errors, open_repo, render_png, specs

log = logging.getLogger("llm-lifecycle.compare")
WORKSPACE = "workspace"

# Which way is better, by the metric's `file:key` (first matching pattern wins; no match: no verdict).
DIRECTIONS: list[tuple[str, int]] = [
    ("*accuracy_drop*", -1), ("*demographic_parity_difference*", -1), ("*flip_rate*", -1),
    ("*demographic_parity_ratio*", +1),
    ("*accuracy*", +1), ("*f1*", +1), ("*roc_auc*", +1), ("*precision*", +1), ("*recall*", +1),
    ("*calibration_error*", -1), ("*unigram_perplexity*", 0), ("*perplexity*", -1), ("*loss*", -1),
    ("*bits_per_byte*", -1),
    ("*tokens_per_second*", +1), ("*per_second*", +1), ("*_per_s", +1), ("*throughput*", +1), ("*speedup*", +1),
    ("*speed_up*", +1), ("*mfu*", +1), ("*achieved_tflops*", +1),
    ("*latency*", -1), ("*_ms", -1), ("*_seconds", -1), ("*size_mb*", -1), ("*size_bytes*", -1), ("*_mb", -1),
]


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

def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class MetricRow:
    name: str            # file:key
    old: object
    new: object
    gate: GateResult | None = None

    @property
    def delta(self) -> float | None:
        return self.new - self.old if is_number(self.old) and is_number(self.new) else None

    @property
    def delta_pct(self) -> float | None:
        delta = self.delta
        return None if delta is None or self.old == 0 else 100 * delta / abs(self.old)

    @property
    def verdict(self) -> str:
        delta, sign = self.delta, direction(self.name)
        if not delta or not sign:
            return ""
        return "better" if delta * sign > 0 else "worse"


@dataclass
class GateResult:
    gate: Gate
    value: object

    @property
    def passed(self) -> bool:
        if not is_number(self.value):
            return False
        return ((self.gate.min is None or self.value >= self.gate.min)
                and (self.gate.max is None or self.value <= self.gate.max))

    @property
    def rule(self) -> str:
        parts = ([f"≥ {self.gate.min:g}"] if self.gate.min is not None else []) + \
                ([f"≤ {self.gate.max:g}"] if self.gate.max is not None else [])
        return " and ".join(parts)


def metric_rows(diff: dict, gates: list[Gate]) -> tuple[list[MetricRow], int]:
    """Rows for the metrics that changed or carry a gate (from `Repo.metrics.diff(all=True)`'s "diff"), and how
    many metrics did not change."""
    values = {f"{file}:{key}": (change.get("old"), change.get("new"))
              for file, metrics in diff.items() for key, change in metrics.items()}
    by_name = {g.metric: GateResult(g, values.get(g.metric, (None, None))[1]) for g in gates}
    rows, unchanged = [], 0
    for name in sorted(set(values) | set(by_name)):
        old, new = values.get(name, (None, None))
        if old == new and name not in by_name:
            unchanged += 1
            continue
        rows.append(MetricRow(name, old, new, by_name.get(name)))
    return rows, unchanged


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

def fmt_delta(value: float | None, suffix: str = "") -> str:
    return "" if value is None else ("+" if value > 0 else "") + fmt(value) + suffix


def markdown(base: str, head: str, params: list, rows: list[MetricRow], unchanged: int,
             gates: list[GateResult], images: dict[str, str]) -> str:
    lines = [f"## Comparison: `{base}` → `{head}`", ""]
    if gates:
        failed = [g for g in gates if not g.passed]
        lines += [f"**Quality gates: {len(gates) - len(failed)} of {len(gates)} passed**"
                  + (" — ❌ " + ", ".join(f"`{g.gate.metric}`" for g in failed) if failed else " ✅"), ""]
    lines += ["### Params changed", ""]
    if params:
        lines += ["| param | base | head |", "| --- | --- | --- |"]
        lines += [f"| `{name}` | {fmt(old)} | {fmt(new)} |" for name, old, new in params]
    else:
        lines.append("No param changed.")
    lines += ["", "### Metrics", ""]
    if rows:
        lines += ["| metric | base | head | Δ | Δ % | | gate |", "| --- | ---: | ---: | ---: | ---: | --- | --- |"]
        for row in rows:
            gate = "" if row.gate is None else f"{'✅' if row.gate.passed else '❌'} {row.gate.rule}"
            mark = {"better": "🟢 better", "worse": "🔴 worse"}.get(row.verdict, "")
            lines.append(f"| `{row.name}` | {fmt(row.old)} | {fmt(row.new)} | {fmt_delta(row.delta)} | "
                         f"{fmt_delta(row.delta_pct, '%')} | {mark} | {gate} |")
    else:
        lines.append("No metric changed.")
    lines += ["", f"{unchanged} other metrics unchanged.", "", "### Plots changed", ""]
    if images:
        lines += [f"![{title}]({path})" for title, path in images.items()]
    else:
        lines.append("No plot changed.")
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
    for problem in problems:
        log.warning("%s", problem)
    gates = head_gates(params_diff)
    params = changed_params(params_diff)  # a loosened gate shows here too
    rows, unchanged = metric_rows(metrics_diff, gates)
    images = {}
    for stale in (out / "plots").glob("*.png"):  # a reused folder must not show another comparison's plots
        stale.unlink()
    for title, spec in changed_plots(plots).items():
        name = f"plots/{slug(title)}.png"
        render_png(spec, out / name)
        images[title] = name
    results = [row.gate for row in rows if row.gate is not None]
    return markdown(base, head, params, rows, unchanged, results, images), results


# ---------------------------------------------------------------- a readable `dvc exp show`

PROSE_PARAMS = ("gates", "report")  # lists and text: the gates' metrics are columns already, the card's prose is not


def _differing(rows: list[dict], kind: str, only: set[str] | None = None) -> list[str]:
    """Leaf names of `kind` (params | metrics) whose value differs between two rows or is missing from one."""
    values: dict[str, list] = {}
    for data in rows:
        for file, content in (data.get(kind) or {}).items():
            for key, value in flatten((content or {}).get("data") or {}).items():
                name = key if kind == "params" else f"{file}:{key}"
                if only is None or name in only:
                    values.setdefault(name, []).append(json.dumps(value, sort_keys=True, default=str))
    return [k for k, v in values.items() if len(set(v)) > 1 or len(v) < len(rows)]


def experiment_columns(show: list, gates: list[Gate]) -> list[str]:
    """The columns worth reading in `dvc exp show`: every param that differs between two of its rows (the
    baseline, the workspace and each experiment), then the gated metrics (`file:key`) that differ, in the gates'
    order."""
    rows = []
    for entry in show:
        rows.append(entry.get("data") or {})
        rows += [rev.get("data") or {} for exp in entry.get("experiments") or [] for rev in exp.get("revs") or []]
    params = sorted(k for k in _differing(rows, "params") if k.split(".")[0] not in PROSE_PARAMS)
    gated = [g.metric for g in gates]
    moved = set(_differing(rows, "metrics", set(gated)))
    return list(dict.fromkeys(params + [m for m in gated if m in moved]))


def _clip(text: str, most: int) -> str:
    return text if len(text) <= most else text[:most - 1] + "…"


def _markdown_block(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(map(len, column)) for column in zip(header, *rows)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)]


def fold_table(header: list[str], rows: list[list[str]], width: int = 200) -> str:
    """A Markdown table none of whose lines is wider than `width`, for any number of rows and columns: the
    columns after the first go into as many tables (blocks, one blank line apart) as needed, each repeating the
    first column (the experiment). A cell too wide for even a block of its own is cut with "…"."""
    first = [_clip(c, width // 2 - 4) for c in [header[0]] + [row[0] for row in rows]]
    first_width = max(map(len, first)) + 3  # "| cell " and the closing "|" below
    most = width - first_width - 4  # the widest other cell a block of two columns has room for
    columns = [[_clip(str(c), most) for c in [header[i]] + [row[i] for row in rows]] for i in range(1, len(header))]
    blocks, used = [[]], 1 + first_width
    for column in columns:
        cell = max(map(len, column)) + 3
        if blocks[-1] and used + cell > width:
            blocks, used = blocks + [[]], 1 + first_width
        blocks[-1].append(column)
        used += cell
    lines = []
    for block in blocks:
        table = [first, *block]  # columns: header cell, then one cell per row
        rows_of_block = [list(row) for row in zip(*(column[1:] for column in table))]
        lines += ([""] if lines else []) + _markdown_block([column[0] for column in table], rows_of_block)
    return "\n".join(lines) + "\n"


def experiment_cells(exps: list, columns: list[str], precision: int = 4) -> tuple[list[str], list[list[str]]]:
    """Header and rows of `dvc exp show`'s table (its own cells: experiment labels, rounded values, "-" where a
    row has no value) cut to the experiment and `columns` (a column of DVC's is `key` or, where that is
    ambiguous, `file:key`)."""
    from dvc.commands.experiments.show import prepare_exp_id
    from dvc.repo.experiments.show import tabulate

    table, _ = tabulate(exps, precision=precision, fill_value="-")
    labels = [str(prepare_exp_id(row)) for row in table.as_dict(["Experiment", "rev", "typ", "parent"])]
    keys = [k for c in columns for k in table.keys()
            if k == c or k.split(":", 1)[-1] == c or k == c.split(":", 1)[-1]]
    keys = list(dict.fromkeys(keys))
    cells = [["-" if value is None else str(value) for value in table.column(k)] for k in keys]
    return ["Experiment", *keys], [[label, *(column[i] for column in cells)] for i, label in enumerate(labels)]


def experiments_table(precision: int = 4, width: int = 200) -> str:
    """`dvc exp show --md` cut to the changed params and the moved gated metrics (hash and timing columns
    dropped), folded into blocks no wider than `width`."""
    with open_repo() as repo, dvc_errors("exp show"):
        exps = repo.experiments.show()
    columns = experiment_columns([exp.dumpd() for exp in exps], load(gates=(list[Gate], [])).gates)
    return fold_table(*experiment_cells(exps, columns, precision), width=width)


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
            print(f"gate failed: {g.gate.metric} = {fmt(g.value)}, needs {g.rule}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    from lifecycle.core import run
    run(main)
