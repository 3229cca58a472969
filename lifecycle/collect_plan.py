"""Run collect's passes (lifecycle.collect_flow) and plan, in this process, what they keep and where it goes.

The plan reads only the read pass's sidecars: a source's `limit` keeps its first documents across its files in
order; the pretraining mixture keeps each source's documents in stable-fraction order up to its character budget
(lifecycle.sources.mix, the reference, gives the same selection); the kept documents of consecutive units are packed
into shards of about `data_executor.shard_mb` MB (10^6 bytes of UTF-8 lines). Memory: one source's sidecar rows at a
time (characters, bytes, fraction: 24 bytes a document) for its limit and mixture, one unit's while packing shards;
never the documents themselves.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from lifecycle.collect_flow import ReadUnits, Unit, WorkItems, WriteShards, unit_file
from lifecycle.core import StageError
from lifecycle.datapipe import run_pipeline
from lifecycle.params.collect import CollectParams, Source
from lifecycle.params.data import DataExecutorParams
from lifecycle.sources import source_files

log = logging.getLogger("llm-lifecycle.collect")
CORPORA = ("pretrain", "finetune")
MB = 1_000_000


def corpus_units(corpus: str, sources: list[Source]) -> list[Unit]:
    """The units of a corpus in its order: sources in params order, each source's files as source_files sorts them."""
    units: list[Unit] = []
    for source in sources:
        paths = [None] if source.kind == "hf" else [str(p) for p in source_files(source)]
        units += [Unit(corpus, len(units) + i, source.name, path) for i, path in enumerate(paths)]
    return units


def read_pass(collect: CollectParams, classes: list[str], seed: int, spec: DataExecutorParams,
              work: Path) -> dict[str, list[Unit]]:
    """Read every unit of both corpora as tasks; returns each corpus's units."""
    units = {corpus: corpus_units(corpus, getattr(collect, corpus)) for corpus in CORPORA}
    table = [unit for corpus in CORPORA for unit in units[corpus]]
    tasks = min(spec.tasks, len(table))
    log.info("reading %d files of %d sources: %d tasks on %s", len(table),
             sum(len(getattr(collect, c)) for c in CORPORA), tasks, spec.kind)
    reader = ReadUnits(table, {c: getattr(collect, c) for c in CORPORA}, {"pretrain": None, "finetune": classes},
                       seed, work)
    run_pipeline(spec, [WorkItems(len(table)), reader], tasks, work, "read")
    return units


def sidecar(work: Path, unit: Unit) -> np.ndarray:
    return np.load(unit_file(work, unit.corpus, unit.number, ".npy"))


def limited(source: Source, units: list[Unit], work: Path) -> list[int]:
    """How many leading documents of each unit the source keeps: its limit counts across its files in order. A
    label error kept by the read pass stops collect when the limit reaches its row, as reading in one go would."""
    left, taken = source.limit or math.inf, []
    for unit in units:
        kept_error = unit_file(work, unit.corpus, unit.number, ".label_error.json")
        error = json.loads(kept_error.read_text(encoding="utf-8")) if kept_error.exists() else None
        if error and error["documents_before"] < left:
            raise StageError(error["error"])
        taken.append(int(min(len(sidecar(work, unit)), left)))
        left -= taken[-1]
    if not sum(taken):
        raise StageError(f"source '{source.name}': no documents")
    return taken


def mixed(fractions: np.ndarray, characters: np.ndarray, totals: dict[str, int], weights: dict[str, float],
          name: str) -> np.ndarray:
    """Which documents of source `name` (its fractions and characters) the mixture keeps: in fraction order until
    its share of the characters (`totals`: every source's characters read) is reached."""
    scale = min(totals[n] / weights[n] for n in totals if totals[n])
    order = np.argsort(fractions, kind="stable")
    sizes = characters[order].astype(np.int64)
    keep = np.zeros(len(order), dtype=bool)
    keep[order[np.cumsum(sizes) - sizes < weights[name] * scale * (1 - 1e-9)]] = True
    return keep


