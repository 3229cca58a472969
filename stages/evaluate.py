"""evaluate: perplexity and bits per byte of the language model; task metrics of the fine-tuned classifier; each
beside simple baselines scored on the same test text (a unigram model; the majority class, TF-IDF + logistic
regression).

models/pretrained (+ models/finetuned) on the test splits and the texts of evaluate.texts (each a dep in dvc.yaml),
data/tokens (the unigram's train counts) ->
reports/eval.json (with the hardware and software it ran on), reports/plots/confusion.json (a dvc confusion plot),
reports/plots/calibration.json (reliability diagram) and reports/examples/eval/ (per-example results behind each
metric, for paired tests: lifecycle.examples).
"""
from __future__ import annotations

import logging
from pathlib import Path

from lifecycle.baselines import classifier_baselines, train_unigram, unbeaten, versus_baselines, versus_unigram
from lifecycle.core import seed_everything
from lifecycle.environment import describe
from lifecycle.examples import example_file, ids_and_texts, replaced_folder, write_classifier_examples, write_lm_scores
from lifecycle.hardware import device_type
from lifecycle.io import write_json
from lifecycle.labels import labelled
from lifecycle.modeling import context_length
from lifecycle.params.base import load
from lifecycle.params.finetune import EvaluateParams, FinetuneParams
from lifecycle.scoring import (
    classification_metrics,
    language_model_scores,
    predict_probabilities,
    rounded,
)
from lifecycle.texts import named_texts

log = logging.getLogger("llm-lifecycle.evaluate")
PRETRAINED, FINETUNED = Path("models/pretrained"), Path("models/finetuned")
LM_TEST, TASK_DATA = Path("data/prepared/pretrain/test"), Path("data/prepared/finetune")
TOKENS = Path("data/tokens")


def language_models(params, device: str, corpora: dict, folder: Path) -> dict:
    """Perplexity and bits per byte of the pretrained LM (and the domain-adapted one) on general and task text and
    the texts of evaluate.texts (`corpora`: name -> (ids, texts)), beside a unigram model's of the train tokens
    (for the adapted LM only when it kept the pretrained tokenizer); each document's NLL to
    lm_<model>.<text>.jsonl in `folder`."""
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
        for text, (ids, texts) in corpora.items():
            metrics, per_document = language_model_scores(model, tokenizer, texts, e.stride, e.batch_size,
                                                          f"{name} {text}")
            write_lm_scores(example_file(folder, f"lm_{name}.{text}"), ids, per_document)
            same_tokens = name == "pretrained" or f.base is None
            report[f"lm_{name}"][text] = versus_unigram(metrics, unigram, tokenizer, texts) if same_tokens else metrics
    return report


def classifier(params, device: str, ids: list[str], folder: Path) -> dict:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    e, f = params.evaluate, params.finetune
    train, (texts, references) = labelled("train", f.classes, TASK_DATA), labelled("test", f.classes, TASK_DATA)
    tokenizer = AutoTokenizer.from_pretrained(FINETUNED)
    model = AutoModelForSequenceClassification.from_pretrained(FINETUNED, use_safetensors=True).to(device).eval()
    probabilities = predict_probabilities(model, tokenizer, texts, e.batch_size,
                                          min(f.max_length, context_length(model)))
    write_classifier_examples(example_file(folder, "classifier"), ids, references, probabilities)
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
    own = named_texts(params.evaluate.texts)  # before any work: each a DVC dep, readable, never empty
    seed_everything(params.seed)
    device = device_type()
    corpora = {"general": ids_and_texts(LM_TEST),
               "domain": ids_and_texts(TASK_DATA / "test", ("text", "label"))} | own
    with replaced_folder("eval") as folder:  # a failure on the way changes neither the examples nor eval.json
        report = language_models(params, device, corpora, folder)
        if params.finetune.task == "classification":
            report["classifier"] = classifier(params, device, corpora["domain"][0], folder)
        write_json("reports/eval.json", rounded(report) | {"environment": describe()})


if __name__ == "__main__":
    from lifecycle.core import run
    run(main)
