"""Drift of served traffic against the training data, and the A/B comparison."""
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from lifecycle import drift as M
from lifecycle.io import read_jsonl
from lifecycle.params import schema as P
from tests.conftest import run_stage, the_error, tiny_params, write_params


def test_psi_is_zero_for_the_same_distribution_and_grows_with_the_shift():
    assert M.psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0)
    assert 0 < M.psi([10, 20, 30], [12, 20, 28]) < M.psi([10, 20, 30], [30, 20, 10])


def test_js_divergence_is_bounded_by_one_bit():
    assert M.js_divergence(Counter(a=3, b=1), Counter(a=6, b=2)) == pytest.approx(0)
    assert M.js_divergence(Counter(a=1), Counter(b=1)) == pytest.approx(1)


def test_histogram_uses_reference_quantiles():
    edges = M.quantile_edges(list(range(1, 101)), 4)
    assert edges == [25.75, 50.5, 75.25]
    assert M.histogram(list(range(1, 101)), edges) == [25, 25, 25, 25]


def test_label_shift_compares_shares():
    shift = M.label_shift(["neg"] * 50 + ["pos"] * 50, ["neg"] * 9 + ["pos"])
    assert shift["reference"] == {"neg": 0.5, "pos": 0.5} and shift["predicted"] == {"neg": 0.9, "pos": 0.1}
    assert shift["psi"] > 0.2


def test_ab_comparison_reports_each_variant_and_the_split():
    records = ([{"endpoint": "completions", "variant": "a", "latency_ms": 10.0, "outcome": "ok",
                 "completion_tokens": 4}] * 30
               + [{"endpoint": "completions", "variant": "b", "latency_ms": 30.0, "outcome": "ok",
                   "completion_tokens": 6}] * 9
               + [{"endpoint": "completions", "variant": "b", "latency_ms": 5.0, "outcome": "timeout"}])
    ab = P.AbTest.model_construct(variants=["a", "b"], split=0.25)
    out = M.ab_comparison(records, ab)
    assert out["observed_b_share"] == 0.25 and out["sample_ratio_p_value"] > 0.5
    assert out["by_variant"]["a"]["latency_p50_ms"] == 10.0 and out["by_variant"]["b"]["ok_rate"] == 0.9
    assert out["by_variant"]["b"]["outcomes"] == {"ok": 9, "timeout": 1}
    assert out["latency_p50_b_over_a"] == 3.0


@pytest.fixture(scope="module")
def classify_log(tiny_models):
    """A request log as serve writes it: texts with the tiny classifier's predicted labels."""
    import torch

    from lifecycle.variants import load_classifier

    model, tokenizer = load_classifier("pytorch", tiny_models / "models")

    def log(texts: list[str]) -> list[dict]:
        with torch.no_grad():
            logits = model(**tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")).logits
        return [{"endpoint": "classify", "variant": "pytorch", "text": t, "label": model.config.id2label[i],
                 "latency_ms": 5.0, "outcome": "ok"} for t, i in zip(texts, logits.argmax(-1).tolist())]
    return log


def test_training_distribution_drifts_less_than_another_source(tiny_models, classify_log):
    prepared = tiny_models / "data/prepared"
    reference = read_jsonl(prepared / "finetune/train.jsonl")
    same = [d["text"] for split in ("validation", "test") for d in read_jsonl(prepared / f"finetune/{split}.jsonl")]
    other = M.lines_of([d["text"] for d in read_jsonl(prepared / "pretrain/train.jsonl")])[:len(same)]
    tokenize = M.tokenizer_function(tiny_models / "models/tokenizer")
    settings = P.MonitorParams(bins=5)
    near = M.monitor(classify_log(same), reference, [], tokenize, settings, None)["drift"]["classify"]
    far = M.monitor(classify_log(other), reference, [], tokenize, settings, None)["drift"]["classify"]
    assert near["token_js"] < far["token_js"], (near["token_js"], far["token_js"])
    assert near["length_psi"] < far["length_psi"], (near["length_psi"], far["length_psi"])
    assert "length" in far["drifted"]


@pytest.fixture
def monitored(tiny_models, tmp_path) -> Path:
    project = tmp_path / "project"
    shutil.copytree(tiny_models, project)
    params = tiny_params()
    params["monitor"] = {"log": "requests.jsonl", "bins": 5}
    params["serve"] = {"ab": {"variants": ["int8_dynamic", "pytorch"], "split": 0.5}}
    write_params(project, params)
    return project


def test_stage_writes_the_report(monitored):
    records = [{"endpoint": "completions", "variant": v, "prompt": "To be, or not to be", "completion": " x",
                "completion_tokens": 1, "latency_ms": 12.5, "outcome": "ok"} for v in ("int8_dynamic", "pytorch") * 3]
    records += [{"endpoint": "classify", "variant": "pytorch", "text": "A fine film.", "label": "positive",
                 "latency_ms": 3.0, "outcome": "ok"}]
    (monitored / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    result = run_stage("monitor", monitored)
    assert result.returncode == 0, result.stderr
    report = json.loads((monitored / "reports/monitor.json").read_text())
    assert report["requests"] == {"total": 7, "completions": 6, "classify": 1, "not_ok": 0}
    assert set(report["drift"]) == {"classify", "completions"}
    assert report["ab"]["by_variant"]["int8_dynamic"]["requests"] == 3
    assert json.loads((monitored / "reports/plots/monitor_lengths_classify.json").read_text())[0]["bin"] == 0


def test_bad_log_row_is_named(monitored):
    (monitored / "requests.jsonl").write_text('{"endpoint": "classify", "text": "ok"}\n'
                                              '{"endpoint": "embed", "text": "x"}\n')
    assert the_error(run_stage("monitor", monitored)) == \
        "error: requests.jsonl: row 2: endpoint 'embed': expected 'completions' or 'classify'"


def test_missing_log_is_named(monitored):
    assert the_error(run_stage("monitor", monitored)) == \
        "error: params.yaml: monitor.log = 'requests.jsonl': not found (point it at a serve request log)"


def test_bad_monitor_params_stop_the_stage(monitored):
    params = tiny_params()
    params["monitor"] = {"bins": 1}
    write_params(monitored, params)
    assert the_error(run_stage("monitor", monitored)) == \
        "error: params.yaml: monitor.bins = 1: must be between 2 and 100"
