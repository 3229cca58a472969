"""Run prepare's passes for one corpus on the configured executor and merge the tasks' counts into its report.

raw folder (data/raw/<corpus>/*.jsonl) -> out folder (<split>/<shard>.jsonl, one file per raw shard and split) and
the same report and length rows as the reference (lifecycle.corpus.prepare_corpus) gives for the same documents.
"""
from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from pathlib import Path

from lifecycle.core import StageError
from lifecycle.corpus import build_report, drop_warnings, too_few_documents
from lifecycle.datapipe import run_pipeline
from lifecycle.params.data import DataExecutorParams
from lifecycle.params.prepare import Filters, PrepareParams
from lifecycle.text import FILTERS

log = logging.getLogger("llm-lifecycle.prepare")
STEPS = ("normalize", *(f"filter_{name}" for name in FILTERS), "dedup_exact", "dedup_near")
CELL = ("documents_in", "documents_out", "characters_in", "characters_out")


def raw_shards(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise StageError(f"{folder}: no such file or folder (run collect first: dvc repro collect)")
    names = sorted(p.name.removesuffix(".jsonl") for p in folder.glob("*.jsonl"))
    if not names:
        raise StageError(f"{folder}: no *.jsonl shard in the folder (run collect first: dvc repro collect)")
    return names


def first_pass(raw: Path, filters: Filters, p: PrepareParams, seed: int, spec, work: Path, shards: list[str]):
    from lifecycle.prepare_flow import FilterStep, RawShards, ShardWriter, Signatures, filtered_name, intermediate

    pipeline = [RawShards(raw), FilterStep(filters, p, work, shards),
                ShardWriter(work / "filtered", filtered_name, intermediate),
                Signatures(work, p.dedup.near, seed, shards, exact=p.dedup.exact)]
    run_pipeline(spec, pipeline, min(spec.tasks, len(shards)), work, "filter")


def bucket_pass(p: PrepareParams, seed: int, spec: DataExecutorParams, work: Path) -> None:
    """datatrove's MinhashDedupBuckets over every band and the exact-key bucket: one task per bucket."""
    from datatrove.pipeline.dedup.minhash import MinhashDedupBuckets

    from lifecycle.dedup import minhash_config

    if p.dedup.near.enabled or p.dedup.exact:
        config = minhash_config(p.dedup.near, seed, exact=p.dedup.exact)
        run_pipeline(spec, [MinhashDedupBuckets(str(work / "signatures"), str(work / "dups"), config=config)],
                     config.num_buckets, work, "buckets")


def last_pass(out: Path, p: PrepareParams, spec, work: Path, shards: list[str], cuts: tuple) -> None:
    from lifecycle.prepare_flow import FinalStep, RawShards, ShardWriter, prepared, prepared_name

    filtered = sorted((work / "filtered").glob("*.jsonl"))
    pipeline = [RawShards(work / "filtered"), FinalStep(p, work, shards, cuts),
                ShardWriter(out, prepared_name, prepared)]
    run_pipeline(spec, pipeline, max(1, min(spec.tasks, len(filtered))), work, "write")


def merged(work: Path, step: str) -> list[dict]:
    return [json.loads(f.read_text(encoding="utf-8")) for f in sorted((work / "counts" / step).glob("*.json"))]


def step_counts(work: Path, dedup_steps: dict, wanted: tuple[str, ...]) -> tuple[dict, dict]:
    """(source -> step -> counts, (source, filter) -> first dropped texts), every wanted step of every source."""
    cells: dict = defaultdict(lambda: {step: [0, 0, 0, 0] for step in wanted})
    examples: dict = defaultdict(list)
    for task in merged(work, "filter"):
        for source, steps in task["steps"].items():
            for step, cell in steps.items():
                cells[source][step] = [a + b for a, b in zip(cells[source][step], cell)]
        for key, found in task["examples"].items():
            examples[tuple(key.split("\t"))] += [tuple(x) for x in found]
    for source, steps in dedup_steps.items():
        cells[source].update(steps)
    steps = {source: {step: dict(zip(CELL, cells[source][step])) for step in wanted} for source in sorted(cells)}
    return steps, {key: [text for _, text in sorted(found)] for key, found in examples.items()}


def final_counts(work: Path) -> tuple[dict, dict, Counter, Counter]:
    split, kept, pii, words = defaultdict(lambda: (0, 0)), defaultdict(lambda: (0, 0)), Counter(), Counter()
    for task in merged(work, "final"):
        for total, part in ((split, task["split"]), (kept, task["kept"])):
            for key, (n, c) in part.items():
                total[key] = (total[key][0] + n, total[key][1] + c)
        pii.update(task["pii"])
        words.update({int(k): v for k, v in task["words"].items()})
    return split, kept, pii, words


def prepare_sharded(corpus: str, raw: Path, out: Path, p: PrepareParams, seed: int, spec: DataExecutorParams,
                    work: Path) -> tuple[dict, Counter]:
    """Run the passes; returns (report, documents per length in words). Raises StageError for a corpus too small
    to split, naming it, before anything is written to `out`."""
    from lifecycle.prepare_plan import make_plan

    shards = raw_shards(raw)
    first_pass(raw, p.filters[corpus], p, seed, spec, work, shards)
    bucket_pass(p, seed, spec, work)
    from lifecycle.dedup import bands

    plan = make_plan(work, p.split, p.dedup.exact, p.dedup.near.enabled,
                     bands(p.dedup.near)[0] if p.dedup.near.enabled else 0, shards)
    wanted = STEPS[:-2] + ("dedup_exact",) * p.dedup.exact + ("dedup_near",) * p.dedup.near.enabled
    steps, examples = step_counts(work, plan.dedup_steps, wanted)
    if plan.survivors < 3 * p.split.min_documents:
        read = sum(s["normalize"]["documents_in"] for s in steps.values())
        raise StageError(too_few_documents(corpus, read, plan.survivors, steps, p.split.min_documents))
    last_pass(out, p, spec, work, shards, plan.cuts)
    split, kept, pii, words = final_counts(work)
    split = {s: split[s] for s in ("train", "validation", "test")}
    report = build_report(steps, split, {s: kept[s] for s in steps}, pii,
                          drop_warnings(steps, examples, p.warn_drop_share, p.pii))
    return report, words
