"""Sharded training (FSDP): the Trainer's arguments for a `fsdp` params setting, and the trained model gathered whole
again for saving and sampling.

Under FSDP each torchrun process holds a shard of the weights, gradients and optimizer state (under DDP, a whole copy
each). The Trainer hands FSDP to accelerate, which shards on GPUs only: on CPU accelerate 1.15 stops with "There are
currently no available devices found" (FSDP 1), or trains plain DDP without a word (FSDP 2), so we refuse it there.
PyTorch itself shards on CPU over gloo (fully_shard on a CPU mesh): benchmarks/fsdp_cpu.py measures it against DDP
(reports/bench/fsdp.json).
"""
from __future__ import annotations

import os

from lifecycle.core import StageError
from lifecycle.hardware import world


def refuse_unshardable(f, key: str, device: str, world_size: int) -> None:
    """One clear line, before any work, where the `key` setting `f` (pretrain.fsdp, finetune.fsdp) cannot shard."""
    if f is None:
        return
    if device != "cuda":
        raise StageError(f"params.yaml: {key} is set but this machine has no GPU: the Trainer's FSDP (accelerate) "
                         f"shards on GPUs only; set {key}: null to train data-parallel on CPU "
                         "(what PyTorch allows on CPU: reports/bench/fsdp.json)")
    if world_size < 2:
        raise StageError(f"params.yaml: {key} is set but this is one process, nothing to shard over: run under "
                         f"torchrun --nproc_per_node N (N GPUs), or set {key}: null")


def wrap_classes(model) -> list[str]:
    """The model's transformer block classes (LlamaDecoderLayer, GPT2Block): each block becomes one FSDP unit,
    gathered whole only while it computes."""
    names = sorted(set(getattr(model, "_no_split_modules", None) or []))
    if not names:
        raise StageError(f"{type(model).__name__} names no transformer block class (_no_split_modules) to shard by")
    return names


def fsdp_arguments(f, key: str, model, device: str, checkpointing: bool = False) -> dict:
    """TrainingArguments keywords for the `key` setting `f` (a params Fsdp, or None: {}, plain data parallel).

    `checkpointing`: recompute activations in the backward pass. Under FSDP this is the unit's own activation
    checkpointing: the model's gradient checkpointing would all-gather each block's weights once more."""
    if f is None:
        return {}
    refuse_unshardable(f, key, device, world()[2])
    # transformers 4.57 hands the FSDP settings to accelerate through the environment; these three it does not set
    os.environ["FSDP_VERSION"] = str(f.version)
    os.environ["FSDP_RESHARD_AFTER_FORWARD"] = str(f.sharding != "shard_grad_op").lower()  # FSDP 2's name for it
    os.environ["FSDP_STATE_DICT_TYPE"] = "FULL_STATE_DICT"  # checkpoints whole: resumable, loadable by from_pretrained
    return {"fsdp": f"{f.sharding} auto_wrap" + (" offload" if f.offload else ""), "gradient_checkpointing": False,
            "fsdp_config": {"transformer_layer_cls_to_wrap": wrap_classes(model),
                            "activation_checkpointing": checkpointing}}


def full_state(module) -> dict:
    """The whole state dict of a sharded (FSDP 1 or 2), replicated (DDP) or plain module in a process group: with GPUs
    in CPU memory on rank 0 ({} on the others), as accelerate gathers it; on CPU on every rank. A collective: every
    process must call it."""
    import torch
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    # "offloading" CPU weights to the CPU gains nothing, and crashes FSDP 1's gather on CPU (SIGSEGV, torch 2.13)
    offload = torch.cuda.is_available()
    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=offload))


def unsharded(sharded, state: dict):
    """A plain model of `sharded`'s class and config holding `state` (the whole weights)."""
    from torch.distributed.fsdp import FSDPModule
    cls = next(c for c in type(sharded).__mro__ if not issubclass(c, FSDPModule))  # FSDP 2 subclasses the model
    model = cls(sharded.config)
    model.load_state_dict(state)  # strict: a weight missing from the gathered state is a bug, not a warning
    model.generation_config = sharded.generation_config
    return model


def whole_model(trainer):
    """The trained model in one piece: trainer.model on every process, except under FSDP, where the shards are
    gathered to the main process (every process must call this) and the others get None."""
    if not getattr(trainer, "is_fsdp_enabled", False):
        return trainer.model
    state = full_state(trainer.model)
    if not trainer.is_world_process_zero():
        return None
    return unsharded(trainer.accelerator.unwrap_model(trainer.model), state).to(trainer.args.device)
