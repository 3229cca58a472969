"""FSDP on CPU, two processes over gloo: what PyTorch allows, what the Trainer (the stages' path) allows.

1. PyTorch: one tiny llama pretraining (the project's model factory, same seed, same batches, same steps) under
   torchrun --nproc_per_node 2, as plain data parallel (DDP), FSDP 2 (fully_shard on a CPU mesh: full_shard and
   shard_grad_op) and FSDP 1 (FullyShardedDataParallel, full_shard). Per run: the loss curve and final loss, seconds,
   the weights and AdamW state each rank holds, each rank's peak resident memory, and the whole model gathered
   back to rank 0 as the stages gather it (lifecycle.sharding.whole_model) with its held-out loss.
2. The Trainer: TrainingArguments(fsdp="full_shard auto_wrap") under the same torchrun on CPU, FSDP 1 and 2: the
   error it stops with, or what it actually trained.

python -m benchmarks.fsdp_cpu  ->  reports/bench/fsdp.json  (a few minutes on 2 cores)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lifecycle.core import run
from lifecycle.io import write_json

OUT = Path("reports/bench/fsdp.json")
SEED, VOCAB, CONTEXT, BATCH, LR = 1234, 512, 64, 8, 3e-3
MODES = ("ddp", "fsdp2_full_shard", "fsdp2_shard_grad_op", "fsdp1_full_shard")


def tiny_llama(width: int):
    """The project's llama (RoPE, SwiGLU, RMSNorm), 4 blocks of `width`, tied embeddings; the same on every rank."""
    import torch
    from transformers import AutoModelForCausalLM

    from lifecycle.modeling import build_config
    from lifecycle.params.model import ModelParams
    m = ModelParams(family="llama", n_layers=4, d_model=width, n_heads=4, d_ff=4 * width, context_length=CONTEXT)
    torch.manual_seed(SEED)  # FSDP keeps each rank's own slice of its initial weights: they must agree
    return AutoModelForCausalLM.from_config(build_config(m, VOCAB, 0, 0))


def batches(steps: int, world_size: int):
    """[steps + 1, world_size, BATCH, CONTEXT] token ids with something to learn: each row counts up from a random
    start by a random stride (mod VOCAB). The last step is held out."""
    import torch
    g = torch.Generator().manual_seed(SEED)
    shape = (steps + 1, world_size, BATCH, 1)
    start, stride = torch.randint(0, VOCAB, shape, generator=g), torch.randint(1, 8, shape, generator=g)
    return (start + stride * torch.arange(CONTEXT)) % VOCAB


def sharded(model, mode: str, world_size: int):
    """`model` under `mode`: each transformer block one FSDP unit (as the Trainer's auto_wrap does)."""
    import torch
    if mode == "ddp":
        return torch.nn.parallel.DistributedDataParallel(model)
    if mode.startswith("fsdp1"):
        from torch.distributed.fsdp import FullyShardedDataParallel
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy
        blocks = {type(b) for b in model.model.layers}
        return FullyShardedDataParallel(model, auto_wrap_policy=ModuleWrapPolicy(blocks), use_orig_params=True,
                                        device_id=torch.device("cpu"))
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    mesh, reshard = init_device_mesh("cpu", (world_size,)), mode.endswith("full_shard")
    for block in model.model.layers:
        fully_shard(block, mesh=mesh, reshard_after_forward=reshard)
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard)
    return model


def held_bytes(tensors) -> int:
    """Bytes of the tensors this rank stores (an FSDP 2 DTensor: its local shard)."""
    total = 0
    for t in tensors:
        local = t.to_local() if hasattr(t, "to_local") else t
        total += local.numel() * local.element_size()
    return total


