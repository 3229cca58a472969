"""datatrove pipelines run on the executor params.yaml names (`data_executor`): local processes, Ray or Slurm.

`run_pipeline` runs one pipeline to the end and turns a task's StageError (bad data naming its file and row) into
the stage's one-line error, whatever the executor: steps that may raise one are wrapped in `reporting_errors`, which
writes the line to `<work>/errors/` (a shared folder on a cluster) before the task fails.
"""
from __future__ import annotations

import functools
import importlib.metadata
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lifecycle.core import StageError
from lifecycle.params.data import DataExecutorParams

log = logging.getLogger("llm-lifecycle.data")


def quiet_datatrove(level: str = "WARNING") -> None:
    """datatrove logs every task at INFO to stderr; keep its warnings there, and its full logs in each run's
    logs/ folder (local executor; Ray and Slurm workers log as datatrove does). Its dependency check looks
    distributions up by name instead of scanning them all."""
    import datatrove.executor.base as base
    from loguru import logger

    def task_logger(logging_dir, rank: int, local_rank: int = 0, node_rank: int = -1):
        to_stderr(logger, level)
        logfile = logging_dir.open(f"logs/task_{rank:05d}.log", "w")
        logger.add(logfile, level="DEBUG", format="{time:HH:mm:ss.SSS} | {level} | {name}:{line} - {message}")
        return logfile

    def close_task_logger(logfile):
        logger.complete()
        to_stderr(logger, level)
        logfile.close()

    base.add_task_logger, base.close_task_logger = task_logger, close_task_logger
    to_stderr(logger, level)
    import datatrove.utils._import_utils as imports
    imports._is_distribution_available = _installed  # its scan of every installed package's metadata takes ~1 s


@functools.lru_cache
def _installed(distribution: str) -> bool:
    """Whether a distribution is installed: looked up by name."""
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def to_stderr(logger, level: str) -> None:
    logger.remove()
    logger.add(sys.stderr, level=level, format="datatrove: {message}", filter=_worth_showing)


def _worth_showing(record) -> bool:
    """A task's StageError is reported once, as the stage's error line, not as a traceback; our output names
    hold no ${rank} on purpose (each shard belongs to one task); the data folders must be shared with Ray's
    workers, as the README says."""
    exception = record["exception"]
    if exception and isinstance(exception.value, StageError):
        return False
    return not any(known in record["message"] for known in ("does not include ${rank}", "points to a local filesystem"))


class ErrorReport:
    """A pipeline step's wrapper: a StageError raised while its documents are consumed is written to
    `<folder>/<rank>.txt` (one line) and raised again."""

    def __init__(self, step, folder: str | Path):
        self.step, self.folder = step, str(folder)

    def __call__(self, data, rank: int = 0, world_size: int = 1):
        try:
            out = self.step.run(data, rank, world_size) if hasattr(self.step, "run") else self.step(data, rank,
                                                                                                    world_size)
            if out is not None:  # a terminal step (a signature writer) consumes and returns nothing
                yield from out
        except StageError as err:
            Path(self.folder).mkdir(parents=True, exist_ok=True)
            (Path(self.folder) / f"{rank:05d}.txt").write_text(str(err), encoding="utf-8")
            raise


def make_executor(spec: DataExecutorParams, pipeline: list, tasks: int, logging_dir: Path, name: str):
    """The datatrove executor of `spec.kind` for `pipeline`, `tasks` tasks, logs and completion marks in
    `logging_dir` (which must be on a filesystem every worker sees, for Ray and Slurm)."""
    common = dict(pipeline=pipeline, tasks=tasks, logging_dir=str(logging_dir), skip_completed=False)
    if spec.kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        # fork: the workers start at once with the parent's imports (the stages import no thread pools first)
        return LocalPipelineExecutor(workers=min(spec.workers, tasks), start_method="fork", **common)
    if spec.kind == "ray":
        from datatrove.executor.ray import RayPipelineExecutor

        workers = spec.workers if spec.ray.address is None else -1  # a cluster: as many at once as it can
        return RayPipelineExecutor(workers=workers, cpus_per_task=spec.ray.cpus_per_task,
                                   mem_per_cpu_gb=spec.ray.mem_per_cpu_gb, **common)
    from datatrove.executor.slurm import SlurmPipelineExecutor

    s = spec.slurm
    return SlurmPipelineExecutor(partition=s.partition, time=s.time, cpus_per_task=s.cpus_per_task,
                                 mem_per_cpu_gb=s.mem_per_cpu_gb, env_command=s.env_command,
                                 job_name=f"llm-lifecycle-{name}", **common)


