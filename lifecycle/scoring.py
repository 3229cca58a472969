"""Scoring: log-likelihoods, perplexity and bits per byte of a language model; a classifier's predictions and
task metrics (through the project's local `evaluate` modules in lifecycle/metrics/: the hub ones cannot load
offline)."""
from __future__ import annotations

import math

import numpy as np
from tqdm import tqdm

from lifecycle.metrics import load_metric
from lifecycle.modeling import context_length

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


def token_log_likelihoods(model, pieces: list[tuple[list[int], list[int]]], batch_size: int = 32,
                          progress: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For each (input ids, labels) piece: the summed log-likelihood of its labelled tokens and their count. The
    first token is context only; labels of -100 are not scored. The one scorer behind perplexity and the audit."""
    import torch

    sums, counts = [], []
    for start in tqdm(range(0, len(pieces), batch_size), desc=progress, disable=progress is None, unit="batch"):
        batch = pieces[start:start + batch_size]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.tensor([ids + [0] * (width - len(ids)) for ids, _ in batch])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch])
        with torch.no_grad():
            logits = model(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device)).logits.float()
        targets = labels[:, 1:].to(logits.device)
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), targets, ignore_index=-100,
                                                reduction="none")
        sums.append(-nll.double().sum(dim=1).cpu().numpy())
        counts.append((targets != -100).sum(dim=1).cpu().numpy())
    return np.concatenate(sums), np.concatenate(counts)


def scored_windows(model, documents: list[list[int]], context: int, stride: int, batch_size: int = 32,
                   progress: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log-likelihood and scored-token count of each window of each document (in document order), and the index of
    the document each window belongs to."""
    per_document = [windows(ids, context, stride) for ids in documents]
    owner = np.repeat(np.arange(len(documents)), [len(w) for w in per_document])
    log_likelihoods, counts = token_log_likelihoods(model, [w for ws in per_document for w in ws], batch_size,
                                                    progress)
    return log_likelihoods, counts, owner


def sequence_nll(model, documents: list[list[int]], context: int, stride: int, batch_size: int = 32,
                 progress: str | None = None) -> tuple[float, int]:
    """Summed negative log-likelihood (nats) of every token after the first of each document, and their count."""
    log_likelihoods, counts, _ = scored_windows(model, documents, context, stride, batch_size, progress)
    return float(-log_likelihoods.sum()), int(counts.sum())


def document_nll(model, documents: list[list[int]], context: int, stride: int, batch_size: int = 32,
                 progress: str | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Per document: the summed negative log-likelihood (nats) of its tokens after the first (its windows summed
    back) and their count; with the total NLL summed over windows exactly as `sequence_nll` sums it."""
    log_likelihoods, counts, owner = scored_windows(model, documents, context, stride, batch_size, progress)
    nll = np.bincount(owner, weights=-log_likelihoods, minlength=len(documents))
    tokens = np.bincount(owner, weights=counts, minlength=len(documents)).astype(np.int64)
    return nll, tokens, float(-log_likelihoods.sum())


def sentence_log_likelihoods(model, tokenizer, sentences: list[str], batch_size: int, score: str = "sum",
                             context: int | None = None, progress: str | None = None) -> np.ndarray:
    """log p(sentence) under a causal LM: every token scored after an end-of-text token; sum or mean per token."""
    encoded = tokenizer(sentences, add_special_tokens=False)["input_ids"]
    pieces = [([tokenizer.eos_token_id] + ids)[:context] if context else [tokenizer.eos_token_id] + ids
              for ids in encoded]
    log_likelihoods, counts = token_log_likelihoods(model, [(ids, ids) for ids in pieces], batch_size, progress)
    return log_likelihoods / counts if score == "mean" else log_likelihoods


def language_model_scores(model, tokenizer, texts: list[str], stride: int | None, batch_size: int,
                          name: str) -> tuple[dict, dict]:
    """Perplexity, bits per byte and bits per character (both comparable across tokenizers; per character also
    across encodings) over whole documents, and per document the arrays they come from: {"nll": nats, "tokens":
    scored tokens, "bytes": UTF-8 bytes of the text}."""
    context = context_length(model)
    stride = stride or max(1, context // 2)
    documents = [[tokenizer.eos_token_id] + ids for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    nll, counts, total = document_nll(model, documents, context, min(stride, context - 1), batch_size, progress=name)
    per_document = {"nll": nll, "tokens": counts, "bytes": np.array([len(t.encode("utf-8")) for t in texts])}
    tokens, n_bytes = int(counts.sum()), int(per_document["bytes"].sum())
    characters = sum(len(t) for t in texts)  # Unicode code points
    metrics = {"perplexity": round(math.exp(total / tokens), 4),
               "bits_per_byte": round(total / math.log(2) / n_bytes, 5), "tokens": tokens, "bytes": n_bytes,
               "bits_per_character": round(total / math.log(2) / characters, 5), "characters": characters}
    return metrics, per_document


def language_model_metrics(model, tokenizer, texts: list[str], stride: int | None, batch_size: int, name: str) -> dict:
    """Perplexity and bits per byte (comparable across tokenizers) over whole documents."""
    return language_model_scores(model, tokenizer, texts, stride, batch_size, name)[0]


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
    prf = load_metric("precision_recall_f1")
    per_class = prf.compute(predictions=predicted, references=references, labels=labels, average=None)
    scores = probabilities[:, 1].tolist() if len(classes) == 2 else probabilities.tolist()
    calibration = load_metric("expected_calibration_error").compute(probabilities=probabilities.tolist(),
                                                                     references=references, n_bins=bins)
    return {
        "accuracy": load_metric("accuracy").compute(predictions=predicted, references=references)["accuracy"],
        "macro_f1": prf.compute(predictions=predicted, references=references, average="macro")["f1"],
        "roc_auc": load_metric("roc_auc").compute(prediction_scores=scores, references=references)["roc_auc"],
        "expected_calibration_error": calibration["expected_calibration_error"],
        "precision": dict(zip(classes, per_class["precision"])),
        "recall": dict(zip(classes, per_class["recall"])),
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
            "macro_f1": load_metric("precision_recall_f1").compute(predictions=predicted, references=references,
                                                                   average="macro")["f1"]}


def rounded(value, digits: int = 5):
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return round(value, digits) if isinstance(value, float) else value
