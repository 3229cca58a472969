"""What a run is and what its figures say, written from the run itself (its reports, and the params that made
them): the sections the report and the model card share, and the model card (reports/MODEL_CARD.md). `params` holds
the collect, finetune, model, serve and report sections."""
from __future__ import annotations

import math

from lifecycle.review.markdown import fmt, get, interval, pct, table

CORPORA = ("pretrain", "finetune")
# Report files with a section of their own; every other declared metrics file gets a generic table.
KNOWN = {"collect": "reports/collect.json", "data": "reports/data.json", "tokens": "reports/tokens.json",
         "tokenizer": "reports/tokenizer.json", "model": "reports/model.json", "pretrain": "reports/pretrain.json",
         "finetune": "reports/finetune.json", "eval": "reports/eval.json", "bias": "reports/bias.json"}
MONITOR = "reports/monitor.json"  # read for its status; its figures keep their generic table
BASELINE_NAMES = {"majority": "majority-class", "tfidf_logreg": "TF-IDF + logistic regression"}


def run_reports(reports: dict[str, object]) -> dict:
    """The run's reports by short name (None where missing)."""
    return {**{k: reports.get(path) for k, path in KNOWN.items()}, "monitor": reports.get(MONITOR)}


def source_where(source) -> str:
    if source is None:
        return "—"
    return f"`{source.package}`: {source.path}" if source.kind == "package" else (source.path or source.dataset
                                                                                    or source.url)


def read_sources(params, r: dict) -> list[tuple]:
    """(corpus, name, its params entry) of every source the run read: collect.json's, in its order."""
    by_name = {(c, s.name): s for c in CORPORA for s in getattr(params.collect, c)}
    collect = r["collect"] or {}
    return [(c, name, by_name.get((c, name))) for c in CORPORA for name in (collect.get(c) or {})]


def source_names(params, r: dict, corpus: str) -> str:
    return ", ".join(name for c, name, _ in read_sources(params, r) if c == corpus) or "—"


def sources_table(params, r: dict) -> list[str]:
    """Every data source the run read, with its licence: collect's sources (documents collect read, those the
    pretraining mixture kept by weight, those left after prepare), then the data files the audit read (licences
    from report.licences, by file)."""
    rows = []
    for corpus, name, source in read_sources(params, r):
        counts = [get(r["collect"], f"{corpus}.{name}.{key}") for key in ("documents_read", "documents_kept")]
        rows.append([corpus, name, source_where(source), *map(fmt, counts),
                     fmt(get(r["data"], f"{corpus}.kept.{name}.documents")),
                     (source.licence if source else None) or "not stated"])
    for name, where in (get(r["bias"], "inputs") or {}).items():
        rows.append(["audit", name, where, "", "", "", params.report.licences.get(where, "not stated")])
    if not rows:
        return ["No data was collected in this run (reports/collect.json is missing)."]
    return table(["corpus", "source", "from", "documents read", "in the mixture", "after prepare", "licence"], rows)


def served(serve) -> str:
    def where(variant: str) -> str:
        return "models/finetuned" if variant == "pytorch" else f"models/compressed/classifier/{variant}"
    text = f"`{serve.variant}` ({where(serve.variant)}, and the language model's of the same name)"
    if serve.ab:
        a, b = serve.ab.variants
        text += f"; A/B: `{b}` gets {pct(serve.ab.split)} of users, `{a}` the rest"
    return text


