"""The plan between prepare's passes, in one process: which documents dedup removes and where the splits cut.

Reads the pairs datatrove's MinhashDedupBuckets found (<work>/dups/*.dups: task and document numbers; the bands'
buckets, then the exact keys') and each task's sidecar (document number -> corpus position, split key, characters,
source). Memory holds the duplicates and the sidecars (memory-mapped, 22 bytes a document), not the texts.
Writes <work>/remove/<shard>.npy (lines to drop).
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lifecycle.corpus import split_sizes
from lifecycle.dedup import UnionFind
from lifecycle.params.prepare import Split
from lifecycle.prepare_flow import SIDECAR

BINS = 1 << 16  # split keys are uniform 64-bit numbers: their top 16 bits spread survivors evenly


def sidecars(work: Path) -> dict[int, np.ndarray]:
    return {int(f.stem): np.memmap(f, dtype=SIDECAR, mode="r") if f.stat().st_size else np.zeros(0, SIDECAR)
            for f in sorted((work / "sidecar").glob("*.bin"))}


def source_names(work: Path) -> dict[int, list[str]]:
    return {int(f.stem): json.loads(f.read_text(encoding="utf-8")) for f in sorted((work / "sources").glob("*.json"))}


def read_pairs(folder: Path, cars: dict[int, np.ndarray], buckets):
    """(position, position) of each pair datatrove found in those buckets: (task, document, task, document) as 4
    uint32 in <bucket>_<worker>.dups."""
    for path in sorted(folder.glob("*.dups")):
        if int(path.name[:5]) not in buckets:
            continue
        records = np.fromfile(path, dtype="<u4").reshape(-1, 4)
        for task_a, doc_a, task_b, doc_b in records.tolist():
            yield int(cars[task_a][doc_a]["position"]), int(cars[task_b][doc_b]["position"])


def duplicates(work: Path, cars: dict[int, np.ndarray], exact: bool, near: int) -> tuple[set, set]:
    """(removed as exact duplicates, removed as near duplicates): each cluster keeps its earliest document. `near`
    bands come first, then the exact bucket. A near pair is joined through the exact keepers, which share their
    duplicates' signatures."""
    same = UnionFind()
    if exact:
        for a, b in read_pairs(work / "dups", cars, {near}):
            same.union(a, b)
    removed_exact = same.removed()
    close = UnionFind()
    for a, b in read_pairs(work / "dups", cars, range(near)):
        close.union(same.find(a), same.find(b))
    return removed_exact, close.removed()


def as_array(removed: set) -> np.ndarray:
    return np.fromiter(removed, dtype=np.uint64, count=len(removed))


def survivors(cars: dict[int, np.ndarray], gone: np.ndarray):
    """(split keys, positions) of each task's documents that dedup keeps (`gone`: the removed positions)."""
    for records in cars.values():
        keep = ~np.isin(records["position"], gone)
        yield records["split_key"][keep], records["position"][keep]


def cutoffs(cars: dict[int, np.ndarray], gone: np.ndarray, ranks: tuple[int, int]) -> list[tuple[int, int]]:
    """The (split key, position) at each 0-based rank among the survivors: a histogram of the keys' top bits
    finds each one's bin, then only that bin's documents are sorted."""
    histogram = np.zeros(BINS, dtype=np.int64)
    for keys, _ in survivors(cars, gone):
        histogram += np.bincount((keys >> np.uint64(48)).astype(np.int64), minlength=BINS)
    before = np.concatenate([[0], np.cumsum(histogram)])
    found = []
    for rank in ranks:
        b = int(np.searchsorted(before, rank, side="right")) - 1
        in_bin = sorted((int(k), int(p)) for keys, positions in survivors(cars, gone)
                        for k, p in zip(*(a[(keys >> np.uint64(48)) == b] for a in (keys, positions))))
        found.append(in_bin[rank - int(before[b])])
    return found


@dataclass
class Plan:
    survivors: int
    test: int
    validation: int
    cuts: tuple = ()
    dedup_steps: dict = field(default_factory=dict)  # source -> {dedup_exact: counts, dedup_near: counts}


def dedup_counts(work: Path, cars: dict[int, np.ndarray], removed_exact: set, removed_near: set,
                 exact: bool, near: bool) -> dict:
    """The dedup rows of reports/data.json per source: documents and characters in and out (per task, in numpy)."""
    names = source_names(work)
    steps = [step for step, on in (("dedup_exact", exact), ("dedup_near", near)) if on]
    rows: dict = defaultdict(lambda: {step: [0, 0, 0, 0] for step in steps})
    exact_gone, near_gone = as_array(removed_exact), as_array(removed_near)
    for task, records in cars.items():
        by_exact, by_near = (np.isin(records["position"], gone) for gone in (exact_gone, near_gone))
        masks = {"dedup_exact": (np.ones(len(records), bool), ~by_exact),
                 "dedup_near": (~by_exact, ~by_exact & ~by_near)}
        for number, source in enumerate(names[task]):
            mine = records["source"] == number
            for step in steps:
                into, out = (mine & m for m in masks[step])
                cell = rows[source][step]
                for k, mask in enumerate((into, out)):
                    cell[k] += int(mask.sum())
                    cell[k + 2] += int(records["characters"][mask].sum())
    return dict(rows)


def make_plan(work: Path, split: Split, exact: bool, near: bool, bands: int, shards: list[str]) -> Plan:
    """`bands`: the LSH bands of near dedup (0 when it is off)."""
    cars = sidecars(work)
    removed_exact, removed_near = duplicates(work, cars, exact, bands if near else 0)
    removed = removed_exact | removed_near
    n = sum(len(r) for r in cars.values()) - len(removed)
    plan = Plan(n, *split_sizes(n, split))
    plan.dedup_steps = dedup_counts(work, cars, removed_exact, removed_near, exact, near)
    if n >= 3 * split.min_documents:
        plan.cuts = tuple(cutoffs(cars, as_array(removed), (plan.test, plan.test + plan.validation)))
    write_removals(work / "remove", removed, shards)
    return plan


def write_removals(folder: Path, removed: set, shards: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines: dict[int, list[int]] = defaultdict(list)
    for at in removed:
        lines[at >> 32].append(at & 0xFFFFFFFF)
    for shard, found in lines.items():
        np.save(folder / f"{shards[shard]}.npy", np.array(sorted(found), dtype=np.uint32))
