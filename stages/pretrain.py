"""pretrain: train the causal LM from `model:` on the packed blocks with the Hugging Face Trainer.

data/tokens + models/tokenizer -> models/pretrained/ (safetensors, config, tokenizer), resumable checkpoints in
models/checkpoints/pretrain/, dvclive curves in reports/live/pretrain/, reports/{pretrain,model}.json and
reports/samples/pretrain.md. Runs unchanged under `torchrun --nproc_per_node=N` (gloo on CPU, NCCL on GPU).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from lifecycle.core import seed_everything
from lifecycle.hardware import choose_precision, device_type, init_distributed, world
from lifecycle.io import atomic_path, write_json
from lifecycle.modeling import build_model, context_length, parameter_counts, training_flops_per_token
from lifecycle.params.base import load
from lifecycle.params.model import ModelParams
from lifecycle.params.pretrain import PretrainParams
from lifecycle.params.tokenizer import TokenizeParams
from lifecycle.pretraining import (
    gather,
    generate_samples,
    greedy_repetition,
    limit_threads_per_process,
    run_report,
    samples_markdown,
    train_between_peaks,
    training_arguments,
    training_sequences,
    weights_digest,
)
from lifecycle.sharding import fsdp_arguments, refuse_unshardable, whole_model
from lifecycle.tokens import blocks_to_dataset
from lifecycle.training import (
    LiveCurves,
    WholeRun,
    causal_lm_collate,
    checkpoint_step,
    curves_of,
    mark_finished,
    resume_for,
)

log = logging.getLogger("llm-lifecycle.pretrain")
TOKENS, TOKENIZER = Path("data/tokens"), Path("models/tokenizer")
OUT, CHECKPOINTS, LIVE = Path("models/pretrained"), Path("models/checkpoints/pretrain"), Path("reports/live/pretrain")
SAMPLES = Path("reports/samples/pretrain.md")


def main() -> None:
    from transformers import AutoTokenizer, Trainer
    from transformers.utils import logging as hf_logging

    params = load(pretrain=PretrainParams, model=ModelParams, tokenize=TokenizeParams)
    p = params.pretrain
    rank, _, world_size = world()
    device = device_type()
    if device == "cpu":
        limit_threads_per_process(world_size)
    hf_logging.set_verbosity_warning()
    seed_everything(params.seed)
    precision = choose_precision(p.precision, device)
    refuse_unshardable(p.fsdp, "pretrain.fsdp", device, world_size)  # before any work
    init_distributed(device, p.ddp_timeout_s)
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    model = build_model(params.model, tokenizer)
    sharding = fsdp_arguments(p.fsdp, "pretrain.fsdp", model, device, p.gradient_checkpointing)  # {}: plain DDP
    train, validation, length = training_sequences(TOKENS, model, params.tokenize.block_size, params.model.base)

    resume = resume_for(CHECKPOINTS, rank == 0, [TOKENS, TOKENIZER], params.seed, params.model.model_dump(),
                        p.model_dump(exclude={"samples"}), world_size)
    whole = WholeRun(resume)  # loss, seconds and throughput of the whole run, across a resume
    trainer = Trainer(model=model, args=training_arguments(p, precision, device, params.seed, CHECKPOINTS, **sharding),
                      train_dataset=blocks_to_dataset(train),
                      eval_dataset=blocks_to_dataset(validation[: p.eval_max_blocks]), data_collator=causal_lm_collate,
                      callbacks=[LiveCurves(curves_of(CHECKPOINTS), checkpoint_step(resume)), whole])
    run, peaks = train_between_peaks(whole, trainer, device, precision, measure=rank == 0)
    final = trainer.evaluate(eval_dataset=blocks_to_dataset(validation))
    model = whole_model(trainer)  # under FSDP every rank gives its shard, rank 0 gets the whole model
    digests = gather(weights_digest(model) if model is not None else None)
    if rank != 0:
        return
    counts, flops_per_token = parameter_counts(model), training_flops_per_token(model, length)
    timing = {"peaks": peaks, "flops_per_token": flops_per_token, "length": length, "world_size": world_size,
              "parameters": counts["total"], "resumed_from_step": checkpoint_step(resume)}
    token_report = json.loads(Path("reports/tokens.json").read_text())["validation"]
    data = {"train": train, "validation": validation, "vocab_size": len(tokenizer), **token_report}
    report = {**run_report(p, trainer, run, final, timing, data), "device": device, "precision": precision,
              "world_size": world_size, "fsdp": p.fsdp and p.fsdp.sharding, "weights_sha256": digests[0],
              "ranks_identical": len(set(digests)) == 1 if p.fsdp is None else None}  # FSDP: shards differ by design
    save_outputs(model, tokenizer, params, report, counts, flops_per_token)
    log.info("validation perplexity %.2f (unigram %.2f), %.0f tokens/s, MFU %.1f%%", report["validation_perplexity"],
             report["unigram_perplexity"], report["tokens_per_second"], 100 * report["mfu"])


def save_outputs(model, tokenizer, params, report: dict, counts: dict, flops_per_token: int) -> None:
    s = params.pretrain.samples
    samples = generate_samples(model, tokenizer, s, params.seed)
    plain = samples if s.repetition_penalty == 1 else \
        generate_samples(model, tokenizer, s.model_copy(update={"repetition_penalty": 1.0}), params.seed)
    report |= {"greedy_repeated_4gram_share": greedy_repetition(samples),
               "greedy_repeated_4gram_share_no_penalty": greedy_repetition(plain)}
    with atomic_path(OUT, directory=True) as tmp:
        model.config.use_cache = True
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    write_json("reports/model.json", {"family": model.config.model_type, "base": params.model.base,
                                      "parameters": counts, "context_length": context_length(model),
                                      "training_flops_per_token": flops_per_token})
    with atomic_path(SAMPLES) as tmp:
        tmp.write_text(samples_markdown(samples, s, report["greedy_repeated_4gram_share_no_penalty"]),
                       encoding="utf-8")
    write_json("reports/pretrain.json", report)
    mark_finished(CHECKPOINTS, LIVE)  # only once every output is written: a kill before this resumes instead


if __name__ == "__main__":
    from lifecycle.core import run
    run(main)
