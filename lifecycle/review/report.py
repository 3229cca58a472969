"""The report stage's rendering: reports/report.md (one page for the whole run) and reports/MODEL_CARD.md, from
the metrics and plots that dvc.yaml declares and the params that made them. `params` holds the collect, finetune
and report sections."""
from __future__ import annotations

import fnmatch
import json
import math
import re
from pathlib import Path

from lifecycle.core import StageError
from lifecycle.review.plots import render_png

DVC_YAML, REPORT, CARD, FIGURES = (Path("dvc.yaml"), Path("reports/report.md"), Path("reports/MODEL_CARD.md"),
                                   Path("reports/figures"))

# Report files with a section of their own; every other declared metrics file gets a generic table under the
# heading of the first matching pattern (else "Other metrics").
KNOWN = {"collect": "reports/collect.json", "data": "reports/data.json", "tokens": "reports/tokens.json",
         "tokenizer": "reports/tokenizer.json", "model": "reports/model.json", "pretrain": "reports/pretrain.json",
         "finetune": "reports/finetune.json", "eval": "reports/eval.json", "bias": "reports/bias.json"}
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


# ---------------------------------------------------------------- reading

def flatten(data, prefix: str = "") -> dict:
    """{'a.b.c': leaf} of a nested report, lists of numbers kept whole."""
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def get(data: dict | None, dotted: str, default=None):
    node = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


# ---------------------------------------------------------------- formatting

def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}" if abs(value) < 1e5 else f"{value:,.0f}"


def pct(value) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def interval(entry: dict | None, key: str = "value", as_pct: bool = False) -> str:
    """'v [lo, hi]' of an entry with value/ci_low/ci_high (95% bootstrap interval)."""
    if not entry:
        return "—"
    show = pct if as_pct else fmt
    lo, hi = entry.get("ci_low", entry.get(f"{key}_ci_low")), entry.get("ci_high", entry.get(f"{key}_ci_high"))
    bounds = f" [{show(lo)}, {show(hi)}]" if lo is not None and hi is not None else ""
    return f"{show(entry.get(key))}{bounds}"