def train(mode: str, steps: int, width: int) -> tuple[object, dict]:
    """One run: (the model as trained, sharded or not; this rank's losses and figures)."""
    import resource

    import torch
    import torch.distributed as dist
    rank, world_size = dist.get_rank(), dist.get_world_size()
    data = batches(steps, world_size)
    model = sharded(tiny_llama(width), mode, world_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)  # after sharding: over the shards
    losses, start = [], time.perf_counter()
    for step in range(steps):
        ids = data[step, rank]
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        losses.append(round(mean.item() / world_size, 6))
    seconds = time.perf_counter() - start
    state_tensors = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v) and v.dim()]
    figures = {"seconds": round(seconds, 3), "weights_bytes": held_bytes(model.parameters()),
               "adam_state_bytes": held_bytes(state_tensors),
               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    return model, {"losses": losses, "rank": figures, "held_out": data[steps, 0]}


def as_trainer(model, mode: str):
    """What lifecycle.sharding.whole_model reads of a Trainer, for a model trained here: under DDP the Trainer's
    `model` is the bare model, under FSDP the sharded one."""
    from types import SimpleNamespace
    rank = int(os.environ["RANK"])
    return SimpleNamespace(is_fsdp_enabled=mode != "ddp", model=getattr(model, "module", model) if mode == "ddp"
                           else model, args=SimpleNamespace(device="cpu"), is_world_process_zero=lambda: rank == 0,
                           accelerator=SimpleNamespace(unwrap_model=lambda m: getattr(m, "module", m)))


def gathered_figures(model, mode: str, held_out) -> dict | None:
    """The whole model as the stages gather it (every rank takes part), on rank 0: its parameter count, held-out
    loss and digest; None on the others."""
    import torch

    from lifecycle.pretraining import weights_digest
    from lifecycle.sharding import whole_model
    whole = whole_model(as_trainer(model, mode))
    if whole is None or int(os.environ["RANK"]) != 0:
        return None
    with torch.no_grad():
        loss = whole(input_ids=held_out, labels=held_out).loss.item()
    return {"parameters": sum(p.numel() for p in whole.parameters()), "held_out_loss": round(loss, 6),
            "weights_sha256": weights_digest(whole)}


def worker(out: Path, modes: list[str], steps: int, width: int) -> None:
    """Under torchrun: each mode in turn in the same process group (peak memory then the largest so far); rank 0
    writes out/<mode>.json."""
    import torch.distributed as dist

    from lifecycle.pretraining import gather, limit_threads_per_process
    dist.init_process_group("gloo")
    limit_threads_per_process(dist.get_world_size())
    for mode in modes:
        model, result = train(mode, steps, width)
        ranks, held_out = gather(result.pop("rank")), result.pop("held_out")
        report = {"mode": mode, "steps": steps, "final_loss": result["losses"][-1],
                  "seconds": max(r["seconds"] for r in ranks), **result, "ranks": ranks}
        if dist.get_rank() == 0:  # written before the gather too: a crash there keeps the training figures
            write_json(out / f"{mode}.json", report)
        gathered = gathered_figures(model, mode, held_out)
        if gathered:
            write_json(out / f"{mode}.json", {**report, "gathered": gathered})
    dist.destroy_process_group()


def trainer_worker(out: Path, version: int, steps: int, width: int) -> None:
    """Under torchrun: the Trainer asked for FSDP `version` on CPU; rank 0 writes out/trainer_fsdp<version>.json."""
    import datasets
    from transformers import Trainer, TrainingArguments

    from lifecycle.sharding import wrap_classes
    from lifecycle.training import causal_lm_collate
    os.environ["FSDP_VERSION"] = str(version)
    model, rank = tiny_llama(width), int(os.environ["RANK"])
    rows = datasets.Dataset.from_dict({"input_ids": batches(steps, 1).reshape(-1, CONTEXT).tolist()})
    report = {"version": version}
    try:
        args = TrainingArguments(output_dir=str(out / f"trainer{version}"), max_steps=steps, use_cpu=True,
                                 per_device_train_batch_size=BATCH, ddp_backend="gloo", report_to="none",
                                 save_strategy="no", remove_unused_columns=False, disable_tqdm=True,
                                 fsdp="full_shard auto_wrap", fsdp_config={"transformer_layer_cls_to_wrap":
                                                                           wrap_classes(model)})
        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=causal_lm_collate)
        report["train_loss"] = round(trainer.train().training_loss, 6)
        report |= {"is_fsdp_enabled": trainer.is_fsdp_enabled,
                   "distributed_type": str(trainer.accelerator.state.distributed_type),
                   "wrapped_as": type(trainer.model_wrapped).__name__}
    except Exception as err:  # noqa: BLE001 - the error is the figure
        report["error"] = f"{type(err).__name__}: {err}"
    if rank == 0:
        write_json(out / f"trainer_fsdp{version}.json", report)


