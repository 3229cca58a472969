"""The report stage's rendering: reports/report.md (one page for the whole run) and reports/MODEL_CARD.md, from
the metrics and plots that dvc.yaml declares and the params that made them. `params` holds the collect, finetune
and report sections. Every section of report.md fits one screen (MAX_SECTION_LINES): each answers its questions in
compact tables, and the JSON files hold the rest."""
from __future__ import annotations

import fnmatch
import json
from pathlib import Path

from lifecycle.core import StageError
from lifecycle.review.card import (
    KNOWN,
    attention,
    bias_lines,
    evaluation_lines,
    finetune_lines,
    model_lines,
    run_lines,
    run_reports,
    sources_table,
)
from lifecycle.review.efficiency import benchmark_lines, compression_lines
from lifecycle.review.markdown import flatten, fmt, get, slug, table
from lifecycle.review.plots import render_png

DVC_YAML, REPORT, CARD, FIGURES = (Path("dvc.yaml"), Path("reports/report.md"), Path("reports/MODEL_CARD.md"),
                                   Path("reports/figures"))

MAX_SECTION_LINES = 60  # a section fits one screen; a generic table is cut to fit, pointing to its file
COMPRESS, BENCH = "reports/compress.json", "reports/bench.json"  # compact tables of their own (review.efficiency)
# Report files without a section of their own (card.KNOWN) get a generic table under the heading of the first
# matching pattern (else "Other metrics").
GENERIC_HEADINGS = [("*compress*", "Compression"), ("*distill*", "Distillation"), ("*bench*", "Benchmark"),
                    ("*monitor*", "Monitoring"), ("*", "Other metrics")]
# Which section a figure belongs to, by the first data file it draws (first matching prefix wins).
FIGURE_SECTIONS = [("reports/plots/lengths", "Data"), ("reports/live/pretrain", "Pretraining"),
                   ("reports/live/finetune", "Fine-tuning"), ("reports/plots/confusion", "Evaluation"),
                   ("reports/plots/calibration", "Evaluation"), ("reports/plots/bias", "Bias"),
                   ("reports/plots/compress", "Compression"), ("reports/plots/speedup", "Benchmark"),
                   ("reports/plots/bench", "Benchmark"), ("reports/plots/monitor", "Monitoring"), ("", "Figures")]


# ---------------------------------------------------------------- what dvc.yaml declares

def _names(entries) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]


def declared_metrics(dvc: dict) -> list[str]:
    """Metrics files the DAG's stages write (top-level `metrics:` are timings outside the DAG: not reproducible)."""
    return [name for stage in dvc.get("stages", {}).values() for name in _names(stage.get("metrics"))]


def heading_for(path: str) -> str:
    return next(h for pattern, h in GENERIC_HEADINGS if fnmatch.fnmatchcase(path, pattern))


# ---------------------------------------------------------------- figures

def draw_all(specs: dict[str, list[dict]], directory: Path, dpi: int) -> dict[str, list[tuple[str, str]]]:
    """Section -> [(title, file name)] of the figures drawn into `directory`: one PNG per plot with data, from the
    Vega-Lite specs DVC makes of dvc.yaml's plots (`plots.workspace_specs`)."""
    figures: dict[str, list[tuple[str, str]]] = {}
    for title, renders in specs.items():
        name = f"{slug(title)}.png"
        render_png(renders[0]["content"], directory / name, ppi=dpi)
        first = next(iter(renders[0].get("files") or []), "")
        section = next(s for prefix, s in FIGURE_SECTIONS if first.startswith(prefix))
        figures.setdefault(section, []).append((title, name))
    return figures


def figure_lines(figures: dict, section: str) -> list[str]:
    return [f"![{title}](figures/{name})" for title, name in figures.get(section, [])] + \
        ([""] if figures.get(section) else [])


def generic_lines(path: str, data, max_lines: int = MAX_SECTION_LINES) -> list[str]:
    """`path`'s scalar leaves as a "figure | value" table of at most `max_lines` lines, the rest pointed to."""
    leaves = [[k, fmt(v)] for k, v in flatten(data).items() if not isinstance(v, (list, dict))]
    room = max(max_lines - 6, 1)  # name, blank, table header (2), the pointer, blank
    rows = leaves if len(leaves) <= room + 1 else leaves[:room]
    more = [f"… and {len(leaves) - len(rows)} more figures in `{path}`."] if len(rows) < len(leaves) else []
    return [f"`{path}`", ""] + table(["figure", "value"], rows) + more + [""]


