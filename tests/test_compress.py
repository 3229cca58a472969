"""compress on the tiny models: ONNX export matches PyTorch, int8 variants load and classify, static calibration
uses the configured count, pruning reaches its sparsity, every variant loads by name; bad names fail in one line;
each variant's per-example results reproduce its reported metrics."""
import json
import math

import numpy as np
import pytest

from lifecycle.compression import calibration_examples, detect_isa, prune_global, sparsity
from lifecycle.core import StageError
from lifecycle.examples import ids_and_texts, read_examples
from lifecycle.variants import available, load_classifier, load_lm
from tests.conftest import run_stage, the_error, tiny_params, write_params

VARIANTS = ["onnx_fp32", "onnx_optimized", "int8_dynamic", "int8_static", "pruned"]
STUDENT = ["distilled_onnx_fp32", "distilled_int8_dynamic"]  # the tiny params' compress.distilled
TEXTS = ["a wonderful moving film", "a dull boring mess of a movie", "great", "terrible script and bad acting"]


@pytest.fixture(scope="module")
def report(tiny_compressed) -> dict:
    return json.loads((tiny_compressed / "reports/compress.json").read_text())


def logits(model, tokenizer, texts=TEXTS) -> np.ndarray:
    import torch
    with torch.no_grad():
        return model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.float().numpy()


def test_fp32_onnx_logits_match_pytorch(tiny_compressed, report):
    reference = logits(*load_classifier("pytorch", tiny_compressed / "models"))
    exported = logits(*load_classifier("onnx_fp32", tiny_compressed / "models"))
    assert np.abs(reference - exported).max() < 1e-4
    assert report["classifier"]["onnx_fp32"]["max_abs_logit_diff"] < 1e-4
    assert report["classifier"]["onnx_fp32"]["agreement"] == 1.0
    assert report["lm"]["onnx_fp32"]["max_abs_logit_diff"] < 1e-3


@pytest.mark.parametrize("variant", ["int8_dynamic", "int8_static"])
def test_quantized_classifier_loads_classifies_and_is_smaller(tiny_compressed, report, variant):
    model, tokenizer = load_classifier(variant, tiny_compressed / "models")
    out = logits(model, tokenizer)
    assert out.shape == (len(TEXTS), 2) and np.isfinite(out).all()
    quantized, fp32 = report["classifier"][variant], report["classifier"]["onnx_fp32"]
    assert quantized["size_bytes"] < fp32["size_bytes"]  # a tiny graph: the quantization nodes weigh relatively more
    assert 0 <= quantized["accuracy"] <= 1 and 0 <= quantized["agreement"] <= 1
    assert quantized["accuracy_ci95_low"] <= quantized["accuracy"] <= quantized["accuracy_ci95_high"]


def test_static_quantization_uses_the_calibration_count_from_params(report):
    assert report["facts"]["classifier"]["calibration_examples_used"] == \
        tiny_params()["compress"]["quantization"]["calibration_examples"]


def test_calibration_feeds_give_a_decoder_an_empty_past():
    from transformers import GPT2Config
    config = GPT2Config(n_embd=32, n_head=2, n_layer=1)

    class Tokenizer:  # two tokens a text, padded: what a real tokenizer returns with return_tensors="np"
        def __call__(self, texts, **_):
            return {"input_ids": np.ones((len(texts), 6), dtype=np.int64),
                    "attention_mask": np.array([[1, 1, 0, 0, 0, 0]] * len(texts))}
    feeds = calibration_examples(Tokenizer(), ["a", "b", "c"], 6,
                                 ["input_ids", "attention_mask", "position_ids", "past_key_values.0.key"], config)
    assert len(feeds) == 3
    assert feeds[0]["past_key_values.0.key"].shape == (2, 0, 16)
    assert feeds[0]["position_ids"].tolist() == [0, 1, 1, 1, 1, 1]


def test_pruning_reaches_the_requested_sparsity(tiny_compressed, report):
    from transformers import AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_pretrained(tiny_compressed / "models/finetuned")
    embedding = model.get_input_embeddings().weight.detach().clone()
    weights = prune_global(model, 0.4)
    assert sparsity(weights) == pytest.approx(0.4, abs=0.01)
    assert (model.get_input_embeddings().weight == embedding).all(), "embeddings are not pruned"
    assert report["facts"]["classifier"]["sparsity_of_projections"] == pytest.approx(0.5, abs=0.01)
    assert report["facts"]["lm"]["sparsity_of_projections"] == pytest.approx(0.5, abs=0.01)
    assert 0 < report["facts"]["lm"]["sparsity_of_all_weights"] < 0.5


def test_every_variant_directory_holds_one_onnx_file_and_a_tokenizer_without_token_type_ids(tiny_compressed):
    assert available("classifier", tiny_compressed / "models") == ["pytorch", "distilled", *sorted(VARIANTS + STUDENT)]
    assert available("lm", tiny_compressed / "models") == ["pytorch", *sorted(VARIANTS)]
    for kind in ("classifier", "lm"):
        for variant in VARIANTS:
            directory = tiny_compressed / "models/compressed" / kind / variant
            assert [p.name for p in directory.glob("*.onnx*")] == ["model.onnx"], (kind, variant)
            assert (directory / "config.json").is_file()
    _, tokenizer = load_classifier("int8_static", tiny_compressed / "models")
    assert set(tokenizer("hello there")) == {"input_ids", "attention_mask"}


@pytest.mark.parametrize("variant", ["pytorch", *VARIANTS])
def test_every_lm_variant_loads_and_generates(tiny_compressed, report, variant):
    model, tokenizer = load_lm(variant, tiny_compressed / "models")
    prompt = tokenizer(["To be"], return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=3, min_new_tokens=3, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id)
    assert out.shape == (1, prompt["input_ids"].shape[1] + 3)
    assert report["lm"][variant]["perplexity"] > 1


