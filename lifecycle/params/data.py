"""The `data_executor` section: where the data stages (collect, prepare) run their datatrove pipelines."""
from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from lifecycle.params.base import Section, at_least, between, positive


class RaySettings(Section):
    address: str | None = Field(None, description="a running cluster ('auto', 'ray://head:10001'); none: a local "
                                                  "instance with `workers` CPUs, started and stopped by the stage")
    cpus_per_task: at_least(1) = 1
    mem_per_cpu_gb: positive() = 2.0


class SlurmSettings(Section):
    partition: str | None = Field(None, description="the Slurm partition (required with kind: slurm)")
    time: str = Field("04:00:00", description="each job's time limit, [D-]HH:MM:SS")
    cpus_per_task: at_least(1) = 1
    mem_per_cpu_gb: at_least(1) = Field(2, description="whole GB (Slurm's --mem-per-cpu)")
    env_command: str | None = Field(None, description="run first in every job, e.g. 'source .venv/bin/activate'")
    poll_seconds: at_least(1) = Field(30, description="how often the stage checks whether the jobs are done")

    @field_validator("time")
    @classmethod
    def _slurm_time(cls, value: str) -> str:
        if not re.fullmatch(r"(\d+-)?\d{1,2}:\d{2}:\d{2}", value):
            raise ValueError(f"{value!r} is not a Slurm time limit; write [D-]HH:MM:SS, e.g. 04:00:00 or 1-00:00:00")
        return value


class DataExecutorParams(Section):
    """The data stages are datatrove pipelines: the same steps run in local processes, on Ray or on Slurm, and give
    byte-identical outputs whatever the executor, tasks or workers."""
    kind: Literal["local", "ray", "slurm"] = "local"
    tasks: at_least(1) = Field(8, description="pieces the work is cut into (at most one per shard of data/raw)")
    workers: at_least(1) = Field(2, description="tasks run at once: local processes, or the CPUs of a local Ray "
                                                "instance (a Ray cluster and Slurm run as many as they can)")
    shard_mb: between(0.01, 4096) = Field(8.0, description="collect writes each corpus as files of about this size: "
                                                          "the unit of work of prepare's tasks")
    ray: RaySettings = RaySettings()
    slurm: SlurmSettings = SlurmSettings()

    @model_validator(mode="after")
    def _slurm_needs_partition(self):
        if self.kind == "slurm" and not self.slurm.partition:
            raise ValueError("kind: slurm needs slurm.partition (the partition the jobs are submitted to)")
        return self
