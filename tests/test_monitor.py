"""Drift of served traffic against the training data, and the A/B comparison."""
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from lifecycle import drift as M
from lifecycle.io import read_jsonl, shards
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
    reference = read_jsonl(prepared / "finetune/train")
    same = [d["text"] for split in ("validation", "test") for d in read_jsonl(prepared / f"finetune/{split}")]
    other = M.lines_of([d["text"] for d in read_jsonl(prepared / "pretrain/train")])[:len(same)]
    tokenize = M.tokenizer_function(tiny_models / "models/tokenizer")
    settings = P.MonitorParams(bins=5)
    near = M.monitor(classify_log(same), reference, [], tokenize, settings, None)["drift"]["classify"]
    far = M.monitor(classify_log(other), reference, [], tokenize, settings, None)["drift"]["classify"]
    assert near["token_js"] < far["token_js"], (near["token_js"], far["token_js"])
    assert near["length_psi"] < far["length_psi"], (near["length_psi"], far["length_psi"])
    assert "length" in far["drifted"]


# ---------------------------------------------------------------- which model wrote the log

def test_model_hash_covers_every_file_and_not_the_location(tmp_path):
    from lifecycle.variants import model_sha256
    model = tmp_path / "a"
    (model / "sub").mkdir(parents=True)
    (model / "model.onnx").write_bytes(b"weights")
    (model / "sub/tokenizer.json").write_text("{}")
    first = model_sha256(model)
    shutil.copytree(model, tmp_path / "b")
    assert model_sha256(tmp_path / "b") == first and len(first) == 64
    (model / "model.onnx").write_bytes(b"weightz")
    changed = model_sha256(model)
    (model / "model.onnx").write_bytes(b"weights")
    (model / "sub/tokenizer.json").rename(model / "tokenizer.json")
    moved = model_sha256(model)
    (model / "extra.json").write_text("")
    assert len({first, changed, moved, model_sha256(model)}) == 4


FAKE_ONNX = b"stands in for an int8 graph: monitor hashes it, never loads it"


@pytest.fixture
def monitored(tiny_models, tmp_path) -> Path:
    """tiny_models serving A/B int8_dynamic (a stand-in per kind) and pytorch; monitor reads
    data/requests/requests.jsonl."""
    project = tmp_path / "project"
    shutil.copytree(tiny_models, project)
    for kind in ("classifier", "lm"):
        directory = project / "models/compressed" / kind / "int8_dynamic"
        directory.mkdir(parents=True)
        (directory / "model.onnx").write_bytes(FAKE_ONNX + kind.encode())
    params = tiny_params()
    params["monitor"] = {"log": "data/requests/requests.jsonl", "bins": 5}
    params["serve"] = {"ab": {"variants": ["int8_dynamic", "pytorch"], "split": 0.5}}
    write_params(project, params)
    return project


def served_by(project: Path, variant: str, record: dict) -> dict:
    """`record` as the server writes it: naming `variant` and the content hash of the model that served it."""
    from lifecycle.variants import model_sha256, variant_dir
    kind = M.KINDS[record["endpoint"]]
    return {**record, "variant": variant,
            "model": {"variant": variant, "sha256": model_sha256(variant_dir(kind, variant, project / "models"))}}


