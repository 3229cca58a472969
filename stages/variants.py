"""Load a model variant by name: `pytorch` (the trained models) or an ONNX variant written by compress.

Minimal stand-in with the compress stage's API (issue 6 replaces this file): serving only calls these two.
"""
from __future__ import annotations

from pathlib import Path

from stages.core import StageError

ONNX_VARIANTS = ("onnx_fp32", "onnx_optimized", "int8_dynamic", "int8_static", "pruned")
VARIANTS = ("pytorch", *ONNX_VARIANTS)


def _onnx_dir(variant: str, kind: str, root: Path) -> Path:
    directory = Path(root) / "compressed" / kind / variant
    if variant not in VARIANTS or not (directory / "model.onnx").exists():
        present = sorted(p.parent.name for p in (Path(root) / "compressed" / kind).glob("*/model.onnx"))
        raise StageError(f"variant {variant!r}: no {directory / 'model.onnx'} (available: "
                         f"{', '.join(['pytorch', *present])}; run the compress stage for the others)")
    return directory


def load_classifier(variant: str, root: Path = Path("models")):
    """(model, tokenizer) of the sequence classifier."""
    from transformers import AutoTokenizer
    if variant == "pytorch":
        from transformers import AutoModelForSequenceClassification
        directory = Path(root) / "finetuned"
        return AutoModelForSequenceClassification.from_pretrained(directory).eval(), AutoTokenizer.from_pretrained(directory)
    from optimum.onnxruntime import ORTModelForSequenceClassification
    directory = _onnx_dir(variant, "classifier", root)
    return (ORTModelForSequenceClassification.from_pretrained(directory, file_name="model.onnx"),
            AutoTokenizer.from_pretrained(directory))


def load_lm(variant: str, root: Path = Path("models")):
    """(model, tokenizer) of the causal language model (ONNX with its KV cache)."""
    from transformers import AutoTokenizer
    if variant == "pytorch":
        from transformers import AutoModelForCausalLM
        directory = Path(root) / "pretrained"
        return AutoModelForCausalLM.from_pretrained(directory).eval(), AutoTokenizer.from_pretrained(directory)
    from optimum.onnxruntime import ORTModelForCausalLM
    directory = _onnx_dir(variant, "lm", root)
    return (ORTModelForCausalLM.from_pretrained(directory, file_name="model.onnx", use_cache=True),
            AutoTokenizer.from_pretrained(directory))
