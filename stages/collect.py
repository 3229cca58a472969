"""collect: read the sources named in params into data/raw/{pretrain,finetune}/<NNNNN>.jsonl (id, text, source[,
label]): shards of about data_executor.shard_mb MB whose concatenation in name order is the corpus in order.

Datatrove pipelines on the executor of params.yaml's `data_executor` (local processes, Ray or Slurm): tasks read the
sources' files, one process plans limits, the pretraining mixture and the shards from small per-document sidecars,
tasks write the shards; byte-identical whatever the executor, tasks or workers (lifecycle.collect_flow).
Fine-tuning labels are checked against finetune.classes here, so that a bad one names the user's file and row.
Long documents are cut here (each source's `split`), to pieces that prepare's max_chars filter keeps.
Work files live in data/.work/collect/; a failed collect leaves data/raw as it was.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from lifecycle.collect_plan import plan, read_pass, write_pass
from lifecycle.datapipe import quiet_datatrove
from lifecycle.io import atomic_path, write_json
from lifecycle.params.base import load
from lifecycle.params.collect import CollectParams
from lifecycle.params.data import DataExecutorParams
from lifecycle.params.finetune import FinetuneParams
from lifecycle.params.prepare import PrepareParams

log = logging.getLogger("llm-lifecycle.collect")
RAW, WORK = Path("data/raw"), Path("data/.work/collect")


def main() -> None:
    quiet_datatrove()
    params = load(collect=CollectParams, finetune=FinetuneParams, prepare=PrepareParams,  # chunks vs max_chars
                  data_executor=DataExecutorParams)
    spec = params.data_executor
    shutil.rmtree(WORK, ignore_errors=True)
    units = read_pass(params.collect, params.finetune.classes, params.seed, spec, WORK)
    report = plan(params.collect, units, spec, WORK)
    with atomic_path(RAW, directory=True) as tmp:  # both corpora or neither
        shards = write_pass(spec, WORK, tmp)
    for corpus, counts in report.items():
        log.info("%s: %d documents in %d shards -> %s/", corpus, sum(c["documents_kept"] for c in counts.values()),
                 shards[corpus], RAW / corpus)
    shutil.rmtree(WORK, ignore_errors=True)
    write_json("reports/collect.json", report)


if __name__ == "__main__":
    from lifecycle.core import run
    run(main)
