"""Shared training machinery for the Trainer-based stages: resumable checkpoints, dvclive curves, throughput."""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import shutil
import time
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

log = logging.getLogger("llm-lifecycle.training")
FINGERPRINT, FINISHED = "fingerprint.json", "finished"


# ---- checkpoints: resume after an interruption, start fresh when the inputs change ----

def fingerprint(*parts) -> str:
    """A digest of everything that defines a run (params, data digests, world size)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(*paths: Path, pattern: str = "*") -> str:
    h = hashlib.sha256()
    for path in paths:
        for f in sorted(p for p in Path(path).rglob(pattern) if p.is_file()) if Path(path).is_dir() else [Path(path)]:
            h.update(f.name.encode())
            with open(f, "rb") as stream:
                for chunk in iter(lambda: stream.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


def complete(checkpoint: Path) -> bool:
    """The Trainer writes trainer_state.json last: without it a checkpoint was cut short (kill -9)."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return any(checkpoint.glob("*.safetensors"))


def code_digest() -> str:
    """The project's code (library and stages): a fixed bug must retrain, not resume."""
    root = Path(__file__).resolve().parents[1]
    return file_digest(root / "lifecycle", root / "stages", pattern="*.py")


def prepare_checkpoints(directory: Path, digest: str, is_main: bool) -> Path | None:
    """The checkpoint to resume an interrupted run from, or None for a fresh start.

    Checkpoints of other inputs (params, data, code, process count), of a run that finished, or cut short
    by a kill are removed: resuming is only for the same run, interrupted."""
    marker = directory / FINGERPRINT
    stale = directory.exists() and (not marker.exists() or json.loads(marker.read_text()).get("fingerprint") != digest)
    finished = (directory / FINISHED).exists()
    if stale or finished:
        if is_main:
            log.info("%s: starting fresh",
                     "inputs changed since the last checkpoints" if stale else "the last run finished")
            shutil.rmtree(directory)
    checkpoints = sorted(directory.glob("checkpoint-*"), key=checkpoint_step) if directory.exists() else []
    resume = None
    for checkpoint in reversed(checkpoints):
        if complete(checkpoint):
            resume = checkpoint
            break
        if is_main:
            log.info("removing incomplete %s", checkpoint)
            shutil.rmtree(checkpoint, ignore_errors=True)
    if is_main:
        directory.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"fingerprint": digest}))
    return resume


def resume_point(directory: Path, digest: str, is_main: bool) -> Path | None:
    """prepare_checkpoints on every rank: rank 0 clears stale checkpoints before the others look."""
    from lifecycle.hardware import barrier
    resume = prepare_checkpoints(directory, digest, is_main=True) if is_main else None
    barrier()
    return resume if is_main else prepare_checkpoints(directory, digest, is_main=False)


def resume_for(directory: Path, is_main: bool, inputs: list[Path], *parts) -> Path | None:
    """The checkpoint to resume from, for the run that `parts` (params, world size), the `inputs` files and the
    project's code define; None for a fresh start."""
    resume = resume_point(directory, fingerprint(*parts, file_digest(*inputs), code_digest()), is_main)
    if resume:
        log.info("resuming from %s", resume)
    return resume


def curves_of(directory: Path) -> Path:
    """dvclive's folder for the run in progress: beside its checkpoints, so a resume continues the run's own curves
    while reports/live/<stage> keeps the previous run's until this one finishes (see mark_finished)."""
    return Path(directory) / "live"


def mark_finished(directory: Path, curves: Path) -> None:
    """Publish the run's curves to `curves` (the previous ones replaced whole, atomically), then mark the run finished:
    a finished run is not resumed (the Trainer would run one step past the end), the next run starts fresh."""
    from lifecycle.io import atomic_path
    with atomic_path(curves, directory=True) as tmp:
        if curves_of(directory).is_dir():
            shutil.copytree(curves_of(directory), tmp, dirs_exist_ok=True)
    (Path(directory) / FINISHED).touch()


def checkpoint_step(checkpoint: Path | None) -> int:
    return int(checkpoint.name.split("-")[-1]) if checkpoint else 0


# ---- dvclive: curves against the optimizer step, so train and eval loss share the x axis ----

class LiveCurves(TrainerCallback):
    """Logs Trainer metrics to dvclive at the true global step (the stock callback counts log calls instead)."""

    KEEP = {"loss": "train/loss", "learning_rate": "train/learning_rate", "grad_norm": "train/grad_norm",
            "eval_loss": "eval/loss", "eval_accuracy": "eval/accuracy", "eval_macro_f1": "eval/macro_f1"}

    def __init__(self, directory: Path, resume_step: int):
        self.directory, self.resume_step, self.live = Path(directory), resume_step, None

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        from dvclive import Live
        if self.resume_step:
            truncate_curves(self.directory, self.resume_step)
        from scmrepo.exceptions import SCMError
        try:
            self.live = Live(str(self.directory), resume=bool(self.resume_step), save_dvc_exp=False, dvcyaml=False)
        except SCMError as err:  # dvclive reads HEAD, which a repository without commits lacks
            from lifecycle.core import StageError
            raise StageError(f"dvclive: {err}: commit once first (git add -A && git commit -m init)") from None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.live is None or not logs:
            return
        self.live.step = state.global_step
        for key, name in self.KEEP.items():
            if key in logs:
                self.live.log_metric(name, float(logs[key]))
        if "eval_loss" in logs:
            self.live.log_metric("eval/perplexity", math.exp(min(float(logs["eval_loss"]), 50.0)))
        self.live.make_summary()

    def on_train_end(self, args, state, control, **kwargs):
        if self.live is not None:
            self.live.end()
            self.live = None


