"""Simple baselines a model must beat to be worth its cost: the majority class and TF-IDF + logistic regression
for the classifier, add-one smoothed unigram frequencies for the language model."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from lifecycle.core import StageError
from lifecycle.metrics import load_metric
from lifecycle.params.finetune import Baselines, TfidfBaseline
from lifecycle.scoring import majority_baseline

# How a log line names each baseline of eval.json's classifier.baselines.
TITLES = {"majority": "majority-class", "tfidf_logreg": "TF-IDF + logistic regression"}

# ---------------------------------------------------------------- classifier


def task_scores(predicted: list[int], references: list[int]) -> dict:
    return {"accuracy": load_metric("accuracy").compute(predictions=predicted, references=references)["accuracy"],
            "macro_f1": load_metric("precision_recall_f1").compute(predictions=predicted, references=references,
                                                                   average="macro")["f1"]}


def tfidf_logreg(p: TfidfBaseline, seed: int):
    """The bag-of-words classifier: word n-gram TF-IDF into an L2-regularised logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    return Pipeline([
        ("tfidf", TfidfVectorizer(ngram_range=(1, p.ngram_max), sublinear_tf=p.sublinear_tf,
                                  max_features=p.max_features)),
        ("logreg", LogisticRegression(C=p.C, max_iter=1000, random_state=seed))])


def tfidf_logreg_baseline(p: TfidfBaseline, seed: int, train: tuple[list[str], list[int]],
                          test: tuple[list[str], list[int]]) -> dict:
    """Accuracy and macro-F1 on the test split of the TF-IDF model trained on the train split."""
    model = tfidf_logreg(p, seed).fit(*train)
    predicted = [int(c) for c in model.predict(test[0])]
    return task_scores(predicted, test[1]) | {"train_examples": len(train[0])}


def classifier_baselines(p: Baselines, seed: int, train: tuple[list[str], list[int]],
                         test: tuple[list[str], list[int]], classes: list[str]) -> dict:
    """Every enabled baseline, by its eval.json name, trained on `train` (texts, class ids) and scored on `test`."""
    out = {"majority": majority_baseline(train[1], test[1], classes)}
    if p.tfidf.enabled:
        out["tfidf_logreg"] = tfidf_logreg_baseline(p.tfidf, seed, train, test)
    return out


def versus_baselines(accuracy: float, baselines: dict) -> dict:
    """The best baseline by accuracy, the model's accuracy margin over it, and whether the margin is positive."""
    best = max(baselines, key=lambda name: baselines[name]["accuracy"])
    margin = accuracy - baselines[best]["accuracy"]
    return {"best_baseline": best, "margin_over_baselines": margin, "beats_baselines": margin > 0}


def unbeaten(accuracy: float, baselines: dict) -> list[str]:
    """One sentence per baseline at least as accurate as the model."""
    return [f"the fine-tuned classifier (accuracy {accuracy:.3f}) does not beat the {TITLES.get(name, name)} "
            f"baseline ({b['accuracy']:.3f}) on the same test split"
            for name, b in baselines.items() if b["accuracy"] >= accuracy]


# ---------------------------------------------------------------- language model

def unigram_log_probabilities(train_ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """log p(token) of add-one smoothed train token frequencies (lifecycle.pretraining.unigram_perplexity's)."""
    ids = np.asarray(train_ids).reshape(-1)
    counts = np.bincount(ids, minlength=vocab_size).astype(np.float64) + 1.0
    return np.log(counts / counts.sum())


def train_unigram(tokens_dir: Path, vocab_size: int) -> np.ndarray:
    """The unigram model of the packed train split of data/tokens (the tokenize stage's output)."""
    from datasets import load_from_disk

    train = load_from_disk(str(tokens_dir))["train"].with_format("numpy")[:]["input_ids"]
    return unigram_log_probabilities(train, vocab_size)


def unigram_metrics(log_p: np.ndarray, documents: list[list[int]], n_bytes: int) -> dict:
    """Perplexity and bits per byte of the unigram model on the tokens a causal LM scores: each document's tokens
    (an LM's leading EOS is context only, so `documents` hold the text's own tokens)."""
    ids = np.fromiter((t for doc in documents for t in doc), dtype=np.int64)
    if ids.size and ids.max() >= len(log_p):
        raise StageError(f"token id {int(ids.max())} is outside the train tokens' vocabulary ({len(log_p)}): "
                         "the tokenizer changed since data/tokens was made (run dvc repro)")
    nll = float(-log_p[ids].sum())
    return {"unigram_perplexity": math.exp(nll / max(ids.size, 1)),
            "unigram_bits_per_byte": nll / math.log(2) / max(n_bytes, 1)}


def versus_unigram(metrics: dict, log_p: np.ndarray, tokenizer, texts: list[str]) -> dict:
    """A language model's metrics on `texts` (scoring.language_model_metrics) with the unigram model's beside them."""
    documents = tokenizer(texts, add_special_tokens=False)["input_ids"]
    unigram = unigram_metrics(log_p, documents, metrics["bytes"])
    return metrics | unigram | {"beats_unigram": metrics["perplexity"] < unigram["unigram_perplexity"]}
