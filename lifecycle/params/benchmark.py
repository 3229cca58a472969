"""The `benchmark` section: variants, shapes, decoding and the small random-weight model."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from lifecycle.params.base import Section, at_least, between, cross_check, unique


class GenerationBench(Section):
    variants: list[str] | None = Field(["pytorch", "onnx_fp32", "int8_dynamic"],
                                       description="LM variants timed; null: every one on disk")
    prompt_tokens: Annotated[list[at_least(1)], unique()] = Field(
        default_factory=lambda: [16, 64], min_length=1,
        description="prompt lengths timed (the KV cache saves more on longer ones)")
    new_tokens: at_least(1) = Field(64, description="tokens generated per call (forced: no early end of sequence)")
    repetitions: at_least(1) = 3
    decoding: Annotated[list[Literal["greedy", "sampling", "beam"]], unique()] = Field(
        default_factory=lambda: ["greedy", "sampling", "beam"], min_length=1)
    temperature: between(0.01, 10) = 0.8
    top_k: at_least(0) = 50
    top_p: between(0.01, 1) = 0.95
    num_beams: between(2, 64, int) = 4


class SmallBench(Section):
    """A random-weight classifier of ~20-30M parameters: int8 gains that a tiny model's overhead hides."""
    enabled: bool = True
    n_layers: between(1, 64, int) = 6
    d_model: between(8, 8192, int) = 512
    n_heads: between(1, 128, int) = 8
    d_ff: between(8, 32768, int) = 2048
    batch_size: at_least(1) = 1
    sequence_length: between(8, 4096, int) = 128


class BenchmarkParams(Section):
    variants: list[str] | None = Field(None,
                                       description="classifier variants timed besides pytorch; null: every one on disk")
    batch_sizes: Annotated[list[at_least(1)], unique()] = Field(default_factory=lambda: [1, 8], min_length=1)
    sequence_lengths: Annotated[list[between(1, 1_048_576, int)], unique()] = Field(
        default_factory=lambda: [32, 128], min_length=1)
    warmup: at_least(0) = 3
    repetitions: at_least(1) = 20
    threads: at_least(1) | None = Field(None,
                                        description="intra-op threads for PyTorch and ORT alike; null: every core")
    generation: GenerationBench = GenerationBench()
    small: SmallBench = SmallBench()


@cross_check("benchmark", "model")
def prompts_fit_context(benchmark, model) -> None:
    generation, context = benchmark.generation, model.context_length
    longest = max(generation.prompt_tokens) + generation.new_tokens
    if model.base is None and longest > context:
        raise ValueError(f"benchmark.generation: prompt_tokens {max(generation.prompt_tokens)} + new_tokens "
                         f"{generation.new_tokens} = {longest} is longer than model.context_length = {context}")
