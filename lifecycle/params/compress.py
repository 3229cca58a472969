"""The `compress` and `distill` sections."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from lifecycle.params.base import Fraction, Section, at_least, between, positive, unique

COMPRESS_VARIANTS = Literal["onnx_fp32", "onnx_optimized", "int8_dynamic", "int8_static", "pruned"]


class Quantization(Section):
    isa: Literal["auto", "avx512_vnni", "avx2", "arm64"] = Field(
        "auto", description="int8 kernels to target; auto: detected from this CPU")
    per_channel: bool = Field(False, description="one scale per output channel (more accurate, slower on some CPUs)")
    calibration_examples: at_least(1) = Field(
        64, description="validation examples that calibrate static int8 activation ranges")
    calibration_length: between(8, 1_048_576, int) = Field(64, description="tokens per calibration example (padded)")


class Pruning(Section):
    amount: between(0, 0.99) = Field(0.3, description="share of projection weights set to zero (global L1 magnitude)")
    recovery_steps: at_least(0) = Field(0, description="optimizer steps of fine-tuning after pruning (0: none)")


class CompressEvaluation(Section):
    examples: at_least(1) = Field(1000, description="classifier test examples compared (at most the test split)")
    documents: at_least(1) = Field(16, description="LM test documents for perplexity (at most the test split)")
    document_chars: at_least(100) = Field(2000, description="characters kept of each LM document (bounds the time)")
    batch_size: at_least(1) = 32


class CompressParams(Section):
    variants: Annotated[list[COMPRESS_VARIANTS], unique()] = Field(
        default_factory=lambda: ["onnx_fp32", "onnx_optimized", "int8_dynamic", "int8_static", "pruned"], min_length=1)
    distilled: Annotated[list[Literal["onnx_fp32", "onnx_optimized", "int8_dynamic", "int8_static"]], unique()] = Field(
        default_factory=lambda: ["onnx_fp32", "int8_dynamic"],
        description="ONNX variants of the distill stage's student (classifier variants distilled_<name>); []: none")
    optimization_level: Literal[1, 2, 99] = Field(
        2, description="ORT graph optimisation: 1 basic, 2 extended (fusions), 99 all")
    quantization: Quantization = Quantization()
    pruning: Pruning = Pruning()
    evaluation: CompressEvaluation = CompressEvaluation()


class Student(Section):
    """The student's shape (same family, tokenizer and context as the teacher)."""
    n_layers: between(1, 256, int) = 2
    d_model: between(8, 65536, int) = 192
    n_heads: between(1, 1024, int) = 3
    d_ff: between(8, 262144, int) = 768

    @model_validator(mode="after")
    def _shape(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads = {self.n_heads} must divide d_model = {self.d_model}")
        return self


class DistillParams(Section):
    student: Student = Student()
    temperature: between(0.1, 100) = Field(2.0,
                                           description="softens both distributions; the soft loss is scaled by T^2")
    alpha: Fraction = Field(0.5, description="weight of the soft-target loss; 1 - alpha weighs the labels")
    epochs: positive() = 2.0
    batch_size: at_least(1) = 32
    learning_rate: positive() = 1e-3
    max_train_examples: at_least(1) = Field(2000, description="training examples used (the first, in split order)")
