"""evaluate: perplexity and bits per byte of the language model; task metrics of the fine-tuned classifier.

models/pretrained (+ models/finetuned) on the test splits -> reports/eval.json, reports/plots/confusion.json
(a dvc confusion plot) and reports/plots/calibration.json (reliability diagram). Classifier metrics go through
the project's local `evaluate` modules in stages/metrics/ (the hub ones cannot load offline).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

from stages import params as P
from stages.core import device_type, read_jsonl, seed_everything, write_json
from stages.metrics import load_metric
from stages.modeling import context_length

log = logging.getLogger("llm-lifecycle.evaluate")
PRETRAINED, FINETUNED = Path("models/pretrained"), Path("models/finetuned")
LM_TEST, TASK_TRAIN, TASK_TEST = (Path("data/prepared/pretrain/test.jsonl"), Path("data/prepared/finetune/train.jsonl"),
                                  Path("data/prepared/finetune/test.jsonl"))


# ---------------------------------------------------------------- language model

def windows(ids: list[int], context: int, stride: int) -> list[tuple[list[int], list[int]]]:
    """(input, labels) windows covering a token sequence: each token after the first is scored exactly once,
    with up to `context` tokens of history; labels already scored by an earlier window are -100."""
    out, scored_until = [], 1  # ids[0] (the EOS before the document) is context only
    for begin in range(0, max(len(ids) - 1, 1), stride):
        end = min(begin + context, len(ids))
        labels = [-100 if i < scored_until else t for i, t in zip(range(begin, end), ids[begin:end])]
        out.append((ids[begin:end], labels))
        scored_until = end
        if end == len(ids):
            break
    return out


def sequence_nll(model, documents: list[list[int]], context: int, stride: int, batch_size: int = 32,
                 progress: str | None = None) -> tuple[float, int]:
    """Summed negative log-likelihood (nats) of every token after the first of each document, and their count."""
    import torch

    pieces = [w for ids in documents for w in windows(ids, context, stride)]
    total, count = 0.0, 0
    for start in tqdm(range(0, len(pieces), batch_size), desc=progress, disable=progress is None, unit="batch"):
        batch = pieces[start:start + batch_size]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.tensor([ids + [0] * (width - len(ids)) for ids, _ in batch])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch])
        with torch.no_grad():
            logits = model(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device)).logits.float()
        targets = labels[:, 1:].to(logits.device)
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                                ignore_index=-100, reduction="sum")
        total += float(nll)
        count += int((targets != -100).sum())
    return total, count


def language_model_metrics(model, tokenizer, texts: list[str], stride: int | None, batch_size: int, name: str) -> dict:
    """Perplexity and bits per byte (comparable across tokenizers) over whole documents."""
    context = context_length(model)
    stride = stride or max(1, context // 2)
    documents = [[tokenizer.eos_token_id] + ids for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    nll, tokens = sequence_nll(model, documents, context, min(stride, context - 1), batch_size, progress=name)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return {"perplexity": round(math.exp(nll / tokens), 4), "bits_per_byte": round(nll / math.log(2) / n_bytes, 5),
            "tokens": tokens, "bytes": n_bytes}


# ---------------------------------------------------------------- classifier

def predict_logits(model, tokenizer, texts: list[str], batch_size: int, max_length: int) -> np.ndarray:
    """Class logits of a classifier with a transformers-like call (PyTorch or ONNX Runtime)."""
    import torch

    out = []
    for start in tqdm(range(0, len(texts), batch_size), desc="classify", unit="batch"):
        batch = tokenizer(texts[start:start + batch_size], truncation=True, max_length=max_length, padding=True,
                          return_tensors="pt").to(model.device)
        with torch.no_grad():
            out.append(model(**batch).logits.float().cpu().numpy())
    return np.concatenate(out)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def predict_probabilities(model, tokenizer, texts: list[str], batch_size: int, max_length: int) -> np.ndarray:
    return softmax(predict_logits(model, tokenizer, texts, batch_size, max_length))


def classification_metrics(probabilities: np.ndarray, references: list[int], classes: list[str], bins: int) -> dict:
    predicted = probabilities.argmax(axis=1).tolist()
    labels = list(range(len(classes)))
    precision = load_metric("precision").compute(predictions=predicted, references=references, labels=labels, average=None)
    recall = load_metric("recall").compute(predictions=predicted, references=references, labels=labels, average=None)
    scores = probabilities[:, 1].tolist() if len(classes) == 2 else probabilities.tolist()
    calibration = load_metric("expected_calibration_error").compute(probabilities=probabilities.tolist(),
                                                                     references=references, n_bins=bins)
    return {
        "accuracy": load_metric("accuracy").compute(predictions=predicted, references=references)["accuracy"],
        "macro_f1": load_metric("f1").compute(predictions=predicted, references=references, average="macro")["f1"],
        "roc_auc": load_metric("roc_auc").compute(prediction_scores=scores, references=references)["roc_auc"],
        "expected_calibration_error": calibration["expected_calibration_error"],
        "precision": dict(zip(classes, precision["precision"])),
        "recall": dict(zip(classes, recall["recall"])),
        "confusion_matrix": load_metric("confusion_matrix").compute(predictions=predicted, references=references,
                                                                    labels=labels)["confusion_matrix"],
        "reliability_diagram": calibration["reliability_diagram"],
    }


def majority_baseline(train_labels: list[int], references: list[int], classes: list[str]) -> dict:
    """Always answer the most frequent training class: the floor a classifier must beat."""
    majority = int(np.bincount(train_labels, minlength=len(classes)).argmax())
    predicted = [majority] * len(references)
    return {"class": classes[majority],
            "accuracy": load_metric("accuracy").compute(predictions=predicted, references=references)["accuracy"],
            "macro_f1": load_metric("f1").compute(predictions=predicted, references=references, average="macro")["f1"]}


def rounded(value, digits: int = 5):
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return round(value, digits) if isinstance(value, float) else value


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    params = P.load()
    e, f = params.evaluate, params.finetune
    seed_everything(params.seed)
    device = device_type()
    lm_texts = [d["text"] for d in read_jsonl(LM_TEST)]
    task_test = read_jsonl(TASK_TEST, ("text", "label"))
    report: dict = {}

    models = {"pretrained": PRETRAINED} | ({"adapted": FINETUNED} if f.task == "causal_lm" else {})
    for name, path in models.items():
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True).to(device).eval()
        report[f"lm_{name}"] = {
            "general": language_model_metrics(model, tokenizer, lm_texts, e.stride, e.batch_size, f"{name} general"),
            "domain": language_model_metrics(model, tokenizer, [d["text"] for d in task_test], e.stride,
                                             e.batch_size, f"{name} domain")}

    if f.task == "classification":
        from stages.finetune import labelled
        index = {c: i for i, c in enumerate(f.classes)}
        references = [index[d["label"]] for d in task_test]
        _, train_labels = labelled("train", f.classes)
        tokenizer = AutoTokenizer.from_pretrained(FINETUNED)
        model = AutoModelForSequenceClassification.from_pretrained(FINETUNED, use_safetensors=True).to(device).eval()
        probabilities = predict_probabilities(model, tokenizer, [d["text"] for d in task_test], e.batch_size,
                                              min(f.max_length, context_length(model)))
        metrics = classification_metrics(probabilities, references, f.classes, e.calibration_bins)
        baseline = majority_baseline(train_labels, references, f.classes)
        diagram = metrics.pop("reliability_diagram")
        report["classifier"] = rounded(metrics | {"majority_baseline": baseline,
                                                  "accuracy_over_baseline": metrics["accuracy"] - baseline["accuracy"],
                                                  "test_examples": len(references)})
        predicted = probabilities.argmax(axis=1)
        write_json("reports/plots/confusion.json", [{"actual": f.classes[r], "predicted": f.classes[p]}
                                                    for r, p in zip(references, predicted)])
        write_json("reports/plots/calibration.json", rounded(diagram))
        log.info("accuracy %.4f (majority baseline %.4f), macro-F1 %.4f", metrics["accuracy"], baseline["accuracy"],
                 metrics["macro_f1"])
    write_json("reports/eval.json", rounded(report))


if __name__ == "__main__":
    from stages.core import run
    run(main)