def own_sections(reports: dict[str, object]) -> dict[str, list[str]]:
    """Heading -> lines of the reports with a compact section of their own."""
    compress, bench = reports.get(COMPRESS), reports.get(BENCH)
    out = {}
    if isinstance(compress, dict):
        out["Compression"] = compression_lines(compress, bench if isinstance(bench, dict) else None)
    if isinstance(bench, dict):
        out["Benchmark"] = benchmark_lines(bench)
    return out


def other_sections(reports: dict[str, object], figures: dict) -> list[str]:
    """The sections after the known ones, in GENERIC_HEADINGS order: compression and benchmark tables, then every
    other report's generic table, cut so that each section stays within MAX_SECTION_LINES."""
    known = {*KNOWN.values(), COMPRESS, BENCH}
    bodies = own_sections(reports)
    for path, data in reports.items():
        if path not in known and isinstance(data, dict):  # lists are plot data declared as metrics
            heading = heading_for(path)
            room = MAX_SECTION_LINES - 2 - len(bodies.get(heading, [])) - len(figure_lines(figures, heading))
            bodies.setdefault(heading, []).extend(generic_lines(path, data, room))
    lines = []
    for heading in [h for _, h in GENERIC_HEADINGS]:
        if bodies.get(heading) or figures.get(heading):
            lines += [f"## {heading}", ""] + bodies.get(heading, []) + figure_lines(figures, heading)
    return lines


# ---------------------------------------------------------------- the two documents

def report_markdown(params, reports: dict[str, object], figures: dict) -> str:
    r = run_reports(reports)
    lines = ["# Run report", "", "Generated by `python -m stages.report` from params.yaml and the reports "
             "dvc.yaml declares. The model card: [MODEL_CARD.md](MODEL_CARD.md).", ""] + run_lines(params, r)
    warnings = attention(params, r)
    if warnings:
        lines += ["## Read this first", ""] + [f"- {item}" for item in warnings] + [""]
    data = r["data"] or {}
    lines += ["## Data", ""] + sources_table(params, r) + [""]
    if data:
        lines += table(["corpus", "documents in", "documents out", "exact duplicates", "near duplicates",
                        "PII replaced"],
                       [[c, fmt(get(data, f"{c}.documents_in")), fmt(get(data, f"{c}.documents_out")),
                         fmt(get(data, f"{c}.duplicates_removed.exact")),
                         fmt(get(data, f"{c}.duplicates_removed.near")),
                         fmt(sum((get(data, f"{c}.pii_replaced") or {}).values()))] for c in data]) + [""]
    if r["tokens"]:
        lines += table(["token split", "documents", "tokens", "blocks", "bytes per token"],
                       [[s, fmt(get(r["tokens"], f"{s}.documents")), fmt(get(r["tokens"], f"{s}.tokens")),
                         fmt(get(r["tokens"], f"{s}.blocks")), fmt(get(r["tokens"], f"{s}.bytes_per_token"))]
                        for s in ("train", "validation", "test") if s in r["tokens"]]) + [""]
    lines += figure_lines(figures, "Data")
    lines += ["## Model and pretraining", ""] + model_lines(r) + figure_lines(figures, "Pretraining")
    lines += ["## Fine-tuning", ""] + finetune_lines(r["finetune"]) + figure_lines(figures, "Fine-tuning")
    lines += ["## Evaluation", ""] + evaluation_lines(r["eval"]) + figure_lines(figures, "Evaluation")
    lines += ["## Bias", ""] + bias_lines(r["bias"]) + figure_lines(figures, "Bias")
    lines += other_sections(reports, figures)
    if figures.get("Figures"):
        lines += ["## Figures", ""] + figure_lines(figures, "Figures")
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------- main

def read_reports(paths: list[str]) -> dict[str, object]:
    reports = {}
    for path in paths:
        if Path(path).exists():
            try:
                reports[path] = json.loads(Path(path).read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise StageError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    return reports