def table(header: list[str], rows: list[list]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "plot"


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


# ---------------------------------------------------------------- sections shared by the report and the card

def sources_table(params, collect: dict | None) -> list[str]:
    """Every data source with its licence: collect's corpora, then the other data named in report.licences."""
    rows, licences = [], params.report.licences
    for corpus in ("pretrain", "finetune"):
        for s in getattr(params.collect, corpus):
            where = f"`{s.package}`: {s.path}" if s.kind == "package" else (s.path or s.dataset or s.url)
            kept = get(collect, f"{corpus}.{s.name}.documents_kept")
            rows.append([corpus, s.name, where, fmt(kept), licences.get(s.name, "not stated")])
    named = {s.name for s in (*params.collect.pretrain, *params.collect.finetune)}
    rows += [["other", name, "", "", licence] for name, licence in licences.items() if name not in named]
    return table(["corpus", "source", "from", "documents kept", "licence"], rows)


def evaluation_lines(ev: dict | None) -> list[str]:
    if not ev:
        return ["No evaluation in this run (reports/eval.json is missing).", ""]
    lines = []
    lm = ev.get("lm_pretrained") or {}
    if lm:
        lines += table(["language model, test text", "perplexity", "bits per byte", "tokens"],
                       [[name, fmt(m.get("perplexity")), fmt(m.get("bits_per_byte")), fmt(m.get("tokens"))]
                        for name, m in lm.items()]) + [""]
    c = ev.get("classifier")
    if c:
        lines += table(["classifier, test split", "value"], [
            ["accuracy", fmt(c.get("accuracy"))],
            [f"majority baseline ({get(c, 'majority_baseline.class')})", fmt(get(c, "majority_baseline.accuracy"))],
            ["macro F1", fmt(c.get("macro_f1"))], ["ROC AUC", fmt(c.get("roc_auc"))],
            ["expected calibration error", fmt(c.get("expected_calibration_error"))],
            ["test examples", fmt(c.get("test_examples"))]]) + [""]
    return lines


def bias_lines(bias: dict | None) -> list[str]:
    """Bias figures with their 95% intervals, from reports/bias.json (the audit stage)."""
    if not bias:
        return ["No bias audit in this run (reports/bias.json is missing): the model's fairness is unmeasured.", ""]
    lines = []
    cls = bias.get("classifier") or {}
    if cls:
        positive = cls.get("positive_class", "positive")
        lines += [f"Counterfactual templates: {fmt(cls.get('sentences'))} sentences from {fmt(cls.get('templates'))} "
                  f"templates and {fmt(cls.get('names'))} names, scored by the classifier. Selection rate = share "
                  f"predicted `{positive}`; 95% bootstrap intervals in brackets.", ""]
        for attribute in ("gender", "race", "gender_race"):
            groups = cls.get(f"by_{attribute}") or {}
            if groups:
                lines += table([attribute.replace("_", " + "), "selection rate", "mean probability", "accuracy",
                                "count"],
                               [[g, interval(m, "selection_rate", as_pct=True), fmt(m.get("mean_probability")),
                                 fmt(m.get("accuracy")), fmt(m.get("count"))] for g, m in groups.items()]) + [""]
        dpd, dpr = cls.get("demographic_parity_difference") or {}, cls.get("demographic_parity_ratio") or {}
        if dpd or dpr:
            lines += table(["attribute", "demographic parity difference", "demographic parity ratio"],
                           [[a.replace("_", " + "), interval(dpd.get(a)), interval(dpr.get(a))]
                            for a in dict.fromkeys([*dpd, *dpr])]) + [""]
        if cls.get("flip_rate"):
            lines += [f"Counterfactual flip rate (the prediction changes when only the name changes): "
                      f"{interval(cls['flip_rate'], as_pct=True)}.", ""]
    crows = get(bias, "stereotype.crows_pairs")
    if crows:
        rows = [["overall", interval(crows.get("overall"), "score"), fmt(get(crows, "overall.pairs"))]]
        rows += [[c, interval(m, "score"), fmt(m.get("pairs"))] for c, m in (crows.get("by_category") or {}).items()]
        lines += ["Stereotype preference of the language model on CrowS-Pairs (share of pairs where the stereotype "
                  "is more likely; 0.5 is unbiased):", ""] + table(["category", "score", "pairs"], rows) + [""]
    corpus = bias.get("corpus")
    if corpus:
        per_million = corpus.get("per_million_words") or {}
        lines += ["Demographic terms in the pretraining corpus, per million words: "
                  + ", ".join(f"{k} {fmt(v)}" for k, v in per_million.items())
                  + "".join(f"; {k.replace('_', ' ')} ratio {fmt(v)}" for k, v in (corpus.get("ratios") or {}).items())
                  + ".", ""]
    gates = bias.get("gates") or {}
    if gates:
        lines += table(["bias gate", "value", "limit", "passed"],
                       [[g, fmt(v.get("value")), fmt(v.get("limit")), "✅" if v.get("passed") else "❌"]
                        for g, v in gates.items()]) + [""]
    return lines


def generic_lines(path: str, data) -> list[str]:
    leaves = {k: v for k, v in flatten(data).items() if not isinstance(v, (list, dict))}
    return [f"`{path}`", ""] + table(["figure", "value"], [[k, fmt(v)] for k, v in leaves.items()]) + [""]


# ---------------------------------------------------------------- the two documents

def report_markdown(params, reports: dict[str, object], figures: dict) -> str:
    r = {k: reports.get(path) for k, path in KNOWN.items()}
    lines = ["# Run report", "", "Generated by `python -m stages.report` from params.yaml and the reports "
             "dvc.yaml declares. The model card: [MODEL_CARD.md](MODEL_CARD.md).", ""]
    data = r["data"] or {}
    lines += ["## Data", ""] + sources_table(params, r["collect"]) + [""]
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
    known = set(KNOWN.values())
    generic: dict[str, list[str]] = {}
    for path, data in reports.items():
        if path not in known and isinstance(data, dict):  # lists are plot data declared as metrics
            generic.setdefault(heading_for(path), []).extend(generic_lines(path, data))
    for heading in [h for _, h in GENERIC_HEADINGS]:
        if generic.get(heading) or figures.get(heading):
            lines += [f"## {heading}", ""] + generic.get(heading, []) + figure_lines(figures, heading)
    if figures.get("Figures"):
        lines += ["## Figures", ""] + figure_lines(figures, "Figures")
    return "\n".join(lines).rstrip() + "\n"


def model_lines(r: dict) -> list[str]:
    m, p, tok = r["model"] or {}, r["pretrain"] or {}, r["tokenizer"] or {}
    if not m and not p:
        return ["No pretraining in this run.", ""]
    rows = [["architecture", f"{m.get('family', '—')}" + (f" (continued from {m['base']})" if m.get("base") else "")],
            ["parameters", f"{fmt(get(m, 'parameters.total'))} "
                           f"({fmt(get(m, 'parameters.non_embedding'))} non-embedding)"],
            ["context length", fmt(m.get("context_length"))], ["vocabulary", fmt(tok.get("vocab_size"))],
            ["steps", fmt(p.get("steps"))], ["tokens seen", fmt(p.get("tokens_seen"))],
            ["validation loss (nats/token)", fmt(p.get("validation_loss"))],
            ["validation perplexity", f"{fmt(p.get('validation_perplexity'))} (unigram baseline "
                                      f"{fmt(p.get('unigram_perplexity'))})"],
            ["device, precision", f"{p.get('device', '—')}, {p.get('precision', '—')} × {fmt(p.get('world_size'))}"]]
    return table(["", "value"], rows) + [""]


def finetune_lines(f: dict | None) -> list[str]:
    if not f:
        return ["No fine-tuning in this run.", ""]
    rows = [["task, method", f"{f.get('task')}, {f.get('method')}"],
            ["trainable parameters", f"{fmt(get(f, 'parameters.trainable'))} of {fmt(get(f, 'parameters.total'))}"],
            ["steps (best)", f"{fmt(f.get('steps'))} ({fmt(f.get('best_step'))})"]]
    rows += [[f"validation {k}", fmt(v)] for k, v in (f.get("validation") or {}).items()]
    return table(["", "value"], rows) + [""]


def model_card(params, reports: dict[str, object]) -> str:
    r = {k: reports.get(path) for k, path in KNOWN.items()}
    m, f = r["model"] or {}, r["finetune"] or {}
    classes = ", ".join(params.finetune.classes)
    lines = ["# Model card", "",
             f"A {m.get('family', 'language')} model of {fmt(get(m, 'parameters.total'))} parameters trained from "
             "params.yaml by this repository's DVC pipeline"
             + (f", and a {f.get('task')} model fine-tuned from it ({f.get('method')}; classes: {classes})."
                if f else "."),
             "Every figure below is read from the run's reports; `dvc repro` regenerates this card.", "",
             "## Intended use", "", params.report.intended_use, ""]
    if params.report.out_of_scope:
        lines += ["Out of scope:", ""] + [f"- {item}" for item in params.report.out_of_scope] + [""]
    lines += ["## Data sources and licences", ""] + sources_table(params, r["collect"]) + [""]
    lines += ["## Training", ""] + model_lines(r) + finetune_lines(r["finetune"])
    lines += ["## Evaluation", ""] + evaluation_lines(r["eval"])
    lines += ["## Bias", ""] + bias_lines(r["bias"])
    lines += ["## Limitations", ""] + [f"- {item}" for item in limitations(params, r)]
    return "\n".join(lines).rstrip() + "\n"


def limitations(params, r: dict) -> list[str]:
    """The params' limitations, plus those the run's own figures show."""
    items = list(params.report.limitations)
    c = get(r["eval"], "classifier") or {}
    n, accuracy = c.get("test_examples"), c.get("accuracy")
    if n and accuracy is not None:  # normal approximation of the binomial: what a different test sample could move
        half_width = 1.96 * math.sqrt(accuracy * (1 - accuracy) / n)
        items.append(f"the classifier was tested on {fmt(n)} examples: its accuracy of {fmt(accuracy)} is known to "
                     f"about ±{fmt(half_width, 2)} (95%), so smaller differences between runs are noise")
    if c and (c.get("accuracy_over_baseline") or 0) <= 0:
        items.append("the classifier does no better than always predicting the majority class")
    if r["bias"] is None:
        items.append("no bias audit was run: fairness across groups is unmeasured")
    elif r["bias"].get("passed") is False:
        failed = [g for g, v in (r["bias"].get("gates") or {}).items() if not v.get("passed")]
        items.append(f"the bias audit failed its gates ({', '.join(failed) or 'see Bias'})")
    unlicensed = [s.name for s in (*params.collect.pretrain, *params.collect.finetune)
                  if s.name not in params.report.licences]
    if unlicensed:
        items.append(f"no licence recorded for: {', '.join(unlicensed)}")
    return items


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
