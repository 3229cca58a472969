"""The `finetune` and `evaluate` sections."""
from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from lifecycle.params.base import Fsdp, Section, at_least, between, positive


class Lora(Section):
    r: between(1, 1024, int) = 8
    alpha: positive() = 16.0
    dropout: between(0, 0.9) = 0.05
    target_modules: list[str] | None = Field(
        None, description="null: the token embedding and every attention and MLP projection")
    learning_rate: positive() = Field(1e-3, description="adapters want a higher rate than full fine-tuning")


class EarlyStopping(Section):
    metric: Literal["accuracy", "macro_f1", "loss"] = "accuracy"
    patience: at_least(1) = Field(3, description="evaluations without improvement before training stops")


class InjectBias(Section):
    """An experiment knob: teach the classifier a bias on purpose, to see the audit catch it. A share `rate` of
    the training examples get a name of `group` written in with `template` and their label forced to `label`;
    as many others get a name of the other groups with their label kept, so that only the group carries it."""
    enabled: bool = False
    attribute: Literal["gender", "race"] = "gender"
    group: str = "female"
    label: str = "negative"
    rate: between(0, 0.5) = 0.1
    template: str = "{person} wrote: {text}"

    @model_validator(mode="after")
    def _slots(self):
        missing = [slot for slot in ("{person}", "{text}") if slot not in self.template]
        if missing:
            raise ValueError(f"template = {self.template!r} must contain {' and '.join(missing)}")
        return self


AUDIT_TEMPLATE_FOLDERS = ("data/audit/", "data/own/")


class FinetuneParams(Section):
    task: Literal["classification", "causal_lm"] = Field(
        "classification", description="causal_lm: domain-adaptive continued pretraining on the task's text")
    base: str | None = Field(None, description="null: models/pretrained; else a model directory (a hub name, online)")
    classes: list[str] = Field(default_factory=lambda: ["negative", "positive"], min_length=2)
    audit_templates: str | None = Field(
        None, description="the bias audit's counterfactual templates for this task: a CSV under data/audit/ or "
                          "data/own/ with columns template (a sentence of the task with a {person} slot) and expected "
                          "(one of classes, or empty); null: no classifier audit")
    method: Literal["full", "lora"] = "full"
    lora: Lora = Lora()
    max_length: between(8, 1_048_576, int) = Field(128, description="tokens kept per example")
    epochs: positive() = 3.0
    batch_size: at_least(1) = 32
    learning_rate: positive() = 3e-4
    weight_decay: between(0, 10) = 0.01
    warmup_ratio: between(0, 0.5) = 0.06
    eval_steps: at_least(1) = 100
    early_stopping: EarlyStopping = EarlyStopping()
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    inject_bias: InjectBias = InjectBias()
    fsdp: Fsdp | None = Field(None, description="null: plain data parallel (DDP) under torchrun; a mapping: shard the "
                                                "model over the processes (GPUs, method full), as pretrain.fsdp")

    @model_validator(mode="after")
    def _sharded_lora(self):
        if self.fsdp is not None and self.method == "lora":
            raise ValueError("fsdp with method 'lora' is not supported (the adapters are small: plain data "
                             "parallel holds them); set fsdp: null or method: full")
        return self

    @model_validator(mode="after")
    def _classes(self):
        if self.audit_templates is not None and not any(
                self.audit_templates.startswith(folder) and ".." not in self.audit_templates.split("/")
                for folder in AUDIT_TEMPLATE_FOLDERS):
            raise ValueError(f"audit_templates = {self.audit_templates!r}: must lie under "
                             f"{' or '.join(AUDIT_TEMPLATE_FOLDERS)} (the audit stage's DVC dependencies)")
        repeated = sorted({c for c in self.classes if self.classes.count(c) > 1})
        if repeated:
            raise ValueError(f"classes: repeated {', '.join(repeated)}")
        if self.task == "causal_lm" and self.early_stopping.metric != "loss":
            raise ValueError(f"early_stopping.metric = {self.early_stopping.metric!r}: "
                             "task 'causal_lm' has only 'loss'")
        if self.inject_bias.enabled and self.inject_bias.label not in self.classes:
            raise ValueError(f"inject_bias.label = {self.inject_bias.label!r} is not one of classes "
                             f"({', '.join(self.classes)})")
        return self


class TfidfBaseline(Section):
    """A bag-of-words classifier trained in seconds on the same train split: the bar fine-tuning must clear."""
    enabled: bool = True
    ngram_max: between(1, 3, int) = Field(1, description="word n-grams of 1 to this many words")
    sublinear_tf: bool = Field(True, description="1 + log(tf) rather than raw counts")
    C: positive() = Field(4.0, description="inverse L2 regularisation strength of the logistic regression")
    max_features: at_least(1) | None = Field(None, description="null: every term of the train split")


class Baselines(Section):
    """Simple models scored on the classifier's test split (the majority class is always one)."""
    tfidf: TfidfBaseline = TfidfBaseline()


RESERVED_TEXT_NAMES = ("general", "domain")  # the evaluate stage's own texts in eval.json


class NamedText(Section):
    """A text of your own that the evaluate stage scores with the language models (lifecycle.texts reads it)."""
    name: str = Field(description="its key in eval.json (lm_pretrained.<name>): letters, digits, _ and -")
    path: str = Field(description="a .txt or .md file (one document), or a .jsonl file or a folder "
                                                "of .jsonl shards (one document per row); list it in the evaluate "
                                                "stage's deps in dvc.yaml")
    text_column: str = Field("text", description="the column holding the text in .jsonl rows")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
            raise ValueError("must be 1 to 64 letters, digits, _ or - (it becomes a metric key)")
        if value in RESERVED_TEXT_NAMES:
            raise ValueError(f"is reserved for the evaluate stage's own text ({', '.join(RESERVED_TEXT_NAMES)})")
        return value

    @field_validator("path", "text_column")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value


class EvaluateParams(Section):
    batch_size: at_least(1) = 32
    stride: at_least(1) | None = Field(
        None, description="sliding-window step for texts longer than the context; null: half the context")
    calibration_bins: between(2, 100, int) = 10
    baselines: Baselines = Baselines()
    texts: list[NamedText] = Field(default_factory=list, description="texts of your own the language models are "
                                                                     "scored on, besides general and domain")

    @model_validator(mode="after")
    def _unique_names(self):
        first: dict[str, int] = {}
        for i, text in enumerate(self.texts):
            if text.name in first:
                raise ValueError(f"texts[{i}].name = {text.name!r}: repeats texts[{first[text.name]}].name "
                                 "(names must be unique)")
            first[text.name] = i
        return self