def write_log(project: Path, records: list[dict]) -> None:
    (project / "data/requests").mkdir(parents=True, exist_ok=True)
    (project / "data/requests/requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


COMPLETION = {"endpoint": "completions", "prompt": "To be, or not to be", "completion": " x", "completion_tokens": 1,
              "latency_ms": 12.5, "outcome": "ok"}
CLASSIFICATION = {"endpoint": "classify", "text": "A fine film.", "label": "positive", "latency_ms": 3.0,
                  "outcome": "ok"}
ANOTHER_MODEL = ("this log belongs to another model; start a new log for the current model (serve.request_log) or "
                 "point monitor.log at its log")


def test_stage_writes_the_report(monitored):
    from lifecycle.variants import model_sha256
    write_log(monitored, [served_by(monitored, v, COMPLETION) for v in ("int8_dynamic", "pytorch") * 3]
              + [served_by(monitored, "pytorch", CLASSIFICATION)])
    result = run_stage("monitor", monitored)
    assert result.returncode == 0, result.stderr
    report = json.loads((monitored / "reports/monitor.json").read_text())
    assert report["status"] == "ok"
    assert report["requests"] == {"total": 7, "completions": 6, "classify": 1, "not_ok": 0}
    assert set(report["drift"]) == {"classify", "completions"}
    assert report["ab"]["by_variant"]["int8_dynamic"]["requests"] == 3
    checked = {"lm": {"int8_dynamic": "models/compressed/lm/int8_dynamic", "pytorch": "models/pretrained"},
               "classifier": {"pytorch": "models/finetuned"}}
    assert report["model"] == {kind: {v: {"sha256": model_sha256(monitored / path), "path": path}
                                      for v, path in paths.items()} for kind, paths in checked.items()}
    assert json.loads((monitored / "reports/plots/monitor_lengths_classify.json").read_text())[0]["bin"] == 0


def test_references_may_be_folders_of_shards_or_single_files(monitored):
    write_log(monitored, [served_by(monitored, "pytorch", r) for r in (CLASSIFICATION, COMPLETION) * 2])
    result = run_stage("monitor", monitored)  # the defaults: data/prepared/<corpus>/train/, every shard in order
    assert result.returncode == 0, result.stderr
    from_folders = json.loads((monitored / "reports/monitor.json").read_text())
    for corpus in ("finetune", "pretrain"):
        (monitored / f"{corpus}.jsonl").write_text(
            "".join(f.read_text() for f in shards(monitored / f"data/prepared/{corpus}/train")))
    params = tiny_params()
    params["monitor"] = {"log": "data/requests/requests.jsonl", "bins": 5, "reference": "finetune.jsonl",
                         "lm_reference": "pretrain.jsonl"}
    params["serve"] = {"ab": {"variants": ["int8_dynamic", "pytorch"], "split": 0.5}}
    write_params(monitored, params)
    result = run_stage("monitor", monitored)
    assert result.returncode == 0, result.stderr
    assert json.loads((monitored / "reports/monitor.json").read_text())["drift"] == from_folders["drift"]
    assert set(from_folders["drift"]) == {"classify", "completions"}


def test_log_of_a_model_since_retrained_is_refused_before_any_work(monitored):
    from lifecycle.variants import model_sha256
    lm = monitored / "models/compressed/lm/int8_dynamic"
    write_log(monitored, [served_by(monitored, "pytorch", CLASSIFICATION), served_by(monitored, "int8_dynamic",
                                                                                      COMPLETION)])
    old = model_sha256(lm)
    (lm / "model.onnx").write_bytes(b"retrained")
    assert the_error(run_stage("monitor", monitored)) == (
        f"error: data/requests/requests.jsonl:2: served by int8_dynamic sha256 {old[:8]}…, but the current "
        "int8_dynamic is "
        f"{model_sha256(lm)[:8]}… (models/compressed/lm/int8_dynamic): {ANOTHER_MODEL}")
    assert not (monitored / "reports/monitor.json").exists()


@pytest.mark.parametrize("record,expected", [
    ({**COMPLETION, "variant": "pytorch"}, "names no model (a log from an older server), but the current pytorch is "
                                           "{pytorch}… (models/pretrained)"),
    ({**COMPLETION, "model": {"variant": "onnx_fp32", "sha256": "1a2b3c4d5e6f"}},
     "served by onnx_fp32 sha256 1a2b3c4d…, but the current params serve int8_dynamic and pytorch "
     "(serve.variant, serve.ab)"),
], ids=["no model", "variant not served"])
def test_log_naming_no_model_or_another_variant_is_refused(monitored, record, expected):
    from lifecycle.variants import model_sha256
    write_log(monitored, [served_by(monitored, "pytorch", CLASSIFICATION), record])
    pytorch = model_sha256(monitored / "models/pretrained")[:8]
    assert the_error(run_stage("monitor", monitored)) == \
        f"error: data/requests/requests.jsonl:2: {expected.format(pytorch=pytorch)}: {ANOTHER_MODEL}"


def test_no_log_configured_is_no_traffic_yet(monitored):
    params = tiny_params()
    params["monitor"].pop("log")  # the schema's default: null
    write_params(monitored, params)
    result = run_stage("monitor", monitored)
    assert result.returncode == 0, result.stderr
    report = json.loads((monitored / "reports/monitor.json").read_text())
    assert report["status"] == "no traffic yet" and report["log"] is None and report["drift"] == {}
    assert report["requests"] == {"total": 0, "classify": 0, "completions": 0, "not_ok": 0}
    for endpoint in ("classify", "completions"):
        assert json.loads((monitored / f"reports/plots/monitor_lengths_{endpoint}.json").read_text()) == []


def test_bad_log_row_is_named(monitored):
    (monitored / "data/requests").mkdir(parents=True, exist_ok=True)
    (monitored / "data/requests/requests.jsonl").write_text('{"endpoint": "classify", "text": "ok"}\n'
                                              '{"endpoint": "embed", "text": "x"}\n')
    assert the_error(run_stage("monitor", monitored)) == \
        "error: data/requests/requests.jsonl: row 2: endpoint 'embed': expected 'completions' or 'classify'"


def test_missing_log_is_named(monitored):
    assert the_error(run_stage("monitor", monitored)) == \
        "error: params.yaml: monitor.log = 'data/requests/requests.jsonl': not found (point it at a serve request log)"


def test_bad_monitor_params_stop_the_stage(monitored):
    params = tiny_params()
    params["monitor"] = {"bins": 1}
    write_params(monitored, params)
    assert the_error(run_stage("monitor", monitored)) == \
        "error: params.yaml: monitor.bins = 1: must be between 2 and 100"