def source_rows(units: list[Unit], taken: list[int], work: Path) -> np.ndarray:
    """The sidecar rows a source keeps after its limit, units in order."""
    return np.concatenate([sidecar(work, unit)[:n] for unit, n in zip(units, taken)])


def select(sources: list[Source], units: list[Unit], work: Path, weighted: bool) -> dict:
    """Write each unit's keep mask (<unit>.keep.npy); returns the corpus's report (per source: documents and
    characters read and kept, share of the kept characters)."""
    by_source = {s.name: [u for u in units if u.source == s.name] for s in sources}
    taken = {s.name: limited(s, by_source[s.name], work) for s in sources}
    totals = {s.name: int(source_rows(by_source[s.name], taken[s.name], work)["characters"].sum()) for s in sources}
    weights, report = {s.name: s.weight for s in sources}, {}
    for source in sources:
        rows = source_rows(by_source[source.name], taken[source.name], work)
        keep = (mixed(rows["fraction"], rows["characters"], totals, weights, source.name) if weighted
                else np.ones(len(rows), dtype=bool))
        save_masks(by_source[source.name], taken[source.name], keep, work)
        report[source.name] = {"documents_read": len(rows), "characters_read": totals[source.name],
                               "documents_kept": int(keep.sum()),
                               "characters_kept": int(rows["characters"][keep].sum())}
    kept = sum(r["characters_kept"] for r in report.values()) or 1
    for counts in report.values():
        counts["share_of_characters"] = round(counts["characters_kept"] / kept, 4)
    return report


def save_masks(units: list[Unit], taken: list[int], keep: np.ndarray, work: Path) -> None:
    """Each unit's keep mask over its documents: within the source's limit and kept by the mixture."""
    start = 0
    for unit, n in zip(units, taken):
        mask = np.zeros(len(sidecar(work, unit)), dtype=bool)
        mask[:n] = keep[start:start + n]
        np.save(unit_file(work, unit.corpus, unit.number, ".keep.npy"), mask)
        start += n


def plan_shards(corpus: str, units: list[Unit], work: Path, shard_bytes: float) -> list[dict]:
    """Shards of the kept documents in corpus order, each at most `shard_bytes` (unless one document is larger):
    {"corpus", "name", "pieces": [[unit, first line, end line, byte offset of the first line], ...]}."""
    shards: list[dict] = []
    size = 0
    for unit in units:
        lengths = sidecar(work, unit)["bytes"].astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        for i in np.flatnonzero(np.load(unit_file(work, corpus, unit.number, ".keep.npy"))).tolist():
            if not shards or (size and size + lengths[i] > shard_bytes):
                shards.append({"corpus": corpus, "name": f"{len(shards):05d}", "pieces": []})
                size = 0
            pieces = shards[-1]["pieces"]
            if pieces and pieces[-1][0] == unit.number:
                pieces[-1][2] = i + 1
            else:
                pieces.append([unit.number, i, i + 1, int(offsets[i])])
            size += int(lengths[i])
    return shards


def plan(collect: CollectParams, units: dict[str, list[Unit]], spec: DataExecutorParams, work: Path) -> dict:
    """Select and shard both corpora (the plan is <work>/plan.json); returns collect's report."""
    report, shards = {}, []
    for corpus in CORPORA:
        report[corpus] = select(getattr(collect, corpus), units[corpus], work, weighted=corpus == "pretrain")
        shards += plan_shards(corpus, units[corpus], work, spec.shard_mb * MB)
    (work / "plan.json").write_text(json.dumps(shards), encoding="utf-8")
    return report


def write_pass(spec: DataExecutorParams, work: Path, out: Path) -> dict[str, int]:
    """Write the planned shards into out/<corpus>/ as tasks; returns the shards per corpus."""
    shards = json.loads((work / "plan.json").read_text(encoding="utf-8"))
    counts = {corpus: sum(s["corpus"] == corpus for s in shards) for corpus in CORPORA}
    for corpus in CORPORA:
        (out / corpus).mkdir(parents=True, exist_ok=True)
    run_pipeline(spec, [WorkItems(len(shards)), WriteShards(work, out)], min(spec.tasks, len(shards)), work, "write")
    return counts
