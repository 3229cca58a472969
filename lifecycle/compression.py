"""Compression with Hugging Face Optimum: ONNX export (classifier; causal LM with past key values), ONNX Runtime
graph optimisation, dynamic and static int8 quantization, magnitude pruning; and the size and quality change of
every variant against fp32 PyTorch, measured on the same inputs, with each example's result written for paired
tests (lifecycle.examples). `params` holds the compress, finetune and evaluate sections."""
from __future__ import annotations

import dataclasses
import logging
import platform
import shutil
import tempfile
from pathlib import Path

import numpy as np

from lifecycle.core import StageError
from lifecycle.examples import example_file, ids_and_texts, write_classifier_examples, write_lm_scores
from lifecycle.hardware import choose_precision, device_type
from lifecycle.io import read_jsonl
from lifecycle.labels import labelled
from lifecycle.modeling import context_length, parameter_count
from lifecycle.scoring import classification_metrics, language_model_scores, predict_logits, softmax
from lifecycle.stats import wilson_interval
from lifecycle.variants import DISTILLED, ONNX_FILE, PYTORCH, is_pytorch, load_classifier, load_lm, load_tokenizer

log = logging.getLogger("llm-lifecycle.compress")
MODELS, OUT = Path("models"), Path("models/compressed")
DATA = Path("data/prepared")
# ONNX export task of each model kind: the LM keeps its past key values so generation can use the KV cache.
TASKS = {"classifier": "text-classification", "lm": "text-generation-with-past"}
SOURCES = {"classifier": MODELS / "finetuned", "lm": MODELS / "pretrained"}
STUDENT = MODELS / DISTILLED


# ---------------------------------------------------------------- quantization target

def detect_isa(cpuinfo: str | None = None, machine: str | None = None) -> str:
    """The int8 instruction set ORT should target here: avx512_vnni, avx2 or arm64."""
    machine = (machine or platform.machine()).lower()
    if machine in ("arm64", "aarch64"):
        return "arm64"
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    flags = set(cpuinfo.split())
    return "avx512_vnni" if "avx512_vnni" in flags else "avx2"


def quantization_config(isa: str, is_static: bool, per_channel: bool):
    from optimum.onnxruntime.configuration import AutoQuantizationConfig
    return getattr(AutoQuantizationConfig, isa)(is_static=is_static, per_channel=per_channel)


# ---------------------------------------------------------------- export and ORT transforms

def finish_directory(directory: Path, source: Path) -> None:
    """Every variant directory: exactly one model.onnx, the config and a tokenizer without token_type_ids."""
    from transformers import AutoConfig
    onnx_files = sorted(p.name for p in directory.glob("*.onnx"))
    if onnx_files != [ONNX_FILE]:
        raise StageError(f"{directory}: expected one {ONNX_FILE}, found {', '.join(onnx_files) or 'none'}")
    AutoConfig.from_pretrained(source).save_pretrained(directory)
    load_tokenizer(source).save_pretrained(directory)
    for generated in ("ort_config.json",):  # optimum's record of the last transform; params.yaml says it all
        (directory / generated).unlink(missing_ok=True)


def export_onnx(source: Path, destination: Path, kind: str) -> None:
    from optimum.exporters.onnx import main_export
    main_export(str(source), str(destination), task=TASKS[kind], do_validation=False, trust_remote_code=False)
    finish_directory(destination, source)


def optimize(source: Path, destination: Path, level: int) -> None:
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import OptimizationConfig
    optimizer = ORTOptimizer.from_pretrained(source, file_names=[ONNX_FILE])
    optimizer.optimize(OptimizationConfig(optimization_level=level), destination, file_suffix=None)
    finish_directory(destination, source)


def quantize_dynamic(source: Path, destination: Path, isa: str, per_channel: bool) -> None:
    from optimum.onnxruntime import ORTQuantizer
    quantizer = ORTQuantizer.from_pretrained(source, file_name=ONNX_FILE)
    quantizer.quantize(quantization_config(isa, False, per_channel), destination, file_suffix=None)
    finish_directory(destination, source)


