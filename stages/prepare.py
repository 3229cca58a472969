"""prepare: normalise, filter, deduplicate (exact and MinHash near), scrub PII and split each corpus, as datatrove
pipelines on the executor of params.yaml's `data_executor` (local processes, Ray or Slurm).

data/raw/{corpus}/*.jsonl -> data/prepared/{corpus}/{train,validation,test}/<shard>.jsonl (one file per raw shard,
byte-identical whatever the executor, tasks or workers), with reports/data.json counting documents and characters in
and out of every step, per source. A filter dropping more than prepare.warn_drop_share of a source is a `warning:`
line; a corpus too small for every split stops before any write. Work files live in data/.work/prepare/.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from lifecycle.corpus import drop_warning_line, length_rows
from lifecycle.datapipe import quiet_datatrove
from lifecycle.io import atomic_path, write_json
from lifecycle.params.base import load
from lifecycle.params.data import DataExecutorParams
from lifecycle.params.prepare import PrepareParams
from lifecycle.prepare_run import prepare_sharded

log = logging.getLogger("llm-lifecycle.prepare")
drops = logging.getLogger("llm-lifecycle.prepare.drops")
RAW, PREPARED, REPORT = Path("data/raw"), Path("data/prepared"), Path("reports/data.json")
WORK = Path("data/.work/prepare")
CORPORA = ("pretrain", "finetune")


def warnings_as_lines() -> None:
    """Drop warnings print as `warning: ...` (like the `error: ...` line), not as timestamped progress lines."""
    if not drops.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("warning: %(message)s"))
        drops.addHandler(handler)
        drops.propagate = False


def main() -> None:
    warnings_as_lines()
    params = load(prepare=PrepareParams, data_executor=DataExecutorParams)
    p, spec = params.prepare, params.data_executor
    quiet_datatrove()
    report, lengths = {}, {}
    shutil.rmtree(WORK, ignore_errors=True)
    with atomic_path(PREPARED, directory=True) as tmp:
        for corpus in CORPORA:
            log.info("%s: %s executor, up to %d tasks on %d workers", corpus, spec.kind, spec.tasks, spec.workers)
            report[corpus], words = prepare_sharded(corpus, RAW / corpus, tmp / corpus, p, params.seed, spec,
                                                    WORK / corpus)
            for warning in report[corpus]["drop_warnings"]:
                drops.warning(drop_warning_line(corpus, warning))
            lengths[corpus] = length_rows(words, p.length_bins)
            log.info("%s: %d documents in, %s", corpus, report[corpus]["documents_in"],
                     {s: v["documents"] for s, v in report[corpus]["split"].items()})
    shutil.rmtree(WORK, ignore_errors=True)
    for corpus, rows in lengths.items():
        write_json(f"reports/plots/lengths_{corpus}.json", rows)
    write_json(REPORT, report)


if __name__ == "__main__":
    from lifecycle.core import run
    run(main)
