"""The `prepare` section: normalisation, quality filters, dedup, PII scrubbing, splits."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from lifecycle.params.base import Fraction, Section, at_least, between


class Filters(Section):
    """Quality filters; Gopher-style heuristics (Rae et al. 2021). A document failing one is dropped."""
    min_chars: at_least(0) = 1
    max_chars: at_least(1) = 1_000_000
    min_words: at_least(0) = 1
    max_words: at_least(1) = 200_000
    min_mean_word_length: between(0, 100) = 0.0
    max_mean_word_length: between(0, 1000) = 1000.0
    min_alpha_ratio: Fraction = Field(0.0, description="letters / non-space characters")
    min_alpha_word_ratio: Fraction = Field(0.0, description="share of words with at least one letter")
    max_symbol_word_ratio: between(0, 100) = Field(100.0, description="('#' + '...') / words")
    max_bullet_line_ratio: Fraction = 1.0
    max_ellipsis_line_ratio: Fraction = 1.0
    max_repeated_line_ratio: Fraction = Field(1.0, description="duplicate lines / lines")
    max_repeated_line_char_ratio: Fraction = Field(1.0, description="characters in duplicate lines / characters")
    max_top_bigram_char_ratio: Fraction = Field(1.0,
                                                description="characters of the most frequent word bigram / characters")
    min_stop_words: at_least(0) = Field(
        0, description="distinct English stop words (the, be, to, of, and, that, have, with)")

    @model_validator(mode="after")
    def _ranges(self):
        for lo, hi in (("min_chars", "max_chars"), ("min_words", "max_words"),
                       ("min_mean_word_length", "max_mean_word_length")):
            if getattr(self, lo) > getattr(self, hi):
                raise ValueError(f"{lo} = {getattr(self, lo)} is above {hi} = {getattr(self, hi)}")
        return self


class NearDedup(Section):
    enabled: bool = True
    threshold: Fraction = Field(0.8,
                                description="estimated Jaccard similarity at which two documents are near duplicates")
    num_perm: between(16, 1024, int) = 128
    shingle_size: between(1, 32, int) = Field(5, description="words per shingle")

    @model_validator(mode="after")
    def _enough_bands(self):
        if self.enabled:
            from datasketch.lsh import _optimal_param  # the banding MinHashLSH itself will choose

            bands, _ = _optimal_param(self.threshold, self.num_perm, 0.5, 0.5)
            if bands < 2:
                raise ValueError(f"threshold = {self.threshold} with num_perm = {self.num_perm} leaves {bands} "
                                 "LSH band (MinHashLSH needs 2); lower the threshold or raise num_perm")
        return self


class Dedup(Section):
    exact: bool = True
    near: NearDedup = Field(default_factory=NearDedup)  # built on use: its check imports datasketch (and scipy)


class Pii(Section):
    email: bool = True
    phone: bool = True
    ip: bool = True
    credit_card: bool = True


def split_share():
    def check(value):
        if not 0 < value <= 0.5:
            raise ValueError("must be above 0 and at most 0.5 (pretraining needs a validation split, evaluation a "
                             "test split)")
        return value
    return Annotated[float, AfterValidator(check)]


class Split(Section):
    """Documents go to test, validation and train by the rank of a stable hash of their text."""
    validation: split_share() = 0.05
    test: split_share() = 0.05
    min_documents: at_least(1) = Field(1, description="the fewest documents each of train, validation and test "
                                                      "may hold; a smaller corpus stops prepare")

    @model_validator(mode="after")
    def _train_left(self):
        if self.validation + self.test >= 1:
            raise ValueError(f"validation + test = {self.validation + self.test}: leaves nothing for train; "
                             "must be below 1")
        return self


class PrepareParams(Section):
    normalization: Literal["NFC", "NFKC", "none"] = "NFKC"
    filters: dict[Literal["pretrain", "finetune"], Filters]
    dedup: Dedup = Field(default_factory=Dedup)
    pii: Pii = Pii()
    split: Split = Split()
    warn_drop_share: Fraction = Field(0.02, description="a quality filter dropping more than this share of a "
                                                        "source's documents is a warning, with examples")
    length_bins: list[at_least(1)] = Field(default_factory=lambda: [10, 30, 100, 300, 1000, 3000, 10000, 30000],
                                           min_length=1, description="upper edges (words) of the length histogram")

    @model_validator(mode="after")
    def _both_corpora(self):
        missing = {"pretrain", "finetune"} - set(self.filters)
        if missing:
            raise ValueError(f"filters: needs a section for {', '.join(sorted(missing))}")
        return self