class CountingReader:
    """The calibration examples as ORT's data reader sees them, counting how many it actually consumed."""

    def __init__(self, examples: list[dict]):
        self.examples, self.used = examples, 0

    def __iter__(self):
        for example in self.examples:
            self.used += 1
            yield example


def calibration_examples(tokenizer, texts: list[str], length: int, graph_inputs: list[str], config) -> list[dict]:
    """One feed per text, padded to `length`; a decoder with past key values gets an empty (zero-length) past."""
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=length, return_tensors="np")
    examples = []
    for i in range(len(texts)):
        mask = encoded["attention_mask"][i].astype(np.int64)
        feed = {"input_ids": encoded["input_ids"][i].astype(np.int64), "attention_mask": mask}
        if "position_ids" in graph_inputs:
            feed["position_ids"] = np.clip(np.cumsum(mask) - 1, 0, None).astype(np.int64)
        for name in graph_inputs:
            if name.startswith("past_key_values"):
                heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
                feed[name] = np.zeros((heads, 0, config.hidden_size // config.num_attention_heads), dtype=np.float32)
        examples.append(feed)
    return examples


def graph_inputs(path: Path) -> list[str]:
    import onnx
    return [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]


def quantize_static(source: Path, destination: Path, isa: str, per_channel: bool, tokenizer, texts: list[str],
                    length: int) -> int:
    """Static int8, activation ranges calibrated (min-max) on `texts`; returns how many examples were used."""
    from datasets import Dataset
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoCalibrationConfig
    from transformers import AutoConfig

    config = quantization_config(isa, True, per_channel)
    reader = CountingReader(calibration_examples(tokenizer, texts, length, graph_inputs(source / ONNX_FILE),
                                                 AutoConfig.from_pretrained(source)))
    described = Dataset.from_dict({"text": texts})  # names the calibration set in the calibration config
    quantizer = ORTQuantizer.from_pretrained(source, file_name=ONNX_FILE)
    with tempfile.TemporaryDirectory() as scratch:
        ranges = quantizer.fit(dataset=reader, calibration_config=AutoCalibrationConfig.minmax(described),
                               onnx_augmented_model_name=Path(scratch) / "augmented.onnx",
                               operators_to_quantize=config.operators_to_quantize)
    quantizer.quantize(config, destination, file_suffix=None, calibration_tensors_range=ranges)
    finish_directory(destination, source)
    return reader.used


# ---------------------------------------------------------------- pruning

def prunable_weights(model) -> list[tuple]:
    """(module, "weight") of every Linear/Conv1D projection, leaving out the embeddings and the output head."""
    import torch
    from transformers.pytorch_utils import Conv1D

    heads = {id(model.get_output_embeddings())} | {id(getattr(model, name, None)) for name in ("score", "classifier")}
    return [(m, "weight") for m in model.modules() if isinstance(m, (torch.nn.Linear, Conv1D)) and id(m) not in heads]


def sparsity(weights: list[tuple]) -> float:
    zeros = sum(int((getattr(m, name) == 0).sum()) for m, name in weights)
    return zeros / sum(getattr(m, name).numel() for m, name in weights)


def prune_global(model, amount: float) -> list[tuple]:
    """Global unstructured L1 magnitude pruning of the projections; the masks stay until `make_permanent`."""
    import torch.nn.utils.prune as prune
    weights = prunable_weights(model)
    if not weights:
        raise StageError(f"{model.config.model_type}: no Linear/Conv1D projections to prune")
    prune.global_unstructured(weights, pruning_method=prune.L1Unstructured, amount=amount)
    return weights


def make_permanent(weights: list[tuple]) -> None:
    import torch.nn.utils.prune as prune
    for module, name in weights:
        prune.remove(module, name)


def recover(model, kind: str, tokenizer, params, steps: int, scratch: Path) -> None:
    """A short fine-tune with the masks in place (pruned weights stay zero), reusing finetune's Trainer setup."""
    from transformers import DataCollatorWithPadding, Trainer

    from lifecycle.finetuning import causal_lm_data, classification_data, training_arguments
    from lifecycle.training import causal_lm_collate

    f = params.finetune
    texts, labels = labelled("train", f.classes, DATA / "finetune")
    length = min(f.max_length, context_length(model))
    if kind == "classifier":
        data, collator = classification_data(tokenizer, texts, labels, length), DataCollatorWithPadding(tokenizer)
    else:
        data, collator = causal_lm_data(tokenizer, list(read_pretrain_texts("train")), length), causal_lm_collate
    device = device_type()
    args = dataclasses.replace(training_arguments(f, choose_precision(f.precision, device), device, params.seed,
                                                  scratch),
                               max_steps=steps, eval_strategy="no", save_strategy="no",
                               load_best_model_at_end=False, warmup_ratio=0.0, disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=data, data_collator=collator).train()
    model.eval()


def prune_and_export(kind: str, destination: Path, params) -> dict:
    """Prune the original, optionally recover, export it; returns the measured sparsity."""
    c = params.compress.pruning
    model, tokenizer = (load_classifier if kind == "classifier" else load_lm)(PYTORCH, MODELS)
    weights = prune_global(model, c.amount)
    with tempfile.TemporaryDirectory() as scratch:
        if c.recovery_steps:
            recover(model.train(), kind, tokenizer, params, c.recovery_steps, Path(scratch) / "trainer")
        make_permanent(weights)
        measured = sparsity(weights)
        total = parameter_count(model)
        zeros = sum(int((p == 0).sum()) for p in model.parameters())
        saved = Path(scratch) / "pruned"
        model.save_pretrained(saved, safe_serialization=True)
        tokenizer.save_pretrained(saved)
        export_onnx(saved, destination, kind)
    return {"sparsity_of_projections": round(measured, 5), "sparsity_of_all_weights": round(zeros / total, 5)}


# ---------------------------------------------------------------- quality against fp32 PyTorch

def size_bytes(directory: Path, variant: str) -> int:
    pattern = "*.safetensors" if is_pytorch(variant) else "*.onnx*"  # .onnx and any external .onnx_data
    return sum(p.stat().st_size for p in directory.glob(pattern))


def classifier_quality(logits: np.ndarray, reference_logits: np.ndarray, references: list[int],
                       classes: list[str]) -> dict:
    metrics = classification_metrics(softmax(logits), references, classes, bins=10)
    predicted = logits.argmax(-1)
    low, high = wilson_interval(int((predicted == np.asarray(references)).sum()), len(references))
    return {"accuracy": metrics["accuracy"], "accuracy_ci95_low": low, "accuracy_ci95_high": high,
            "macro_f1": metrics["macro_f1"],
            "agreement": float((predicted == reference_logits.argmax(-1)).mean()),
            "max_abs_logit_diff": float(np.abs(logits - reference_logits).max())}


def lm_probe_logits(model, tokenizer, texts: list[str], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Next-token logits on the first `length` tokens of each text, and the mask of real positions."""
    import torch
    batch = tokenizer(texts, truncation=True, max_length=length, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float().numpy()
    return logits, batch["attention_mask"].numpy().astype(bool)


def lm_quality(metrics: dict, reference: dict, probe: np.ndarray, reference_probe: np.ndarray,
               mask: np.ndarray) -> dict:
    agree = probe.argmax(-1) == reference_probe.argmax(-1)
    return {"perplexity": metrics["perplexity"],
            "perplexity_change_pct": 100 * (metrics["perplexity"] / reference["perplexity"] - 1),
            "bits_per_byte": metrics["bits_per_byte"],
            "agreement": float(agree[mask].mean()),
            "max_abs_logit_diff": float(np.abs(probe - reference_probe)[mask].max())}


def read_pretrain_texts(split: str) -> list[str]:
    return [d["text"] for d in read_jsonl(DATA / "pretrain" / split)]


def evaluate_kind(kind: str, variants: list[str], params, folder: Path) -> dict:
    """Size and quality of `pytorch` and each variant of one model kind, measured on the same inputs; each
    example's result to <kind>.<variant>.jsonl in `folder` (lifecycle.examples)."""
    evaluate = evaluate_classifiers if kind == "classifier" else evaluate_lms
    return evaluate([PYTORCH, *variants], params, folder)


def evaluate_classifiers(variants: list[str], params, folder: Path) -> dict:
    c, f = params.compress, params.finetune
    n = c.evaluation.examples
    ids = ids_and_texts(DATA / "finetune/test", ("text", "label"))[0][:n]
    texts, references = (column[:n] for column in labelled("test", f.classes, DATA / "finetune"))
    report, reference_logits = {}, None
    for variant in variants:
        model, tokenizer = load_classifier(variant, MODELS)
        logits = predict_logits(model, tokenizer, texts, c.evaluation.batch_size,
                                min(f.max_length, context_length(model)))
        write_classifier_examples(example_file(folder, f"classifier.{variant}"), ids, references, softmax(logits))
        reference_logits = logits if reference_logits is None else reference_logits
        report[variant] = {"size_bytes": size_bytes(_directory("classifier", variant), variant)} | \
            classifier_quality(logits, reference_logits, references, f.classes)
        report[variant]["accuracy_change_points"] = 100 * (report[variant]["accuracy"] - report[PYTORCH]["accuracy"])
    return report


def evaluate_lms(variants: list[str], params, folder: Path) -> dict:
    c = params.compress
    ids, texts = (column[:c.evaluation.documents] for column in ids_and_texts(DATA / "pretrain/test"))
    texts = [t[:c.evaluation.document_chars] for t in texts]
    report, reference = {}, None
    for variant in variants:
        model, tokenizer = load_lm(variant, MODELS)
        metrics, per_document = language_model_scores(model, tokenizer, texts, params.evaluate.stride,
                                                      c.evaluation.batch_size, f"lm {variant}")
        write_lm_scores(example_file(folder, f"lm.{variant}"), ids, per_document)
        probe, mask = lm_probe_logits(model, tokenizer, texts[:c.evaluation.batch_size], context_length(model))
        if reference is None:
            reference = (metrics, probe)
        report[variant] = {"size_bytes": size_bytes(_directory("lm", variant), variant)} | \
            lm_quality(metrics, reference[0], probe, reference[1], mask)
    return report


def _directory(kind: str, variant: str) -> Path:
    from lifecycle.variants import variant_dir
    return variant_dir(kind, variant, MODELS)


def build_variants(kind: str, params, isa: str, work: Path, source: Path | None = None,
                   variants: list[str] | None = None, prefix: str = "") -> dict:
    """Write `variants` (default: compress.variants) of `source` (default: the kind's original) under
    `work`/<prefix><variant>; returns facts to report (numbers)."""
    c = params.compress
    source, variants = source or SOURCES[kind], c.variants if variants is None else variants
    facts = {}
    fp32 = work / f"{prefix}onnx_fp32"
    export_onnx(source, fp32, kind)
    if "onnx_optimized" in variants:
        optimize(fp32, work / f"{prefix}onnx_optimized", c.optimization_level)
    if "int8_dynamic" in variants:
        quantize_dynamic(fp32, work / f"{prefix}int8_dynamic", isa, c.quantization.per_channel)
    if "int8_static" in variants:
        tokenizer = load_tokenizer(source)
        texts = ([d["text"] for d in read_jsonl(DATA / "finetune/validation")] if kind == "classifier"
                 else read_pretrain_texts("validation"))[:c.quantization.calibration_examples]
        facts["calibration_examples_used"] = quantize_static(fp32, work / f"{prefix}int8_static", isa,
                                                             c.quantization.per_channel, tokenizer, texts,
                                                             c.quantization.calibration_length)
    if "pruned" in variants:
        facts |= prune_and_export(kind, work / "pruned", params)
    if "onnx_fp32" not in variants:
        shutil.rmtree(fp32)
    return facts


def distilled_variants(params) -> list[str]:
    """Names of the student's ONNX variants (classifier variants), in compress.distilled's order."""
    return [f"{DISTILLED}_{v}" for v in params.compress.distilled]
