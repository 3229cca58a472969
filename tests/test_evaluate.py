"""evaluate: perplexity with and without the sliding window on a toy model whose probabilities we know, per document
too; the simple baselines (majority class, TF-IDF + logistic regression, unigram) beside the models on the same test
text; per-example files that reproduce eval.json's metrics; the environment it ran on."""
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lifecycle.baselines import (
    TITLES,
    classifier_baselines,
    unbeaten,
    unigram_log_probabilities,
    unigram_metrics,
    versus_baselines,
)
from lifecycle.environment import describe
from lifecycle.examples import ids_and_texts, read_examples
from lifecycle.io import read_jsonl
from lifecycle.labels import labelled
from lifecycle.params.finetune import EvaluateParams
from lifecycle.scoring import document_nll, majority_baseline, sequence_nll, windows
from tests.conftest import default_params, run_stage, the_error, tiny_params, write_params

VOCAB = 5
# A bigram model: p(next | previous) is row `previous` of this table, whatever came before.
TABLE = torch.tensor(np.random.default_rng(0).dirichlet(np.ones(VOCAB), size=VOCAB), dtype=torch.float32)


class Bigram(torch.nn.Module):
    device = torch.device("cpu")

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=torch.log(TABLE)[input_ids])


DOCUMENTS = [[0, 3, 1, 4, 4, 2, 0, 1, 3, 2, 2, 4], [0, 2, 2], [0, 1]]


def expected_nll() -> tuple[float, int]:
    pairs = [(a, b) for doc in DOCUMENTS for a, b in zip(doc, doc[1:])]
    return -sum(math.log(float(TABLE[a, b])) for a, b in pairs), len(pairs)


def test_perplexity_without_window_is_exp_mean_nll():
    nll, count = sequence_nll(Bigram(), DOCUMENTS, context=64, stride=32)
    want, n = expected_nll()
    assert count == n
    assert math.exp(nll / count) == pytest.approx(math.exp(want / n), rel=1e-5)


@pytest.mark.parametrize("context,stride", [(4, 2), (3, 1), (5, 4), (2, 1)])
def test_perplexity_with_sliding_window_is_the_same(context, stride):
    nll, count = sequence_nll(Bigram(), DOCUMENTS, context=context, stride=stride, batch_size=3)
    want, n = expected_nll()
    assert count == n
    assert nll == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("context,stride", [(64, 32), (4, 2), (3, 1), (2, 1)])
def test_document_nll_sums_each_documents_windows_back_to_it(context, stride):
    nll, tokens, total = document_nll(Bigram(), DOCUMENTS, context=context, stride=stride, batch_size=2)
    want = [-sum(math.log(float(TABLE[a, b])) for a, b in zip(doc, doc[1:])) for doc in DOCUMENTS]
    assert tokens.tolist() == [len(doc) - 1 for doc in DOCUMENTS]
    assert nll.tolist() == pytest.approx(want, rel=1e-5)
    assert (total, int(tokens.sum())) == sequence_nll(Bigram(), DOCUMENTS, context=context, stride=stride,
                                                      batch_size=2)  # the very same float: reports do not move


def test_windows_score_every_token_after_the_first_exactly_once():
    ids = list(range(10, 21))
    scored = [t for _, labels in windows(ids, context=4, stride=3) for t in labels if t != -100]
    assert scored == ids[1:]
    assert all(len(inputs) <= 4 for inputs, _ in windows(ids, context=4, stride=3))


def test_majority_baseline_answers_the_most_frequent_training_class():
    baseline = majority_baseline([1, 1, 0], references=[1, 0, 1, 1], classes=["neg", "pos"])
    assert baseline["class"] == "pos" and baseline["accuracy"] == 0.75
    assert baseline["macro_f1"] == pytest.approx((0 + 2 * 0.75 / 1.75) / 2)


# ---------------------------------------------------------------- baselines

def test_versus_baselines_names_the_most_accurate_and_the_margin_over_it():
    baselines = {"majority": {"accuracy": 0.6}, "tfidf_logreg": {"accuracy": 0.78}}
    versus = versus_baselines(0.75, baselines)
    assert versus["best_baseline"] == "tfidf_logreg"
    assert versus["margin_over_baselines"] == pytest.approx(-0.03)
    assert versus["beats_baselines"] is False
    assert versus_baselines(0.8, baselines)["beats_baselines"] is True
    assert versus_baselines(0.78, baselines)["beats_baselines"] is False  # a tie does not beat it


def test_unbeaten_states_each_baseline_the_model_does_not_beat():
    baselines = {"majority": {"accuracy": 0.6}, "tfidf_logreg": {"accuracy": 0.784}}
    assert unbeaten(0.751, baselines) == [
        "the fine-tuned classifier (accuracy 0.751) does not beat the TF-IDF + logistic regression baseline (0.784) "
        "on the same test split"]
    assert unbeaten(0.9, baselines) == []


