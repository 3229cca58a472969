"""collect: read the sources named in params into data/raw/{pretrain,finetune}.jsonl (text, source[, label]).

Fine-tuning labels are checked against finetune.classes here, so that a bad one names the user's file and row.
Long documents are cut here (each source's `split`), to pieces that prepare's max_chars filter keeps."""
from __future__ import annotations

import logging
from pathlib import Path

from lifecycle.io import atomic_path, write_json, write_jsonl
from lifecycle.params.base import load
from lifecycle.params.collect import CollectParams
from lifecycle.params.finetune import FinetuneParams
from lifecycle.params.prepare import PrepareParams
from lifecycle.sources import collect_corpus

log = logging.getLogger("llm-lifecycle.collect")
RAW = Path("data/raw")


def main() -> None:
    params = load(collect=CollectParams, finetune=FinetuneParams, prepare=PrepareParams)  # chunks vs max_chars
    report, outputs = {}, {}
    for corpus in ("pretrain", "finetune"):
        outputs[corpus], report[corpus] = collect_corpus(
            getattr(params.collect, corpus), params.seed, weighted=corpus == "pretrain",
            classes=params.finetune.classes if corpus == "finetune" else None)
    with atomic_path(RAW, directory=True) as tmp:  # both corpora or neither
        for corpus, docs in outputs.items():
            write_jsonl(tmp / f"{corpus}.jsonl", docs)
            log.info("%s: %d documents -> %s", corpus, len(docs), RAW / f"{corpus}.jsonl")
    write_json("reports/collect.json", report)


if __name__ == "__main__":
    from lifecycle.core import run
    run(main)