def run_pipeline(spec: DataExecutorParams, pipeline: list, tasks: int, work: Path, name: str) -> None:
    """Run `pipeline` as `tasks` tasks on the executor `spec` names and wait for it; logs go to
    `work/logs/<name>/`. A task's StageError becomes this call's StageError."""
    errors = work / "errors" / name
    wrapped = [ErrorReport(step, errors) if i else step for i, step in enumerate(pipeline)]  # readers raise none
    logging_dir = work / "logs" / name
    shutil.rmtree(logging_dir, ignore_errors=True)
    executor = make_executor(spec, wrapped, tasks, logging_dir, name)
    start = time.perf_counter()
    try:
        with ray_instance(spec):
            executor.run()
        if spec.kind == "slurm":
            wait_for_slurm(executor, spec.slurm.poll_seconds, errors)
    except Exception as err:
        raise_task_error(errors, name, logging_dir, err)
        raise
    raise_task_error(errors, name, logging_dir)
    missing = executor.get_incomplete_ranks(range(tasks), skip_completed=True)
    if missing:
        raise StageError(f"{name}: {len(missing)} of {tasks} tasks did not complete (first: {missing[0]}); "
                         f"see {logging_dir}/logs/")
    log.info("%s: %d tasks on %s in %.1f s", name, tasks, spec.kind, time.perf_counter() - start)


def raise_task_error(errors: Path, name: str, logging_dir: Path, cause: Exception | None = None) -> None:
    lines = sorted(errors.glob("*.txt")) if errors.is_dir() else []
    if lines:
        raise StageError(lines[0].read_text(encoding="utf-8")) from None
    if cause is not None and not isinstance(cause, StageError):
        raise StageError(f"{name}: a task failed ({type(cause).__name__}: {cause}); see {logging_dir}/logs/") \
            from cause


class ray_instance:
    """With kind: ray, connect to `ray.address`, or start a local instance of `workers` CPUs (stopped after)."""

    def __init__(self, spec: DataExecutorParams):
        self.spec, self.started = spec, False

    def __enter__(self):
        if self.spec.kind == "ray":
            import ray

            if not ray.is_initialized():
                local = self.spec.ray.address is None
                ray.init(address=self.spec.ray.address, num_cpus=self.spec.workers if local else None,
                         include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
                self.started = True
        return self

    def __exit__(self, *exc):
        if self.started:
            import ray
            ray.shutdown()


def wait_for_slurm(executor, poll_seconds: int, errors: Path) -> None:
    """Slurm jobs run on their own: wait until every task is marked complete, a task reports an error, or the
    job leaves the queue unfinished."""
    while executor.get_incomplete_ranks(skip_completed=True):
        if errors.is_dir() and any(errors.glob("*.txt")):
            return
        if not slurm_job_queued(executor.job_id):
            time.sleep(poll_seconds)  # the last completion marks may lag behind on a network filesystem
            if executor.get_incomplete_ranks(skip_completed=True):
                return
        time.sleep(poll_seconds)


def slurm_job_queued(job_id) -> bool:
    out = subprocess.run(["squeue", "-h", "-j", str(job_id)], capture_output=True, text=True)
    return out.returncode == 0 and bool(out.stdout.strip())