def test_unigram_metrics_are_add_one_smoothed_train_frequencies_on_the_documents():
    log_p = unigram_log_probabilities(np.array([[0, 1, 1], [1, 2, 1]]), vocab_size=4)  # counts 1 4 1 0, +1 each
    assert np.exp(log_p).tolist() == pytest.approx([2 / 10, 5 / 10, 2 / 10, 1 / 10])
    metrics = unigram_metrics(log_p, [[1, 3], [0]], n_bytes=6)
    nll = -(math.log(0.5) + math.log(0.1) + math.log(0.2))
    assert metrics["unigram_perplexity"] == pytest.approx(math.exp(nll / 3))
    assert metrics["unigram_bits_per_byte"] == pytest.approx(nll / math.log(2) / 6)


def test_a_bad_baseline_param_stops_evaluate_with_one_line(project):
    params = default_params()
    params["evaluate"]["baselines"] = {"tfidf": {"C": 0.0}}
    write_params(project, params)
    assert the_error(run_stage("evaluate", project)) == \
        "error: params.yaml: evaluate.baselines.tfidf.C = 0.0: must be greater than 0"


@pytest.fixture(scope="module")
def evaluated(tiny_models, tmp_path_factory) -> tuple[Path, dict, str]:
    """The evaluate stage run once on a copy of tiny_models: (project, eval.json, stderr)."""
    directory = tmp_path_factory.mktemp("evaluated") / "project"
    shutil.copytree(tiny_models, directory)
    result = run_stage("evaluate", directory)
    assert result.returncode == 0, result.stderr
    return directory, json.loads((directory / "reports/eval.json").read_text()), result.stderr


def tiny_split(project: Path, split: str) -> tuple[list[str], list[int]]:
    return labelled(split, tiny_params()["finetune"]["classes"], project / "data/prepared/finetune")


def test_eval_json_reports_the_classifier_baselines(evaluated):
    _, report, _ = evaluated
    c = report["classifier"]
    assert set(c["baselines"]) == {"majority", "tfidf_logreg"}
    assert set(c["baselines"]["majority"]) == {"class", "accuracy", "macro_f1"}
    assert set(c["baselines"]["tfidf_logreg"]) == {"accuracy", "macro_f1", "train_examples"}
    assert c["majority_baseline"] == c["baselines"]["majority"]
    assert c["accuracy_over_baseline"] == pytest.approx(c["accuracy"] - c["majority_baseline"]["accuracy"], abs=2e-5)


def test_tfidf_baseline_scores_what_sklearn_gives_on_the_same_files(evaluated):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    project, report, _ = evaluated
    (train_texts, train_labels), (test_texts, test_labels) = tiny_split(project, "train"), tiny_split(project, "test")
    vectorizer = TfidfVectorizer(sublinear_tf=True)
    model = LogisticRegression(C=4.0, max_iter=1000).fit(vectorizer.fit_transform(train_texts), train_labels)
    predicted = model.predict(vectorizer.transform(test_texts))
    tfidf = report["classifier"]["baselines"]["tfidf_logreg"]
    assert tfidf["train_examples"] == len(train_texts)
    assert tfidf["accuracy"] == pytest.approx(accuracy_score(test_labels, predicted), abs=1e-5)
    assert tfidf["macro_f1"] == pytest.approx(f1_score(test_labels, predicted, average="macro"), abs=1e-5)


def test_margin_is_the_accuracy_over_the_best_baseline_and_beats_agrees(evaluated):
    c = evaluated[1]["classifier"]
    best = max(c["baselines"], key=lambda name: c["baselines"][name]["accuracy"])
    assert c["best_baseline"] == best
    assert c["margin_over_baselines"] == pytest.approx(c["accuracy"] - c["baselines"][best]["accuracy"], abs=2e-5)
    assert c["beats_baselines"] is (c["margin_over_baselines"] > 0)


def test_a_classifier_that_does_not_beat_a_baseline_is_named_in_a_warning_line(evaluated):
    _, report, stderr = evaluated
    c = report["classifier"]
    assert c["beats_baselines"] is False  # the tiny classifier (one epoch on a few hundred reviews) loses
    lost = [name for name, b in c["baselines"].items() if b["accuracy"] >= c["accuracy"]]
    warnings = [line for line in stderr.splitlines() if "llm-lifecycle.evaluate: warning: " in line]
    assert len(warnings) == len(lost) >= 1
    assert f"does not beat the {TITLES[c['best_baseline']]} baseline " \
           f"({c['baselines'][c['best_baseline']]['accuracy']:.3f}) on the same test split" in "\n".join(warnings)