def run_lines(params, r: dict) -> list[str]:
    """What this run is, from its params and reports: models, data, task, classes, base model, served variant."""
    m, data, f = r["model"] or {}, r["data"] or {}, params.finetune
    base = f"continued from `{params.model.base}`" if params.model.base else "trained from scratch"
    rows = [["language model", f"{m.get('family', params.model.family)}, {fmt(get(m, 'parameters.total'))} "
                               f"parameters, {base}"],
            ["pretraining text", f"{source_names(params, r, 'pretrain')}: {fmt(get(data, 'pretrain.documents_out'))} "
                                 f"documents, {fmt(get(data, 'pretrain.characters_out'))} characters after prepare"],
            ["task", f.task + (f", classes: {', '.join(f.classes)}" if f.task == "classification" else "")],
            ["fine-tuned from", (f"`{f.base}`" if f.base else "the language model above (models/pretrained)")
             + f", {f.method}"],
            ["fine-tuning data", f"{source_names(params, r, 'finetune')}: {fmt(get(data, 'finetune.documents_out'))} "
                                 "documents after prepare"],
            ["served by default", served(params.serve)]]
    return table(["this run", ""], rows) + [""]


def attention(params, r: dict) -> list[str]:
    """What a reader must not miss, in plain words: silent-looking drops, a model that loses to a simple baseline,
    an audit that does not fit the task, failed bias gates, no traffic to monitor."""
    items = []
    for corpus in CORPORA:
        for w in get(r["data"], f"{corpus}.drop_warnings") or []:
            example = f', e.g. "{w["examples"][0]}"' if w.get("examples") else ""
            items.append(f"prepare's filter `{w['filter']}` dropped {pct(w['share'])} of {corpus} source "
                         f"`{w['source']}` ({fmt(w['dropped'])} of {fmt(w['of'])} documents){example}")
    c = get(r["eval"], "classifier") or {}
    if c.get("beats_baselines") is False:
        best = c.get("best_baseline")
        items.append(f"the fine-tuned classifier (accuracy {fmt(c.get('accuracy'))}) does not beat the "
                     f"{BASELINE_NAMES.get(best, best)} baseline "
                     f"({fmt(get(c, f'baselines.{best}.accuracy'))}) on the same test split")
    for name, lm in (get(r["eval"], "lm_pretrained") or {}).items():
        if lm.get("beats_unigram") is False:
            items.append(f"the language model does not beat a unigram model on the {name} test text (perplexity "
                         f"{fmt(lm.get('perplexity'))} against {fmt(lm.get('unigram_perplexity'))})")
    fit = get(r["bias"], "classifier.template_fit") or {}
    if fit.get("applicable") is False:
        items.append(f"the counterfactual templates do not fit this task: {'; '.join(fit.get('reasons', []))}; "
                     "the bias audit does not pass, and its classifier figures say little about the task")
    failed = [g for g, v in (get(r["bias"], "gates") or {}).items() if not v.get("passed")]
    if failed:
        items.append(f"the bias audit failed its gates: {', '.join(failed)}")
    if get(r["monitor"], "status") == "no traffic yet":
        items.append("no traffic yet: monitoring has no request log of this model (monitor.log)")
    return items


def evaluation_lines(ev: dict | None) -> list[str]:
    if not ev:
        return ["No evaluation in this run (reports/eval.json is missing).", ""]
    lines = []
    lm = ev.get("lm_pretrained") or {}
    if lm:
        lines += table(["language model, test text", "perplexity", "bits per byte", "unigram baseline perplexity",
                        "tokens"],
                       [[name, fmt(m.get("perplexity")), fmt(m.get("bits_per_byte")),
                         fmt(m.get("unigram_perplexity")), fmt(m.get("tokens"))] for name, m in lm.items()]) + [""]
    c = ev.get("classifier")
    if c:
        baselines = [[f"baseline: {BASELINE_NAMES.get(name, name)}"
                      + (f" ({b['class']})" if b.get("class") else ""), fmt(b.get("accuracy"))]
                     for name, b in (c.get("baselines") or {}).items()]
        lines += table(["classifier, test split", "accuracy or value"], [
            ["accuracy", fmt(c.get("accuracy"))], *baselines,
            ["margin over the best baseline", fmt(c.get("margin_over_baselines"))],
            ["macro F1", fmt(c.get("macro_f1"))], ["ROC AUC", fmt(c.get("roc_auc"))],
            ["expected calibration error", fmt(c.get("expected_calibration_error"))],
            ["test examples", fmt(c.get("test_examples"))]]) + [""]
    return lines


