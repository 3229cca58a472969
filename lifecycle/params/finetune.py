"""The `finetune` and `evaluate` sections."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lifecycle.params.base import Section, at_least, between, positive


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


class FinetuneParams(Section):
    task: Literal["classification", "causal_lm"] = Field(
        "classification", description="causal_lm: domain-adaptive continued pretraining on the task's text")
    base: str | None = Field(None, description="null: models/pretrained; else a model directory (a hub name, online)")
    classes: list[str] = Field(default_factory=lambda: ["negative", "positive"], min_length=2)
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

    @model_validator(mode="after")
    def _classes(self):
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


class EvaluateParams(Section):
    batch_size: at_least(1) = 32
    stride: at_least(1) | None = Field(
        None, description="sliding-window step for texts longer than the context; null: half the context")
    calibration_bins: between(2, 100, int) = 10