def test_unigram_baseline_is_scored_on_the_lm_test_text_from_train_counts(evaluated):
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    project, report, _ = evaluated
    tokenizer = AutoTokenizer.from_pretrained(project / "models/pretrained")
    train = load_from_disk(str(project / "data/tokens"))["train"].with_format("numpy")[:]["input_ids"]
    p = (np.bincount(train.reshape(-1), minlength=len(tokenizer)) + 1.0) / (train.size + len(tokenizer))
    texts = [d["text"] for d in read_jsonl(project / "data/prepared/pretrain/test")]
    ids = [t for ids in tokenizer(texts, add_special_tokens=False)["input_ids"] for t in ids]
    general = report["lm_pretrained"]["general"]
    assert len(ids) == general["tokens"]
    assert general["unigram_perplexity"] == pytest.approx(math.exp(-np.log(p[ids]).mean()), rel=1e-5)
    for text in ("general", "domain"):
        m = report["lm_pretrained"][text]
        assert math.isfinite(m["unigram_perplexity"]) and m["unigram_perplexity"] > 1
        assert m["unigram_bits_per_byte"] == pytest.approx(
            math.log2(m["unigram_perplexity"]) * m["tokens"] / m["bytes"], rel=1e-4)
        assert m["beats_unigram"] is (m["perplexity"] < m["unigram_perplexity"])


def test_baselines_are_deterministic(evaluated):
    project = evaluated[0]
    p = EvaluateParams().baselines
    train, test = tiny_split(project, "train"), tiny_split(project, "test")
    first, second = (classifier_baselines(p, 0, train, test, ["negative", "positive"]) for _ in range(2))
    assert first == second


# ---------------------------------------------------------------- per-example results and environment

def test_evaluate_writes_one_examples_file_per_metric_block(evaluated):
    project, report, _ = evaluated
    folder = project / "reports/examples/eval"
    assert sorted(p.name for p in folder.iterdir()) == [
        "classifier.jsonl", "lm_pretrained.domain.jsonl", "lm_pretrained.general.jsonl"]
    assert sorted(p.name for p in folder.parent.iterdir()) == ["eval"]  # no temporary folder left beside it
    assert set(report) == {"lm_pretrained", "classifier", "environment"}


def test_classifier_examples_are_the_test_split_and_reproduce_the_accuracy(evaluated):
    project, report, _ = evaluated
    records = read_examples(project / "reports/examples/eval/classifier.jsonl")
    ids = ids_and_texts(project / "data/prepared/finetune/test")[0]
    _, references = tiny_split(project, "test")
    assert [r["id"] for r in records] == sorted(ids) and len(set(ids)) == len(ids)
    label_of = dict(zip(ids, references))
    assert [r["label"] for r in records] == [label_of[r["id"]] for r in records]
    probabilities = np.array([r["probabilities"] for r in records])
    assert probabilities.shape == (len(ids), 2)
    assert probabilities.sum(axis=1) == pytest.approx(np.ones(len(ids)), abs=1e-5)
    accuracy = np.mean(probabilities.argmax(axis=1) == np.array([r["label"] for r in records]))
    assert report["classifier"]["accuracy"] == pytest.approx(accuracy, abs=1e-5)
    assert report["classifier"]["test_examples"] == len(records)


@pytest.mark.parametrize("text,split", [("general", "pretrain"), ("domain", "finetune")])
def test_lm_examples_reproduce_perplexity_and_bits_per_byte(evaluated, text, split):
    project, report, _ = evaluated
    records = read_examples(project / f"reports/examples/eval/lm_pretrained.{text}.jsonl")
    ids, texts = ids_and_texts(project / f"data/prepared/{split}/test")
    assert [r["id"] for r in records] == sorted(ids) and len(set(ids)) == len(ids)
    size_of = {i: len(t.encode("utf-8")) for i, t in zip(ids, texts)}
    assert all(r["bytes"] == size_of[r["id"]] and r["tokens"] >= 1 for r in records)
    nll, tokens, n_bytes = (sum(r[k] for r in records) for k in ("nll", "tokens", "bytes"))
    m = report["lm_pretrained"][text]
    assert (tokens, n_bytes) == (m["tokens"], m["bytes"])
    assert round(math.exp(nll / tokens), 4) == pytest.approx(m["perplexity"], abs=1.01e-4)
    assert round(nll / math.log(2) / n_bytes, 5) == pytest.approx(m["bits_per_byte"], abs=1.01e-5)


def test_eval_json_names_the_hardware_and_software(evaluated):
    environment = evaluated[1]["environment"]
    here = describe()
    assert set(environment) == set(here)
    assert {k: environment[k] for k in ("cpu", "cpu_flags", "cores", "python", "torch")} == \
        {k: here[k] for k in ("cpu", "cpu_flags", "cores", "python", "torch")}