def test_unknown_variant_is_one_clear_line(tiny_compressed):
    with pytest.raises(StageError) as err:
        load_classifier("int4", tiny_compressed / "models")
    assert str(err.value) == (f"classifier variant 'int4': not found at "
                              f"{tiny_compressed / 'models/compressed/classifier/int4'} "
                              "(available: pytorch, distilled, distilled_int8_dynamic, distilled_onnx_fp32, "
                              "int8_dynamic, int8_static, onnx_fp32, onnx_optimized, pruned)")


def test_unknown_variant_in_params_stops_the_stage(tmp_path):
    params = tiny_params()
    params["compress"]["variants"] = ["onnx_fp32", "int4"]
    write_params(tmp_path, params)
    assert the_error(run_stage("compress", tmp_path)) == (
        "error: params.yaml: compress.variants[1] = 'int4': must be one of 'onnx_fp32', 'onnx_optimized', "
        "'int8_dynamic', 'int8_static' or 'pruned'")


def test_isa_is_detected_from_the_cpu():
    assert detect_isa("flags : fpu avx2 avx512f avx512_vnni", "x86_64") == "avx512_vnni"
    assert detect_isa("flags : fpu sse4_2 avx2", "x86_64") == "avx2"
    assert detect_isa("", "aarch64") == "arm64"


def test_the_distilled_student_is_exported_and_compared_with_the_teacher(tiny_compressed, report):
    student = logits(*load_classifier("distilled", tiny_compressed / "models"))
    exported = logits(*load_classifier("distilled_onnx_fp32", tiny_compressed / "models"))
    assert np.abs(student - exported).max() < 1e-4
    quantized = logits(*load_classifier("distilled_int8_dynamic", tiny_compressed / "models"))
    assert quantized.shape == (len(TEXTS), 2) and np.isfinite(quantized).all()
    teacher = report["classifier"]["pytorch"]
    for variant in ["distilled", *STUDENT]:
        row = report["classifier"][variant]
        assert row["size_bytes"] < teacher["size_bytes"]
        assert row["accuracy_change_points"] == pytest.approx(100 * (row["accuracy"] - teacher["accuracy"]), abs=1e-3)
    distill = json.loads((tiny_compressed / "reports/distill.json").read_text())
    assert report["classifier"]["distilled"]["accuracy"] == pytest.approx(distill["student"]["accuracy"], abs=1e-4)


def test_exporting_the_student_without_one_is_one_clear_line(tiny_models, tmp_path):
    import shutil
    project = tmp_path / "project"
    shutil.copytree(tiny_models, project)
    assert the_error(run_stage("compress", project)) == (
        "error: params.yaml: compress.distilled = ['onnx_fp32', 'int8_dynamic']: no student at models/distilled "
        "(run the distill stage first, or set compress.distilled: [])")


def test_every_variant_writes_its_examples_file(tiny_compressed, report):
    folder = tiny_compressed / "reports/examples/compress"
    want = [f"classifier.{v}.jsonl" for v in report["classifier"]] + [f"lm.{v}.jsonl" for v in report["lm"]]
    assert sorted(p.name for p in folder.iterdir()) == sorted(want)
    assert {"classifier.pytorch.jsonl", "classifier.distilled.jsonl", "classifier.distilled_int8_dynamic.jsonl",
            "lm.pytorch.jsonl", "lm.int8_static.jsonl"} <= set(want)
    assert sorted(p.name for p in folder.parent.iterdir()) == ["compress"]  # no temporary folder left beside it


def test_classifier_examples_are_the_evaluation_examples_and_reproduce_the_accuracy(tiny_compressed, report):
    n = tiny_params()["compress"]["evaluation"]["examples"]
    ids = ids_and_texts(tiny_compressed / "data/prepared/finetune/test")[0][:n]  # the tiny split may hold fewer
    labels = None
    for variant, row in report["classifier"].items():
        records = read_examples(tiny_compressed / f"reports/examples/compress/classifier.{variant}.jsonl")
        assert [r["id"] for r in records] == sorted(ids) and len(set(ids)) == len(ids), variant
        labels = labels or [r["label"] for r in records]
        assert [r["label"] for r in records] == labels, variant  # the same references for every variant
        probabilities = np.array([r["probabilities"] for r in records])
        assert probabilities.shape == (len(ids), 2), variant
        accuracy = np.mean(probabilities.argmax(axis=1) == np.array(labels))
        assert row["accuracy"] == pytest.approx(accuracy, abs=1e-6), variant


def test_lm_examples_are_the_truncated_documents_and_reproduce_perplexity(tiny_compressed, report):
    e = tiny_params()["compress"]["evaluation"]
    ids, texts = (column[:e["documents"]] for column in
                  ids_and_texts(tiny_compressed / "data/prepared/pretrain/test"))
    size_of = {i: len(t[:e["document_chars"]].encode("utf-8")) for i, t in zip(ids, texts)}
    for variant, row in report["lm"].items():
        records = read_examples(tiny_compressed / f"reports/examples/compress/lm.{variant}.jsonl")
        assert [r["id"] for r in records] == sorted(ids), variant
        assert [r["bytes"] for r in records] == [size_of[r["id"]] for r in records], variant
        nll, tokens, n_bytes = (sum(r[k] for r in records) for k in ("nll", "tokens", "bytes"))
        assert round(math.exp(nll / tokens), 4) == pytest.approx(row["perplexity"], abs=1.01e-4), variant
        assert round(nll / math.log(2) / n_bytes, 5) == pytest.approx(row["bits_per_byte"], abs=1.01e-5), variant
