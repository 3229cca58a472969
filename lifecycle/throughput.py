"""Training throughput measured in a bare PyTorch loop: the work of the pretrain stage's Trainer (same model,
AdamW with the stage's decay groups, warmup + schedule, clipping, autocast), without its bookkeeping.

The pretraining benchmark compares the stage with it; the sweep probes each variant with it to give every variant
the same wall-clock budget.
"""
from __future__ import annotations

import time

import numpy as np

from lifecycle.params.pretrain import PretrainParams


def bare_tokens_per_second(model, blocks: np.ndarray, p: PretrainParams, precision: str, steps: int, warmup: int,
                           seed: int) -> float:
    """Tokens/s of `steps` optimizer steps on rows of `blocks` (batch_size x length token ids), the first `warmup`
    steps untimed (allocator and autocast caches settle)."""
    import torch
    from transformers import get_scheduler

    model.train()
    decay = [prm for prm in model.parameters() if prm.ndim >= 2]
    no_decay = [prm for prm in model.parameters() if prm.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": p.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=p.learning_rate, betas=(p.adam_beta1, p.adam_beta2))
    scheduler = get_scheduler(p.lr_scheduler, optimizer, num_warmup_steps=min(p.warmup_steps, steps),
                              num_training_steps=steps)
    generator = np.random.default_rng(seed)
    seconds = 0.0
    for step in range(steps):
        start = time.perf_counter()
        ids = torch.as_tensor(blocks[generator.integers(0, len(blocks), p.batch_size)], dtype=torch.long)
        for _ in range(p.gradient_accumulation_steps):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), p.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= warmup:
            seconds += time.perf_counter() - start
    tokens = (steps - warmup) * p.batch_size * p.gradient_accumulation_steps * blocks.shape[1]
    return tokens / seconds
