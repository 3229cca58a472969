"""evaluate: perplexity and bits per byte of the language model; task metrics of the fine-tuned classifier.

models/pretrained (+ models/finetuned) on the test splits -> reports/eval.json, reports/plots/confusion.json
(a dvc confusion plot) and reports/plots/calibration.json (reliability diagram).
"""
from __future__ import annotations

import logging
from pathlib import Path

from lifecycle.core import seed_everything
from lifecycle.hardware import device_type
from lifecycle.io import read_jsonl, write_json
from lifecycle.labels import labelled
from lifecycle.modeling import context_length
from lifecycle.params.base import load
from lifecycle.params.finetune import EvaluateParams, FinetuneParams
from lifecycle.scoring import (
    classification_metrics,
    language_model_metrics,
    majority_baseline,
    predict_probabilities,
    rounded,
)

log = logging.getLogger("llm-lifecycle.evaluate")
PRETRAINED, FINETUNED = Path("models/pretrained"), Path("models/finetuned")
LM_TEST, TASK_DATA = Path("data/prepared/pretrain/test.jsonl"), Path("data/prepared/finetune")


def language_models(params, device: str, lm_texts: list[str], task_texts: list[str]) -> dict:
    """Perplexity and bits per byte of the pretrained LM (and the domain-adapted one) on general and task text."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    e, f = params.evaluate, params.finetune
    report = {}
    models = {"pretrained": PRETRAINED} | ({"adapted": FINETUNED} if f.task == "causal_lm" else {})
    for name, path in models.items():
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True).to(device).eval()
        report[f"lm_{name}"] = {
            "general": language_model_metrics(model, tokenizer, lm_texts, e.stride, e.batch_size, f"{name} general"),
            "domain": language_model_metrics(model, tokenizer, task_texts, e.stride, e.batch_size, f"{name} domain")}
    return report


def classifier(params, device: str, texts: list[str], references: list[int]) -> dict:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    e, f = params.evaluate, params.finetune
    _, train_labels = labelled("train", f.classes, TASK_DATA)
    tokenizer = AutoTokenizer.from_pretrained(FINETUNED)
    model = AutoModelForSequenceClassification.from_pretrained(FINETUNED, use_safetensors=True).to(device).eval()
    probabilities = predict_probabilities(model, tokenizer, texts, e.batch_size,
                                          min(f.max_length, context_length(model)))
    metrics = classification_metrics(probabilities, references, f.classes, e.calibration_bins)
    baseline = majority_baseline(train_labels, references, f.classes)
    diagram = metrics.pop("reliability_diagram")
    predicted = probabilities.argmax(axis=1)
    write_json("reports/plots/confusion.json", [{"actual": f.classes[r], "predicted": f.classes[p]}
                                                for r, p in zip(references, predicted)])
    write_json("reports/plots/calibration.json", rounded(diagram))
    log.info("accuracy %.4f (majority baseline %.4f), macro-F1 %.4f", metrics["accuracy"], baseline["accuracy"],
             metrics["macro_f1"])
    return rounded(metrics | {"majority_baseline": baseline,
                              "accuracy_over_baseline": metrics["accuracy"] - baseline["accuracy"],
                              "test_examples": len(references)})


def main() -> None:
    params = load(evaluate=EvaluateParams, finetune=FinetuneParams)
    seed_everything(params.seed)
    device = device_type()
    lm_texts = [d["text"] for d in read_jsonl(LM_TEST)]
    task_texts = [d["text"] for d in read_jsonl(TASK_DATA / "test.jsonl", ("text", "label"))]
    report = language_models(params, device, lm_texts, task_texts)
    if params.finetune.task == "classification":
        texts, references = labelled("test", params.finetune.classes, TASK_DATA)
        report["classifier"] = classifier(params, device, texts, references)
    write_json("reports/eval.json", rounded(report))


if __name__ == "__main__":
    from lifecycle.core import run
    run(main)