def launch(out: Path, *args: str, steps: int, width: int, timeout: int = 900) -> dict:
    """torchrun --nproc_per_node 2 of this module; its exit code and last stderr line."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(29600 + os.getpid() % 300), "-m", "benchmarks.fsdp_cpu", *args, "--out", str(out),
               "--steps", str(steps), "--width", str(width)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=os.environ | {
        "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"})
    errors = [line for line in done.stderr.splitlines() if "Error" in line or "Signal" in line]
    return {"exit_code": done.returncode, "error": errors[-1].strip() if done.returncode and errors else None}


def compare(runs: dict) -> dict:
    """Each sharded run against DDP: final loss difference, seconds ratio, per-rank weights + AdamW bytes ratio."""
    ddp = runs["ddp"]
    out = {}
    for mode, r in runs.items():
        if mode == "ddp" or "final_loss" not in r:
            continue
        held = [x["weights_bytes"] + x["adam_state_bytes"] for x in r["ranks"]]
        out[mode] = {"final_loss_minus_ddp": round(r["final_loss"] - ddp["final_loss"], 6),
                     "max_step_loss_difference": round(max(abs(a - b) for a, b in zip(r["losses"], ddp["losses"])), 6),
                     "seconds_over_ddp": round(r["seconds"] / ddp["seconds"], 3),
                     "held_bytes_per_rank_over_ddp": round(max(held) / (ddp["ranks"][0]["weights_bytes"]
                                                                        + ddp["ranks"][0]["adam_state_bytes"]), 3),
                     "gathered_held_out_loss_minus_ddp": (round(r["gathered"]["held_out_loss"]
                                                                - ddp["gathered"]["held_out_loss"], 6)
                                                          if r.get("gathered") else None)}
    return out


def measure(steps: int, width: int) -> dict:
    import torch
    import transformers
    with tempfile.TemporaryDirectory() as tmp:
        out, launches = Path(tmp), {}
        for mode in MODES:  # a process group each: peak resident memory is a process's whole life
            launches[mode] = launch(out, "train", mode, steps=steps, width=width)
        runs = {m: json.loads((out / f"{m}.json").read_text()) for m in MODES if (out / f"{m}.json").exists()}
        for version in (1, 2):
            launches[f"trainer_fsdp{version}"] = launch(out, "trainer", "--version", str(version), steps=steps,
                                                        width=width)
        trainer = {v: json.loads((out / f"trainer_fsdp{v}.json").read_text()) for v in (1, 2)
                   if (out / f"trainer_fsdp{v}.json").exists()}
    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "accelerate": __import__("accelerate").__version__, "processes": 2, "backend": "gloo",
            "threads_per_process": max(1, (os.cpu_count() or 1) // 2), "steps": steps, "width": width,
            "parameters": next(iter(runs.values()))["gathered"]["parameters"] if runs else None,
            "launches": launches, "runs": runs, "against_ddp": compare(runs) if "ddp" in runs else {},
            "trainer_on_cpu": trainer}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", nargs="?", choices=("train", "trainer"))
    parser.add_argument("modes", nargs="*")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--version", type=int, default=2)
    a = parser.parse_args()
    if a.role == "train":
        return worker(a.out, a.modes, a.steps, a.width)
    if a.role == "trainer":
        return trainer_worker(a.out, a.version, a.steps, a.width)
    result = measure(a.steps, a.width)
    write_json(OUT, result)
    print(json.dumps(result["against_ddp"], indent=2))


if __name__ == "__main__":
    run(main)
