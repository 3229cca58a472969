"""Pretraining throughput, measured in one process so the ratios are fair.

1. The stage's training (Hugging Face Trainer, as the pretrain stage configures it) against a bare PyTorch loop
   doing the same work (same model, AdamW, warmup + cosine, clipping, autocast) for the same steps:
   tokens/s ratio stage / bare, target >= 0.95.
2. MFU of the default config against this machine's measured matmul peak at the training dtype (target >= 50 %).
3. bf16 / fp32 tokens/s on this CPU, with the loss each reached after the same steps (equal loss expected).
4. `pretrain.torch_compile` on / off: the stage's tokens/s after the first steps, and the whole run's seconds (the
   compilation included), with the loss each reached.

Run after `dvc repro` (reads data/tokens, models/tokenizer):  make bench  ->  reports/bench/pretrain.json
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from lifecycle import pretraining as pretrain
from lifecycle.core import run, seed_everything
from lifecycle.hardware import choose_precision, device_type, matmul_peak_flops
from lifecycle.io import write_json
from lifecycle.modeling import build_model, training_flops_per_token
from lifecycle.params import schema as P
from lifecycle.throughput import bare_tokens_per_second
from lifecycle.tokens import blocks_to_dataset
from lifecycle.training import StepTimer, causal_lm_collate

OUT = Path("reports/bench/pretrain.json")
TOKENS, TOKENIZER = Path("data/tokens"), Path("models/tokenizer")  # the pretrain stage's inputs
STEPS = int(os.environ.get("BENCH_STEPS", "60"))
WARMUP = 5  # steps excluded from timing: allocator and autocast caches settle


class SteadyTimer(StepTimer):
    """StepTimer that ignores the first WARMUP steps."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step > WARMUP:
            super().on_step_end(args, state, control, **kwargs)
        self._start = None


def stage_run(params: P.Params, tokenizer, train: np.ndarray, precision: str, compiled: bool = False) -> dict:
    """Tokens/s (after WARMUP steps), final loss and whole seconds of the stage's Trainer for STEPS steps, no
    evaluation or checkpoints."""
    from transformers import Trainer

    p = params.pretrain.model_copy(update={"max_steps": STEPS, "eval_steps": 10**9, "save_steps": 10**9,
                                           "logging_steps": STEPS, "torch_compile": compiled,
                                           "warmup_steps": min(params.pretrain.warmup_steps, STEPS)})
    seed_everything(params.seed)
    model = build_model(params.model, tokenizer)
    timer = SteadyTimer()
    with tempfile.TemporaryDirectory() as out:
        args = pretrain.training_arguments(p, precision, device_type(), params.seed, Path(out))
        args.eval_strategy = args.save_strategy = "no"
        args.disable_tqdm = True
        trainer = Trainer(model=model, args=args, train_dataset=blocks_to_dataset(train),
                          data_collator=causal_lm_collate, callbacks=[timer])
        result = trainer.train()
    tokens = timer.steps * p.batch_size * p.gradient_accumulation_steps * train.shape[1]
    return {"tokens_per_s": tokens / timer.seconds, "loss": result.training_loss,
            "seconds": result.metrics["train_runtime"]}


def stage_run_in_subprocess(precision: str, compiled: bool = False) -> dict:
    """A fresh process per run: accelerate's autocast outlives a Trainer, so a second Trainer in the same
    process would silently keep the first one's dtype (measured: bf16=False still ran in bf16)."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.pretrain_throughput", "--stage", precision,
                          *(["--compile"] if compiled else [])], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def bare_run(params: P.Params, tokenizer, train: np.ndarray, precision: str) -> float:
    """Tokens/s of a plain PyTorch loop doing the same work as the stage."""
    seed_everything(params.seed)
    model = build_model(params.model, tokenizer)
    return bare_tokens_per_second(model, train, params.pretrain, precision, STEPS, WARMUP, params.seed)


def load_inputs():
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    params = P.load()
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    train = pretrain.sequences(load_from_disk(str(TOKENS))["train"], params.model.context_length)
    return params, tokenizer, train


def main() -> None:
    if sys.argv[1:2] == ["--stage"]:  # child process: one stage run at one precision
        print(json.dumps(stage_run(*load_inputs(), sys.argv[2], compiled="--compile" in sys.argv[3:])))
        return

    params, tokenizer, train = load_inputs()
    device = device_type()
    precision = choose_precision(params.pretrain.precision, device)
    flops = training_flops_per_token(build_model(params.model, tokenizer), train.shape[1])

    bare = bare_run(params, tokenizer, train, precision)
    eager = stage_run_in_subprocess(precision)
    stage = eager["tokens_per_s"]
    peak = matmul_peak_flops(device, precision)
    result = {"steps": STEPS, "device": device, "precision": precision,
              "threads": __import__("torch").get_num_threads(),
              "stage_vs_bare": {"stage_tokens_per_s": round(stage, 1), "bare_tokens_per_s": round(bare, 1),
                                "ratio": round(stage / bare, 3), "target": 0.95},
              "mfu": {"training_flops_per_token": flops, "peak_tflops_measured": round(peak / 1e12, 4),
                      "achieved_tflops": round(stage * flops / 1e12, 4), "mfu": round(stage * flops / peak, 4),
                      "target": 0.5}}
    if device == "cpu":
        other = "fp32" if precision == "bf16" else "bf16"
        by = {precision: eager, other: stage_run_in_subprocess(other)}
        if "bf16" in by and "fp32" in by:
            result["bf16_vs_fp32"] = versus(("bf16", "fp32"), (by["bf16"], by["fp32"]))
    result["compile_vs_eager"] = versus(("compiled", "eager"), (stage_run_in_subprocess(precision, True), eager))
    write_json(OUT, result)
    print(result)


def versus(names: tuple[str, str], runs: tuple[dict, dict]) -> dict:
    """Two stage runs side by side: tokens/s (and the first's speed-up), whole seconds, final loss."""
    figures = {f"{name}_{key}": round(r[key], digits) for key, digits in
               (("tokens_per_s", 1), ("seconds", 1), ("loss", 5)) for name, r in zip(names, runs)}
    return {**figures, "speedup": round(runs[0]["tokens_per_s"] / runs[1]["tokens_per_s"], 3)}


if __name__ == "__main__":
    run(main)
