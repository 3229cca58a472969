"""pretrain: train the causal LM from `model:` on the packed blocks with the Hugging Face Trainer.

data/tokens + models/tokenizer -> models/pretrained/ (safetensors, config, tokenizer), resumable checkpoints in
models/checkpoints/pretrain/, dvclive curves in reports/live/pretrain/, reports/{pretrain,model}.json and
reports/samples/pretrain.md. Runs unchanged under `torchrun --nproc_per_node=N` (gloo on CPU, NCCL on GPU).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path

import numpy as np

from stages import params as P
from stages.core import StageError, atomic_path, blocks_to_dataset, choose_precision, device_type, \
    init_distributed, matmul_peak_flops, seed_everything, world, write_json
from stages.modeling import build_model, context_length, parameter_counts, training_flops_per_token
from stages.training import LiveCurves, StepTimer, causal_lm_collate, checkpoint_step, code_digest, file_digest, \
    fingerprint, mark_finished, resume_point

log = logging.getLogger("llm-lifecycle.pretrain")
TOKENS, TOKENIZER = Path("data/tokens"), Path("models/tokenizer")
OUT, CHECKPOINTS, LIVE = Path("models/pretrained"), Path("models/checkpoints/pretrain"), Path("reports/live/pretrain")
SAMPLES = Path("reports/samples/pretrain.md")


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


def training_arguments(p: P.PretrainParams, precision: str, device: str, seed: int, output_dir: Path):
    from transformers import TrainingArguments

    return TrainingArguments(
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
        disable_tqdm=False, remove_unused_columns=False)


def generate_samples(model, tokenizer, s: P.Samples, seed: int) -> list[dict]:
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
                generated = model.generate(ids, max_new_tokens=new, pad_token_id=tokenizer.pad_token_id, **kwargs)
            row[mode] = tokenizer.decode(generated[0, ids.shape[1]:], skip_special_tokens=True)
        out.append(row)
    return out


def samples_markdown(samples: list[dict]) -> str:
    lines = ["# Pretrained model: samples", "", "The prompt, then the model's continuation after `|`.", ""]
    for s in samples:
        for mode in ("greedy", "sampled"):
            lines += [f"**{mode}**", "", "```text", f"{s['prompt']}|{s[mode]}", "```", ""]
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


def main() -> None:
    import torch
    from datasets import load_from_disk
    from transformers import AutoTokenizer, Trainer
    from transformers.utils import logging as hf_logging

    params = P.load()
    p, m = params.pretrain, params.model
    rank, local_rank, world_size = world()
    is_main = rank == 0
    if world_size > 1 and device_type() == "cpu":  # no oversubscription: the cores are shared by the processes
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world_size))))
    hf_logging.set_verbosity_warning()
    seed_everything(params.seed)

    device = device_type()
    precision = choose_precision(p.precision, device)
    init_distributed(device, p.ddp_timeout_s)
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    model = build_model(m, tokenizer)
    length = context_length(model)
    if m.base and length > params.tokenize.block_size:
        length = params.tokenize.block_size  # a long-context base model trains on the blocks it is given
    tokens = load_from_disk(str(TOKENS))
    train, validation = sequences(tokens["train"], length), sequences(tokens["validation"], length)
    if len(validation) == 0 or len(train) == 0:
        raise StageError(f"{TOKENS}: no complete {length}-token sequence in a split; lower tokenize.block_size")

    digest = fingerprint(params.seed, params.model.model_dump(), p.model_dump(exclude={"samples"}), world_size,
                         file_digest(TOKENS, TOKENIZER), code_digest())
    resume = resume_point(CHECKPOINTS, digest, is_main)
    if resume:
        log.info("resuming from %s", resume)

    timer = StepTimer()
    eval_subset = blocks_to_dataset(validation[: p.eval_max_blocks])
    trainer = Trainer(model=model, args=training_arguments(p, precision, device, params.seed, CHECKPOINTS),
                      train_dataset=blocks_to_dataset(train), eval_dataset=eval_subset, data_collator=causal_lm_collate,
                      callbacks=[LiveCurves(LIVE, checkpoint_step(resume)), timer])
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    final = trainer.evaluate(eval_dataset=blocks_to_dataset(validation))
    digests = gather(weights_digest(trainer.model))
    if not is_main:
        return

    peak = matmul_peak_flops(device, precision)
    flops_per_token = training_flops_per_token(trainer.model, length)
    tokens_per_step = p.batch_size * p.gradient_accumulation_steps * world_size * length
    tokens_per_second = timer.steps * tokens_per_step / timer.seconds if timer.seconds else 0.0
    counts = parameter_counts(trainer.model)
    token_report = json.loads(Path("reports/tokens.json").read_text())["validation"]
    loss = final["eval_loss"]
    report = {
        "validation_loss": round(loss, 4),
        "validation_perplexity": round(math.exp(loss), 3),
        "validation_bits_per_byte": round(bits_per_byte(loss, token_report["tokens"], token_report["bytes"]), 4),
        "unigram_perplexity": round(unigram_perplexity(train, validation, len(tokenizer)), 3),
        "train_loss": round(result.training_loss, 4),
        "steps": trainer.state.global_step, "resumed_from_step": checkpoint_step(resume),
        "tokens_seen": trainer.state.global_step * tokens_per_step,
        "tokens_per_parameter": round(trainer.state.global_step * tokens_per_step / counts["total"], 3),
        "tokens_per_second": round(tokens_per_second, 1),
        "train_seconds": round(result.metrics["train_runtime"], 2),
        "achieved_tflops": round(tokens_per_second * flops_per_token / 1e12, 4),
        "peak_tflops_measured": round(peak * world_size / 1e12, 4),
        "mfu": round(tokens_per_second * flops_per_token / (peak * world_size), 4),
        "device": device, "precision": precision, "world_size": world_size,
        "weights_sha256": digests[0], "ranks_identical": len(set(digests)) == 1,
    }
    samples = generate_samples(trainer.model, tokenizer, p.samples, params.seed)
    with atomic_path(OUT, directory=True) as tmp:
        trainer.model.config.use_cache = True
        trainer.model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    write_json("reports/model.json", {"family": trainer.model.config.model_type, "base": m.base,
                                      "parameters": counts, "context_length": context_length(trainer.model),
                                      "training_flops_per_token": flops_per_token})
    with atomic_path(SAMPLES) as tmp:
        tmp.write_text(samples_markdown(samples), encoding="utf-8")
    write_json("reports/pretrain.json", report)
    mark_finished(CHECKPOINTS)  # only once every output is written: a kill before this resumes instead
    log.info("validation perplexity %.2f (unigram %.2f), %.0f tokens/s, MFU %.1f%%", report["validation_perplexity"],
             report["unigram_perplexity"], tokens_per_second, 100 * report["mfu"])


if __name__ == "__main__":
    from stages.core import run
    run(main)
