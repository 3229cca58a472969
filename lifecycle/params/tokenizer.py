"""The `tokenizer` and `tokenize` sections."""
from __future__ import annotations

import os

from pydantic import Field

from lifecycle.params.base import Section, at_least, between


class SpecialTokens(Section):
    eos: str = "<|endoftext|>"
    pad: str = "<|pad|>"


class TokenizerParams(Section):
    pretrained: str | None = Field(
        None, description="use this tokenizer (a local directory, or a hub name online) instead of training one")
    vocab_size: between(260, 1_000_000, int) = 4096
    min_frequency: at_least(1) = 2
    special_tokens: SpecialTokens = SpecialTokens()


class TokenizeParams(Section):
    block_size: between(8, 1_048_576, int) = 128
    batch_size: at_least(1) = 1000
    num_proc: at_least(1) | None = Field(
        None, description="processes that tokenize (datasets.map); null: every core. The tokens do not depend on it")
    domain_text: bool = Field(
        False, description="also train the tokenizer and the language model on the fine-tuning corpus's train split "
                           "(its text, without labels): the model has then read the task's language")

    @property
    def processes(self) -> int:
        """num_proc, with null read as every core of this machine."""
        return self.num_proc or os.cpu_count() or 1
