"""collect as datatrove pipelines: each source file read by a task, the selection planned in one process, the
output shards written by tasks.

1. read (tasks): a unit of work is one file of a source (a `kind: hf` source is one unit); a task reads its units
   (units[rank::world_size]) with lifecycle.sources' readers into <work>/<corpus>/units/<unit>.jsonl, lines exactly
   as data/raw holds them (at most the source's `limit`), and a sidecar per document (characters, UTF-8 bytes of its
   line, stable fraction). Bad data stops the task with one line naming the user's file and row, except a label
   outside the classes: that one is kept for the plan, which stops collect only if the source's limit reaches it.
2. plan (lifecycle.collect_plan, this process, from the sidecars): limits, the mixture, shards of about shard_mb.
3. write (tasks): each task copies the kept lines of its shards into <out>/<corpus>/<NNNNN>.jsonl.
Outputs depend on the units alone, not on the tasks or workers: byte-identical whatever the executor.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
from datatrove.data import Document
from datatrove.pipeline.base import PipelineStep

from lifecycle.core import DataError, StageError, stable_fraction
from lifecycle.params.collect import Source
from lifecycle.sources import documents, file_items, read_hf

SIDECAR = np.dtype([("characters", "<u8"), ("bytes", "<u8"), ("fraction", "<f8")])


class Unit(NamedTuple):
    """One file of a source (path None: a `kind: hf` source), numbered in its corpus's order."""
    corpus: str
    number: int
    source: str
    path: str | None


def unit_file(work: str | Path, corpus: str, number: int, suffix: str) -> Path:
    return Path(work) / corpus / "units" / f"{number:05d}{suffix}"


class WorkItems(PipelineStep):
    """A task's share of `count` items of work (units or shards): items rank, rank + world_size, ..., each as an
    empty document whose id is its index."""
    name, type = "work items", "📖 - READER"

    def __init__(self, count: int):
        super().__init__()
        self.count = count

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        for index in range(rank, self.count, world_size):
            yield Document(text="", id=str(index))


class ReadUnits(PipelineStep):
    """Read each unit of the task into its unit file and sidecar."""
    name, type = "read sources", "📖 - READER"

    def __init__(self, units: list[Unit], sources: dict[str, list[Source]], classes: dict[str, list[str] | None],
                 seed: int, work: str | Path):
        super().__init__()
        self.units, self.classes, self.salt, self.work = units, classes, str(seed), str(work)
        self.sources = {corpus: {s.name: s for s in listed} for corpus, listed in sources.items()}

    def run(self, data, rank: int = 0, world_size: int = 1):
        for item in data:
            unit = self.units[int(item.id)]
            try:
                count = read_unit(unit, self.sources[unit.corpus][unit.source], self.classes[unit.corpus],
                                  self.salt, self.work)
            except StageError as err:  # as a plain StageError: a DataError cannot be unpickled from a worker
                raise StageError(str(err)) from None
            self.stat_update("units")
            self.stat_update("documents", value=count)
            yield item


def read_unit(unit: Unit, source: Source, classes: list[str] | None, salt: str, work: str) -> int:
    """Write the unit's documents (at most the source's limit) and their sidecar; returns their count. A label
    error is written beside them (<unit>.label_error.json: the documents before it and the line)."""
    items = read_hf(source) if unit.path is None else file_items(source, Path(unit.path))
    docs, rows, error = documents(source, items, classes), [], None
    path = unit_file(work, unit.corpus, unit.number, ".jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        while source.limit is None or len(rows) < source.limit:
            try:
                doc = next(docs)
            except StopIteration:
                break
            except DataError as err:  # labels are checked lazily: rows past the source's limit never are
                error = {"documents_before": len(rows), "error": str(err)}
                break
            line = (json.dumps(doc, ensure_ascii=False) + "\n").encode("utf-8")
            f.write(line)
            rows.append((len(doc["text"]), len(line), stable_fraction(doc["id"], salt=salt)))
    np.save(unit_file(work, unit.corpus, unit.number, ".npy"), np.array(rows, dtype=SIDECAR))
    if error:
        unit_file(work, unit.corpus, unit.number, ".label_error.json").write_text(json.dumps(error), encoding="utf-8")
    return len(rows)


class WriteShards(PipelineStep):
    """Write each shard of the task: the kept lines of its pieces (unit, first line, end line, byte offset of the
    first line), in order. The plan is <work>/plan.json; keep masks are <work>/<corpus>/units/<unit>.keep.npy."""
    name, type = "write shards", "💽 - WRITER"

    def __init__(self, work: str | Path, out: str | Path):
        super().__init__()
        self.work, self.out = str(work), str(out)

    def run(self, data, rank: int = 0, world_size: int = 1):
        plan = json.loads((Path(self.work) / "plan.json").read_text(encoding="utf-8"))
        for item in data:
            shard = plan[int(item.id)]
            written = write_shard(shard, self.work, Path(self.out) / shard["corpus"] / f"{shard['name']}.jsonl")
            self.stat_update("shards")
            self.stat_update("documents", value=written)
            yield item


def write_shard(shard: dict, work: str, target: Path) -> int:
    written = 0
    with open(target, "wb") as out:
        for number, first, end, offset in shard["pieces"]:
            keep = np.load(unit_file(work, shard["corpus"], number, ".keep.npy"))
            with open(unit_file(work, shard["corpus"], number, ".jsonl"), "rb") as lines:
                lines.seek(offset)
                for i in range(first, end):
                    line = lines.readline()
                    if keep[i]:
                        out.write(line)
                        written += 1
    return written
