"""Pretraining: training sequences, arguments for the Trainer, the run's figures (perplexity, bits per byte,
throughput, MFU) and samples for a reviewer to read."""
from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path

import numpy as np

from lifecycle.core import StageError
from lifecycle.hardware import matmul_peak_flops, world
from lifecycle.modeling import context_length
from lifecycle.params.pretrain import PretrainParams, Samples

log = logging.getLogger("llm-lifecycle.pretrain")
PEAK_SPREAD = 1.3  # the peaks measured before and after training differ more: something else used the cores


def sequences(dataset, length: int) -> np.ndarray:
    """The packed blocks cut into training sequences of the model's context length."""
    blocks = dataset.with_format("numpy")[:]["input_ids"]
    if blocks.shape[1] % length:
        raise StageError(f"params.yaml: the packed blocks ({blocks.shape[1]} tokens) are not a multiple of the "
                         f"model's context ({length}); set tokenize.block_size to a multiple of it")
    return blocks.reshape(-1, length)


def unigram_perplexity(train: np.ndarray, evaluation: np.ndarray, vocab_size: int) -> float:
    """Perplexity of add-one smoothed train token frequencies on the evaluation tokens: the floor to beat."""
    counts = np.bincount(train.reshape(-1), minlength=vocab_size).astype(np.float64) + 1.0
    log_p = np.log(counts / counts.sum())
    return float(np.exp(-log_p[evaluation[:, 1:].reshape(-1)].mean()))


def bits_per_byte(loss: float, tokens: int, n_bytes: int) -> float:
    """Nats per token -> bits per UTF-8 byte: comparable across tokenizers."""
    return loss / math.log(2) * tokens / n_bytes


def training_arguments(p: PretrainParams, precision: str, device: str, seed: int, output_dir: Path, **overrides):
    """`overrides`: keywords that replace these (lifecycle.sharding.fsdp_arguments)."""
    from transformers import TrainingArguments

    return TrainingArguments(**dict(
        output_dir=str(output_dir), max_steps=p.max_steps, per_device_train_batch_size=p.batch_size,
        per_device_eval_batch_size=p.batch_size, gradient_accumulation_steps=p.gradient_accumulation_steps,
        learning_rate=p.learning_rate, adam_beta1=p.adam_beta1, adam_beta2=p.adam_beta2, weight_decay=p.weight_decay,
        warmup_steps=p.warmup_steps, lr_scheduler_type=p.lr_scheduler, max_grad_norm=p.max_grad_norm,
        bf16=precision == "bf16", fp16=precision == "fp16", use_cpu=device == "cpu",
        gradient_checkpointing=p.gradient_checkpointing, torch_compile=p.torch_compile,
        eval_strategy="steps", eval_steps=p.eval_steps, save_strategy="steps", save_steps=p.save_steps,
        save_total_limit=2, logging_steps=p.logging_steps, seed=seed, data_seed=seed, report_to="none",
        dataloader_drop_last=True, ddp_timeout=p.ddp_timeout_s,
        ddp_backend=None if world()[2] == 1 else "nccl" if device == "cuda" else "gloo",
        disable_tqdm=False, remove_unused_columns=False) | overrides)


def generate_samples(model, tokenizer, s: Samples, seed: int) -> list[dict]:
    """Greedy and sampled continuations of fixed prompts, for a reviewer to read what changed."""
    import torch

    model.eval()
    model.config.use_cache = True
    limit = context_length(model)
    out = []
    for prompt in s.prompts:
        ids = tokenizer(prompt, return_tensors="pt").input_ids.to(model.device)
        new = max(1, min(s.max_new_tokens, limit - ids.shape[1]))
        row = {"prompt": prompt}
        for mode, kwargs in (("greedy", {"do_sample": False}),
                             ("sampled", {"do_sample": True, "temperature": s.temperature, "top_k": s.top_k,
                                          "top_p": s.top_p})):
            torch.manual_seed(seed)
            with torch.no_grad():
                generated = model.generate(ids, max_new_tokens=new, pad_token_id=tokenizer.pad_token_id,
                                           repetition_penalty=s.repetition_penalty, **kwargs)
            row[mode] = tokenizer.decode(generated[0, ids.shape[1]:], skip_special_tokens=True)
        out.append(row)
    return out


def repeated_ngram_share(text: str, n: int = 4) -> float:
    """The share of a text's word n-grams that already occurred earlier in it: 0 for text that never repeats
    itself, near 1 for a loop ("And I have a man, / And I have a man, ...")."""
    words = text.split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    seen, repeats = set(), 0
    for gram in grams:
        repeats += gram in seen
        seen.add(gram)
    return repeats / len(grams) if grams else 0.0


def greedy_repetition(samples: list[dict], n: int = 4) -> float:
    """The mean share of repeated word n-grams in the greedy continuations: how much the model loops."""
    return round(sum(repeated_ngram_share(s["greedy"], n) for s in samples) / max(len(samples), 1), 4)