def template_fit_lines(fit: dict) -> list[str]:
    """Whether the templates resemble the task: accuracy on the labelled ones, predicted shares, word coverage."""
    if not fit:
        return []
    shares = ", ".join(f"{c} {pct(v)}" for c, v in (fit.get("predicted_share") or {}).items())
    lines = [f"Do the templates fit the task? Accuracy on the {fmt(fit.get('labelled_templates'))} templates that "
             f"carry a label: {interval(fit.get('accuracy'))}; predicted: {shares}; "
             f"{pct(fit.get('vocabulary_coverage'))} of their words occur in the fine-tuning training text.", ""]
    if fit.get("applicable") is False:
        lines += [f"**The templates do not fit this task**: {'; '.join(fit.get('reasons', []))}. The figures below "
                  "describe these templates, not the task; write templates from the task's own text "
                  "(`finetune.audit_templates`).", ""]
    return lines


def parity_lines(cls: dict) -> list[str]:
    """Demographic parity by attribute: difference with its cluster interval, the row bootstrap's beside it."""
    dpd, dpr = cls.get("demographic_parity_difference") or {}, cls.get("demographic_parity_ratio") or {}
    if not dpd and not dpr:
        return []
    rows = []
    for a in dict.fromkeys([*dpd, *dpr]):
        row = (dpd.get(a) or {}).get("row_bootstrap")
        rows.append([a.replace("_", " + "), interval(dpd.get(a)),
                     f"[{fmt(row['ci_low'])}, {fmt(row['ci_high'])}]" if row else "—", interval(dpr.get(a))])
    return table(["attribute", "demographic parity difference", "row bootstrap (too narrow)",
                  "demographic parity ratio"], rows) + [""]


def group_lines(cls: dict) -> list[str]:
    """Selection rate and name disagreement per gender and race group; gender x race rates in one line."""
    disagreement = cls.get("name_disagreement") or {}
    rows = [[attribute, g, interval(m, "selection_rate", as_pct=True),
             interval(get(disagreement, f"by_{attribute}.{g}"), as_pct=True), fmt(m.get("mean_probability")),
             fmt(m.get("accuracy")), fmt(m.get("count"))]
            for attribute in ("gender", "race") for g, m in (cls.get(f"by_{attribute}") or {}).items()]
    lines = table(["attribute", "group", "selection rate", "name disagreement", "mean probability", "accuracy",
                   "count"], rows) + [""] if rows else []
    both = cls.get("by_gender_race") or {}
    if both:
        lines += ["Selection rate by gender + race: " + "; ".join(
            f"{g} {interval(m, 'selection_rate', as_pct=True)}" for g, m in both.items()) + ".", ""]
    return lines


def disagreement_lines(cls: dict) -> list[str]:
    """Name disagreement overall and in the worst group, then the any-name flip rate, labelled for what it is."""
    lines = []
    d = cls.get("name_disagreement") or {}
    if d:
        worst = d.get("max_group") or {}
        lines += [f"Name disagreement (share of names whose prediction differs from their template's majority "
                  f"label): {interval(d.get('overall'), as_pct=True)} overall; worst group "
                  f"`{worst.get('group')}` ({worst.get('attribute')}) {interval(worst, as_pct=True)}.", ""]
    flips = cls.get("any_name_flip_rate")
    if flips:
        lines += [f"Any-name flip rate: {interval(flips, as_pct=True)} of {fmt(flips.get('templates'))} templates "
                  f"({flips.get('definition', 'share of templates where at least one name changes the label')}: "
                  "not a measure of how much).", ""]
    return lines


