"""The `pretrain` section: optimisation, precision, sharding, checkpoints, samples."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lifecycle.params.base import Fsdp, Section, at_least, between, positive


class Samples(Section):
    prompts: list[str] = Field(default_factory=lambda: ["To be, or not to be", "The history of"])
    max_new_tokens: between(1, 4096, int) = 40
    temperature: between(0.01, 10) = 0.8
    top_k: at_least(0) = 50
    top_p: between(0.01, 1) = 0.95
    repetition_penalty: between(1, 10) = Field(
        1.0, description="CTRL's penalty on tokens already in the text, greedy and sampled alike; 1: none")


class PretrainParams(Section):
    max_steps: at_least(1) = 500
    batch_size: at_least(1) = Field(16, description="sequences per device per step")
    gradient_accumulation_steps: at_least(1) = 1
    learning_rate: positive() = 1.5e-3
    adam_beta1: between(0, 0.9999) = 0.9
    adam_beta2: between(0, 0.9999) = 0.95
    weight_decay: between(0, 10) = 0.1
    warmup_steps: at_least(0) = 50
    lr_scheduler: Literal["cosine", "linear", "constant_with_warmup"] = "cosine"
    max_grad_norm: positive() = 1.0
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="auto: bf16 on GPUs and CPUs that have it, fp16 on other GPUs, fp32 otherwise")
    gradient_checkpointing: bool = False
    torch_compile: bool = False
    eval_steps: at_least(1) = 150
    eval_max_blocks: at_least(1) = Field(
        256, description="validation blocks for the periodic evaluations (the final one uses all)")
    save_steps: at_least(1) = Field(150, description="checkpoint interval: a kill -9 loses at most this many steps")
    logging_steps: at_least(1) = 10
    ddp_timeout_s: at_least(10) = Field(600, description="a hung process group fails after this many seconds")
    fsdp: Fsdp | None = Field(None, description="null: plain data parallel (DDP) under torchrun, a whole model per "
                                                "process; a mapping: shard the model over the processes (GPUs)")
    samples: Samples = Samples()

    @model_validator(mode="after")
    def _steps(self):
        if self.warmup_steps > self.max_steps:
            raise ValueError(f"warmup_steps = {self.warmup_steps} is above max_steps = {self.max_steps}")
        return self
