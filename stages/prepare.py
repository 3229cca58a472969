"""prepare: normalise, filter, deduplicate (exact and MinHash near), scrub PII and split each corpus.

data/raw/{corpus}.jsonl -> data/prepared/{corpus}/{train,validation,test}.jsonl, with reports/data.json
counting documents and characters in and out of every step, per source. A filter dropping more than
prepare.warn_drop_share of a source is a `warning:` line; a corpus too small for every split stops before any write.
"""
from __future__ import annotations

import logging
from pathlib import Path

from lifecycle.corpus import drop_warning_line, length_histogram, prepare_corpus
from lifecycle.io import atomic_path, read_jsonl, write_json, write_jsonl
from lifecycle.params.base import load
from lifecycle.params.prepare import PrepareParams

log = logging.getLogger("llm-lifecycle.prepare")
drops = logging.getLogger("llm-lifecycle.prepare.drops")
RAW, PREPARED, REPORT = Path("data/raw"), Path("data/prepared"), Path("reports/data.json")
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
    params = load(prepare=PrepareParams)
    p = params.prepare
    report, outputs, lengths = {}, {}, {}
    for corpus in CORPORA:
        required = ("text", "source", "label") if corpus == "finetune" else ("text", "source")
        docs = read_jsonl(RAW / f"{corpus}.jsonl", required)
        log.info("%s: %d documents in", corpus, len(docs))
        outputs[corpus], report[corpus] = prepare_corpus(docs, p.filters[corpus], p, params.seed, corpus)
        for warning in report[corpus]["drop_warnings"]:
            drops.warning(drop_warning_line(corpus, warning))
        lengths[corpus] = length_histogram(outputs[corpus], p.length_bins)
        log.info("%s: %s", corpus, {s: len(ds) for s, ds in outputs[corpus].items()})
    with atomic_path(PREPARED, directory=True) as tmp:
        for corpus, splits in outputs.items():
            (tmp / corpus).mkdir()
            for split, docs in splits.items():
                write_jsonl(tmp / corpus / f"{split}.jsonl", docs)
    for corpus, rows in lengths.items():
        write_json(f"reports/plots/lengths_{corpus}.json", rows)
    write_json(REPORT, report)


if __name__ == "__main__":
    from lifecycle.core import run
    run(main)