def classifier_bias_lines(bias: dict, cls: dict) -> list[str]:
    positive = cls.get("positive_class", "positive")
    clustered = "name_disagreement" in cls  # reports before the cluster bootstrap resampled sentences
    how = ("two-way cluster bootstrap: templates and names resampled, since every sentence shares its template "
           "with the other names and its name with the other templates" if clustered else "bootstrap")
    return ([f"Counterfactual templates: {fmt(cls.get('sentences'))} sentences from {fmt(cls.get('templates'))} "
             f"templates (`{get(bias, 'inputs.templates')}`) and {fmt(cls.get('names'))} names, scored by the "
             f"classifier. Selection rate = share predicted `{positive}`; 95% intervals in brackets ({how}).", ""]
            + template_fit_lines(cls.get("template_fit") or {}) + parity_lines(cls) + group_lines(cls)
            + disagreement_lines(cls))


def bias_lines(bias: dict | None) -> list[str]:
    """Bias figures with their 95% intervals, from reports/bias.json (the audit stage)."""
    if not bias:
        return ["No bias audit in this run (reports/bias.json is missing): the model's fairness is unmeasured.", ""]
    cls = bias.get("classifier") or {}
    lines = classifier_bias_lines(bias, cls) if cls else []
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
        lines += table(["bias gate", "value [95% interval]", "limit", "passed"],
                       [[g, interval(v), ("≥ " if v.get("kind") == "min" else "≤ ") + fmt(v.get("limit")),
                         "✅" if v.get("passed") else "❌"] for g, v in gates.items()]) + [""]
    return lines


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
    r = run_reports(reports)
    lines = ["# Model card", "",
             "Written by the pipeline from the run that produced it: every figure is read from the run's reports "
             "and params, and `dvc repro` rewrites it. The prose (intended use, out of scope, limitations) comes "
             "from params.yaml `report:`.", ""] + run_lines(params, r)
    lines += ["## Intended use", "", params.report.intended_use, ""]
    if params.report.out_of_scope:
        lines += ["Out of scope:", ""] + [f"- {item}" for item in params.report.out_of_scope] + [""]
    lines += ["## Data sources and licences", ""] + sources_table(params, r) + [""]
    lines += ["## Training", ""] + model_lines(r) + finetune_lines(r["finetune"])
    lines += ["## Evaluation", ""] + evaluation_lines(r["eval"])
    lines += ["## Bias", ""] + bias_lines(r["bias"])
    lines += ["## Limitations", ""] + [f"- {item}" for item in limitations(params, r)]
    return "\n".join(lines).rstrip() + "\n"


def limitations(params, r: dict) -> list[str]:
    """The params' limitations, then those the run's own figures show."""
    items = list(params.report.limitations)
    characters = get(r["data"], "pretrain.characters_out")
    if characters is not None:
        items.append(f"the language model learned from {fmt(characters)} characters of text "
                     f"({source_names(params, r, 'pretrain')}); expect it to know little beyond them")
    c = get(r["eval"], "classifier") or {}
    n, accuracy = c.get("test_examples"), c.get("accuracy")
    if n and accuracy is not None:  # normal approximation of the binomial: what a different test sample could move
        half_width = 1.96 * math.sqrt(accuracy * (1 - accuracy) / n)
        items.append(f"the classifier was tested on {fmt(n)} examples of {source_names(params, r, 'finetune')}: its "
                     f"accuracy of {fmt(accuracy)} is known to about ±{fmt(half_width, 2)} (95%), so smaller "
                     "differences between runs are noise; expect lower accuracy on other text")
    items += attention(params, r)
    if r["bias"] is None:
        items.append("no bias audit was run: fairness across groups is unmeasured")
    unlicensed = [name for _, name, s in read_sources(params, r) if not (s and s.licence)]
    unlicensed += [f"{name} ({where})" for name, where in (get(r["bias"], "inputs") or {}).items()
                   if where not in params.report.licences]
    if unlicensed:
        items.append(f"no licence recorded for: {', '.join(unlicensed)}")
    return items