def truncate_curves(directory: Path, step: int) -> None:
    """Drop curve rows logged after the checkpoint we resume from: they are about to be trained again. A kill -9
    can cut dvclive's files mid-write: a partial row is dropped, a partial summary (which dvclive's resume reads
    for its step) is replaced by the step we resume from."""
    for tsv in Path(directory).rglob("*.tsv"):
        with open(tsv, newline="") as f:
            rows = list(csv.reader(f, delimiter="\t"))
        if not rows:
            continue
        header = rows[0]
        column = header.index("step")
        body = [r for r in rows[1:] if len(r) == len(header) and r[column].isdigit() and int(r[column]) <= step]
        with open(tsv, "w", newline="") as f:
            csv.writer(f, delimiter="\t").writerows([header, *body])
    summary = Path(directory) / "metrics.json"
    try:
        json.loads(summary.read_text(encoding="utf-8")) if summary.exists() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        summary.write_text(json.dumps({"step": step}), encoding="utf-8")


def causal_lm_collate(rows: list[dict]) -> dict:
    """Packed blocks as a batch; the model shifts the labels itself."""
    import numpy as np
    import torch
    ids = torch.as_tensor(np.stack([r["input_ids"] for r in rows]), dtype=torch.long)
    return {"input_ids": ids, "labels": ids}


# ---- throughput: time spent in optimizer steps only (evaluation and checkpoints excluded) ----

class StepTimer(TrainerCallback):
    def __init__(self):
        self.seconds, self.steps, self._start = 0.0, 0, None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._start is not None:
            self.seconds += time.perf_counter() - self._start
            self.steps += 1
            self._start = None


# ---- the whole run's figures: a resumed run reports what an uninterrupted one would ----

TOTALS = ("loss_sum", "seconds", "step_seconds", "steps")


class WholeRun(StepTimer, ExportableState):
    """Train loss, wall seconds and optimizer-step seconds of the whole run, across kills and resumes.

    The Trainer's own figures cover only the steps this process ran: after a resume its train_runtime misses the
    time before the checkpoint, and its train_loss divides the loss summed since the resume by every step (far too
    low). Each checkpoint's trainer_state.json (written in one piece with the rest of the Trainer's state) holds
    the totals so far, and a resumed run adds to them: its train loss is the uninterrupted run's (the same sum, added
    up in another order), its seconds those of both processes, less the steps trained after the last
    checkpoint and lost to the kill (trained again, they count once)."""

    def __init__(self, resume: Path | None = None):
        super().__init__()
        self.resume, self.before = resume, saved_totals(resume, type(self).__name__)
        self.trainer, self._began = None, None

    def train(self, trainer) -> dict:
        """trainer.train() (from the checkpoint to resume, if any) -> the whole run's train_loss, seconds (wall),
        step_seconds and steps (the optimizer steps they timed)."""
        self.trainer = trainer
        result = trainer.train(resume_from_checkpoint=str(self.resume) if self.resume else None)
        run = self.totals(result.metrics["train_runtime"])
        run["train_loss"] = run["loss_sum"] / max(trainer.state.global_step, 1)  # the Trainer's own formula
        if self.resume:
            log.info("whole run: train loss %.4f over %d steps, %.1f s (%.1f s of them before the resume from %s)",
                     run["train_loss"], trainer.state.global_step, run["seconds"], self.before["seconds"],
                     self.resume.name)
        return run

    def totals(self, seconds: float) -> dict:
        """The run's figures so far, `seconds` of them (wall) in this process."""
        # the Trainer's running loss sum over the steps up to its last log (private; its own train_loss uses it)
        loss_sum = self.trainer._total_loss_scalar if self._began is not None else 0.0
        here = {"loss_sum": loss_sum, "seconds": seconds, "step_seconds": self.seconds, "steps": self.steps}
        return {key: self.before[key] + here[key] for key in TOTALS}

    def on_train_begin(self, args, state, control, **kwargs):
        self._began = time.time()

    def on_step_end(self, args, state, control, **kwargs):
        super().on_step_end(args, state, control, **kwargs)
        log_before_saving(control)

    def on_epoch_end(self, args, state, control, **kwargs):
        log_before_saving(control)

    def state(self) -> dict:
        """Written into trainer_state.json at each checkpoint (the Trainer logs first, so the loss sum is whole)."""
        return {"args": {}, "attributes": self.totals(time.time() - self._began if self._began else 0.0)}


def log_before_saving(control) -> None:
    """The Trainer adds the loss of the steps since its last log to its loss sum only when it logs."""
    if control.should_save:
        control.should_log = True


def saved_totals(checkpoint: Path | None, name: str) -> dict:
    """The totals a checkpoint's trainer_state.json holds (zero for a fresh start)."""
    totals = dict.fromkeys(TOTALS, 0)
    if checkpoint is None:
        return totals
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    saved = state.get("stateful_callbacks", {}).get(name, {}).get("attributes")
    if not saved:
        log.warning("%s holds no whole-run totals: loss and seconds cover the steps after it only", checkpoint)
        return totals
    return {**totals, **{key: saved[key] for key in TOTALS if key in saved}}