def samples_markdown(samples: list[dict], s: Samples, plain: float) -> str:
    """The samples for a reviewer, with how much the greedy ones repeat themselves (`plain`: without the penalty)."""
    penalty = (f"Decoded with repetition_penalty {s.repetition_penalty} (pretrain.samples); without it the greedy "
               f"continuations repeat {plain:.1%} of their 4-grams." if s.repetition_penalty != 1 else "")
    lines = ["# Pretrained model: samples", "", "The prompt, then the model's continuation after `|`.",
             f"Repeated word 4-grams in the greedy continuations: {greedy_repetition(samples):.1%} (0 % never "
             f"repeats; a loop approaches 100 %). {penalty}".rstrip(), ""]
    for s in samples:
        for mode in ("greedy", "sampled"):
            share = f" (repeated 4-grams {repeated_ngram_share(s[mode]):.0%})"
            lines += [f"**{mode}**{share}", "", "```text", f"{s['prompt']}|{s[mode]}", "```", ""]
    return "\n".join(lines)


def weights_digest(model) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def gather(value):
    """Every rank's value, on every rank (a list of one without torch.distributed)."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def run_report(p: PretrainParams, trainer, run: dict, final: dict, timing: dict, data: dict) -> dict:
    """The figures of a finished run. `run`: the whole run's train loss, wall seconds, and the optimizer steps
    timed and their seconds (training.WholeRun: before and after a resume); `timing`: the peak FLOP/s measured
    before and after training, FLOPs per token, sequence length, world size; `data`: train and validation
    sequences, vocabulary size, validation tokens and bytes."""
    world_size, length, peak = timing["world_size"], timing["length"], steady_peak(timing["peaks"])
    tokens_per_step = p.batch_size * p.gradient_accumulation_steps * world_size * length
    tokens_per_second = run["steps"] * tokens_per_step / run["step_seconds"] if run["step_seconds"] else 0.0
    achieved = tokens_per_second * timing["flops_per_token"]
    loss, steps = final["eval_loss"], trainer.state.global_step
    return {
        "validation_loss": round(loss, 4),
        "validation_perplexity": round(math.exp(loss), 3),
        "validation_bits_per_byte": round(bits_per_byte(loss, data["tokens"], data["bytes"]), 4),
        "unigram_perplexity": round(unigram_perplexity(data["train"], data["validation"], data["vocab_size"]), 3),
        "train_loss": round(run["train_loss"], 4),
        "steps": steps, "resumed_from_step": timing["resumed_from_step"],
        "tokens_seen": steps * tokens_per_step,
        "tokens_per_parameter": round(steps * tokens_per_step / timing["parameters"], 3),
        "tokens_per_second": round(tokens_per_second, 1),
        "train_seconds": round(run["seconds"], 2),
        "achieved_tflops": round(achieved / 1e12, 4),
        "peak_tflops_measured": round(peak * world_size / 1e12, 4),
        "peak_tflops_before_after": [round(x * world_size / 1e12, 4) for x in timing["peaks"]],
        "mfu": round(achieved / (peak * world_size), 4),
    }


def train_between_peaks(whole, trainer, device: str, precision: str, measure: bool) -> tuple[dict, list[float]]:
    """`whole.train(trainer)` (training.WholeRun), with this machine's matmul peak measured before and after it when
    `measure` (rank 0): the two go to steady_peak."""
    before = [matmul_peak_flops(device, precision)] if measure else []
    run = whole.train(trainer)
    return run, before + ([matmul_peak_flops(device, precision)] if measure else [])


def steady_peak(peaks: list[float]) -> float:
    """The best of the matmul peaks measured before and after training. One measurement alone varied 2x between
    runs here when another process held a core; measured twice, a busy stretch shows as a spread, and is said."""
    if max(peaks) > PEAK_SPREAD * min(peaks):
        log.warning("the matmul peak measured before and after training differ (%s TFLOP/s): something else used "
                    "the cores, so tokens/s and MFU are not comparable with another run's",
                    " and ".join(f"{x / 1e12:.3f}" for x in peaks))
    return max(peaks)


def limit_threads_per_process(world_size: int) -> None:
    """No oversubscription under torchrun on CPU: the cores are shared by the processes."""
    import os

    import torch
    if world_size > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world_size))))


def training_sequences(tokens_dir: Path, model, block_size: int, base: str | None):
    """(train, validation, length): sequences of the model's context cut from the packed blocks (a long-context base
    model trains on the blocks it is given)."""
    from datasets import load_from_disk

    length = min(context_length(model), block_size) if base else context_length(model)
    tokens = load_from_disk(str(tokens_dir))
    train, validation = sequences(tokens["train"], length), sequences(tokens["validation"], length)
    if len(validation) == 0 or len(train) == 0:
        raise StageError(f"{tokens_dir}: no complete {length}-token sequence in a split; lower tokenize.block_size")
    return train, validation, length
