"""The `model` section: the architecture (or a base model), and its fit with the packed blocks."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lifecycle.params.base import Section, between, cross_check


class ModelParams(Section):
    """The architecture, built from scratch; or `base`: an existing model to continue pretraining from."""
    base: str | None = Field(None,
                             description="a model directory (or a hub name, online); the keys below are then ignored")
    family: Literal["gpt2", "llama"] = Field(
        "gpt2", description="gpt2: learned positions, GELU, LayerNorm; llama: rotary, SwiGLU, RMSNorm, GQA")
    n_layers: between(1, 256, int) = 4
    d_model: between(8, 65536, int) = 384
    n_heads: between(1, 1024, int) = 6
    n_kv_heads: between(1, 1024, int) | None = Field(
        None, description="llama: key/value heads (grouped-query attention); null = n_heads")
    d_ff: between(8, 262144, int) = Field(1536, description="MLP width")
    context_length: between(8, 1_048_576, int) = 128
    dropout: between(0, 0.9) = 0.0
    tie_embeddings: bool = True
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"

    @model_validator(mode="after")
    def _shapes(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads = {self.n_heads} must divide d_model = {self.d_model}")
        if self.n_kv_heads is not None:
            if self.family != "llama":
                raise ValueError(f"n_kv_heads = {self.n_kv_heads}: only family 'llama' has grouped-query attention; "
                                 "use null for gpt2")
            if self.n_heads % self.n_kv_heads:
                raise ValueError(f"n_kv_heads = {self.n_kv_heads} must divide n_heads = {self.n_heads}")
        return self


@cross_check("model", "tokenize")
def context_fits_blocks(model, tokenize) -> None:
    context, block = model.context_length, tokenize.block_size
    if model.base is None and context > block:
        raise ValueError(f"model.context_length = {context} is longer than the packed blocks "
                         f"(tokenize.block_size = {block}); raise tokenize.block_size or lower the context")
    if model.base is None and block % context:
        raise ValueError(f"tokenize.block_size = {block} must be a multiple of model.context_length = {context}")
