"""Data-stage throughput on the default corpus, measured in one process so the ratios are fair.

- prepare: MB/s of raw UTF-8 text through normalise, filters, exact and near dedup, PII scrubbing and split;
- tokenize: our encode + pack + Arrow path against the `tokenizers` batch encoder run directly on the same
  texts (the limit for that step); target ratio >= 0.8.

Run after `dvc repro` (it reads data/raw and models/tokenizer):  make bench  ->  reports/bench/data.json
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

from lifecycle import corpus as prepare
from lifecycle import tokens as tokenize
from lifecycle.core import StageError, run
from lifecycle.io import read_jsonl, write_json
from lifecycle.params import schema as P
from lifecycle.tokens import blocks_to_dataset

OUT = Path("reports/bench/data.json")
REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))


def timed(fn, repeats: int) -> float:
    """Median wall time of `repeats` calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_prepare(params: P.Params, repeats: int) -> dict:
    corpora = {c: read_jsonl(prepare.RAW / f"{c}.jsonl", ("text", "source")) for c in prepare.CORPORA}
    megabytes = sum(len(d["text"].encode("utf-8")) for docs in corpora.values() for d in docs) / 1e6

    def run_prepare():
        for corpus, docs in corpora.items():
            prepare.prepare_corpus(docs, params.prepare.filters[corpus], params.prepare, params.seed, corpus=corpus)
    seconds = timed(run_prepare, repeats)
    return {"megabytes": round(megabytes, 3), "seconds": round(seconds, 3), "mb_per_s": round(megabytes / seconds, 3)}


def bench_tokenize(params: P.Params, repeats: int) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenize.TOKENIZER)
    backend, eos = tokenizer.backend_tokenizer, tokenizer.eos_token_id
    texts = [d["text"] for d in read_jsonl(prepare.PREPARED / "pretrain" / "train.jsonl")]
    megabytes = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    block_size, batch_size = params.tokenize.block_size, params.tokenize.batch_size

    def ours():
        blocks_to_dataset(tokenize.pack(tokenize.encode(backend, texts, eos, batch_size), block_size))

    def direct():
        backend.encode_batch_fast(texts, add_special_tokens=False)
    # Interleave the two so drift in machine load hits both alike.
    ours_s, direct_s = [], []
    for _ in range(repeats):
        ours_s.append(timed(ours, 1))
        direct_s.append(timed(direct, 1))
    ours_t, direct_t = statistics.median(ours_s), statistics.median(direct_s)
    return {"megabytes": round(megabytes, 3), "pipeline_seconds": round(ours_t, 4),
            "direct_seconds": round(direct_t, 4),
            "pipeline_mb_per_s": round(megabytes / ours_t, 3), "direct_mb_per_s": round(megabytes / direct_t, 3),
            "ratio_to_direct": round(direct_t / ours_t, 3), "target_ratio": 0.8}


def main() -> None:
    params = P.load()
    if not (prepare.RAW / "pretrain.jsonl").exists() or not tokenize.TOKENIZER.exists():
        raise StageError("run the pipeline first (make repro): the benchmark reads data/raw and models/tokenizer")
    result = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                          "python": platform.python_version()},
              "repeats": REPEATS,
              "prepare": bench_prepare(params, max(1, REPEATS // 2)),
              "tokenize": bench_tokenize(params, REPEATS)}
    write_json(OUT, result)
    print(f"prepare: {result['prepare']['mb_per_s']} MB/s; tokenize: {result['tokenize']['pipeline_mb_per_s']} MB/s "
          f"= {result['tokenize']['ratio_to_direct']} x the direct encoder "
          f"({result['tokenize']['direct_mb_per_s']} MB/s)")


if __name__ == "__main__":
    run(main)
