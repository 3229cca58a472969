"""evaluate: perplexity and bits per byte of the language model; task metrics of the fine-tuned classifier; each
beside simple baselines scored on the same test text (a unigram model; the majority class, TF-IDF + logistic
regression).

models/pretrained (+ models/finetuned) on the test splits, data/tokens (the unigram's train counts) ->
reports/eval.json, reports/plots/confusion.json (a dvc confusion plot) and reports/plots/calibration.json
(reliability diagram).
"""
from __future__ import annotations

import logging
from pathlib import Path

from lifecycle.baselines import classifier_baselines, train_unigram, unbeaten, versus_baselines, versus_unigram
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
    predict_probabilities,
    rounded,
)

log = logging.getLogger("llm-lifecycle.evaluate")
PRETRAINED, FINETUNED = Path("models/pretrained"), Path("models/finetuned")
LM_TEST, TASK_DATA = Path("data/prepared/pretrain/test.jsonl"), Path("data/prepared/finetune")
TOKENS = Path("data/tokens")


def language_models(params, device: str, lm_texts: list[str], task_texts: list[str]) -> dict:
    """Perplexity and bits per byte of the pretrained LM (and the domain-adapted one) on general and task text,
    beside a unigram model's of the train tokens (for the adapted LM only when it kept the pretrained tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    e, f = params.evaluate, params.finetune
    report, unigram = {}, None
    models = {"pretrained": PRETRAINED} | ({"adapted": FINETUNED} if f.task == "causal_lm" else {})
    for name, path in models.items():
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True).to(device).eval()
        if name == "pretrained":
            unigram = train_unigram(TOKENS, len(tokenizer))
        report[f"lm_{name}"] = {}
        for text, texts in (("general", lm_texts), ("domain", task_texts)):
            metrics = language_model_metrics(model, tokenizer, texts, e.stride, e.batch_size, f"{name} {text}")
            same_tokens = name == "pretrained" or f.base is None
            report[f"lm_{name}"][text] = versus_unigram(metrics, unigram, tokenizer, texts) if same_tokens else metrics
    return report


def classifier(params, device: str, texts: list[str], references: list[int]) -> dict:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    e, f = params.evaluate, params.finetune
    train = labelled("train", f.classes, TASK_DATA)
    tokenizer = AutoTokenizer.from_pretrained(FINETUNED)
    model = AutoModelForSequenceClassification.from_pretrained(FINETUNED, use_safetensors=True).to(device).eval()
    probabilities = predict_probabilities(model, tokenizer, texts, e.batch_size,
                                          min(f.max_length, context_length(model)))
    metrics = classification_metrics(probabilities, references, f.classes, e.calibration_bins)
    baselines = classifier_baselines(e.baselines, params.seed, train, (texts, references), f.classes)
    versus = versus_baselines(metrics["accuracy"], baselines)
    diagram = metrics.pop("reliability_diagram")
    predicted = probabilities.argmax(axis=1)
    write_json("reports/plots/confusion.json", [{"actual": f.classes[r], "predicted": f.classes[p]}
                                                for r, p in zip(references, predicted)])
    write_json("reports/plots/calibration.json", rounded(diagram))
    log.info("accuracy %.4f (best baseline %s %.4f), macro-F1 %.4f", metrics["accuracy"], versus["best_baseline"],
             baselines[versus["best_baseline"]]["accuracy"], metrics["macro_f1"])
    for line in unbeaten(metrics["accuracy"], baselines):
        log.warning("warning: %s", line)
    majority = baselines["majority"]
    return rounded(metrics | {"majority_baseline": majority,
                              "accuracy_over_baseline": metrics["accuracy"] - majority["accuracy"],
                              "baselines": baselines} | versus | {"test_examples": len(references)})


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
