"""Data-stage throughput and scale, measured in one run so the ratios are fair.

- the two-process ceiling: how much more work 2 processes do than 1 on this machine (the same pure-Python
  filters on the same texts): the most a 2-worker pipeline can gain here;
- prepare on the demo text (data/raw, both corpora) and on a SLICE_MB (default 60) MB synthetic text: today's
  single-process code (git archive of TODAY_COMMIT), the reference implementation of the same steps in one
  process, and the datatrove pipeline (local executor, 8 tasks, 2 workers), alternated; MB/s, ratios (target:
  pipeline >= 1.8x today's) and peak RSS of each (all processes together);
- prepare at scale: a synthetic corpus of SYNTH_MB (default 500) MB of word salad, generated with a fixed seed, with
  exact copies (case and spacing changed) and near copies (one word in 200 replaced) planted after their originals;
  the pipeline's peak RSS (target < 1.5 GB) and the planted duplicates' recall and precision (targets >= 0.95);
- tokenize: our encode + pack + Arrow path against the `tokenizers` batch encoder on the same texts (>= 0.8).

Run after `dvc repro` (it reads data/raw and models/tokenizer):  make bench  ->  reports/bench/data.json
"""
from __future__ import annotations

import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from lifecycle import tokens as tokenize
from lifecycle.core import StageError, run
from lifecycle.io import read_jsonl, write_json
from lifecycle.params import schema as P
from lifecycle.tokens import blocks_to_dataset

OUT = Path("reports/bench/data.json")
REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))
SYNTH_MB = float(os.environ.get("SYNTH_MB", "500"))
SLICE_MB = float(os.environ.get("SLICE_MB", "60"))  # a text today's in-memory code still holds easily
TODAY_COMMIT = "3028dc7"  # the last commit before prepare ran on datatrove (1.88 MB/s in its reports/bench/data.json)
RAW, PREPARED, TOKENIZER = Path("data/raw"), Path("data/prepared"), Path("models/tokenizer")  # folders of shards
CORPORA = ("pretrain", "finetune")


def timed(fn, repeats: int) -> float:
    """Median wall time of `repeats` calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measured(mode: str, raw: Path, out: Path, tasks: int = 8, workers: int = 2, **env: str) -> dict:
    """One run of benchmarks.prepare_scale in a fresh process (its own peak RSS)."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.prepare_scale", mode, str(raw), str(out), str(tasks),
                           str(workers)], capture_output=True, text=True, check=False, env={**os.environ, **env})
    if done.returncode:
        raise StageError(f"benchmarks.prepare_scale {mode} failed: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def text_megabytes(raw: Path) -> float:
    return sum(len(d["text"].encode("utf-8")) for d in read_jsonl(raw, ("text",))) / 1e6


def today_code(scratch: Path) -> Path:
    """Today's lifecycle package (TODAY_COMMIT, before datatrove), from git: its single-process prepare."""
    target = scratch / "today"
    target.mkdir()
    archive = subprocess.run(["git", "archive", TODAY_COMMIT, "lifecycle"], capture_output=True, check=False)
    if archive.returncode:
        raise StageError(f"git archive {TODAY_COMMIT} failed: the benchmark needs the project's git history")
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def bench_prepare(raw: Path, repeats: int, scratch: Path, today: Path, warm_up: bool = True) -> dict:
    """Today's single-process code, the reference implementation of the same steps (one process) and the
    pipeline (local executor, 8 tasks, 2 workers), alternated `repeats` times on the corpora under `raw`: medians."""
    corpora = [c for c in CORPORA if (raw / c).is_dir()]
    megabytes = sum(text_megabytes(raw / c) for c in corpora)
    runs = {"today": [], "reference": [], "pipeline": []}
    for _ in range(repeats):
        for mode in runs:
            env = {"LIFECYCLE_SOURCE": str(today)} if mode == "today" else {}
            env["BENCH_WARMUP"] = "1" if warm_up else "0"
            runs[mode].append(measured("pipeline" if mode == "pipeline" else "reference", raw, scratch / mode, **env))
    result = {"megabytes": round(megabytes, 3), "shards": {c: len(list((raw / c).glob("*.jsonl"))) for c in corpora},
              "today_commit": TODAY_COMMIT, "repeats": repeats}
    for mode, found in runs.items():
        seconds = statistics.median(r["seconds"] for r in found)
        result[mode] = {"seconds": round(seconds, 3), "mb_per_s": round(megabytes / seconds, 3),
                        "peak_rss_mb": max(r["peak_rss_mb"] for r in found), "tasks": found[0]["tasks"],
                        "workers": found[0]["workers"], "documents_out": found[0]["documents_out"]}
    result["ratio_to_today"] = round(result["today"]["seconds"] / result["pipeline"]["seconds"], 3)
    result["ratio_to_reference"] = round(result["reference"]["seconds"] / result["pipeline"]["seconds"], 3)
    result["target_ratio_to_today"] = 1.8
    return result


def synthetic_corpus(folder: Path, megabytes: float, seed: int = 17, shard_mb: float = 8.0) -> tuple[dict, int, float]:
    """Word-salad documents of 300-900 words (so unrelated documents share no 5-word shingle) in shards of
    about shard_mb; 4% of documents are exact copies (upper-cased, spacing doubled) and 4% near copies (one word in
    200 replaced) of an earlier document. Returns ({copy id: original id}, documents, megabytes of text)."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocabulary = ["".join(rng.choices(letters, k=rng.randint(3, 9))) for _ in range(20_000)]
    stop = ["the", "of", "and", "to", "with", "that", "have", "be"]
    planted, kept, shard, size, written, n, text_bytes = {}, [], [], 0, 0, 0, 0
    folder.mkdir(parents=True)
    while written + size < megabytes * 1e6:
        draw = rng.random()
        if kept and draw < 0.08:
            original_id, text = kept[rng.randrange(len(kept))]
            words = text.split()
            if draw < 0.04:
                text = "  ".join(words).upper()
            else:
                for k in rng.sample(range(len(words)), max(1, len(words) // 200)):
                    words[k] = "".join(rng.choices(letters, k=8))
                text = " ".join(words)
            planted[f"d{n}"] = original_id
        else:
            words = rng.choices(vocabulary, k=rng.randint(300, 900))
            text = " ".join(w if i % 9 else f"{rng.choice(stop)} {w}" for i, w in enumerate(words))
            if len(kept) < 20_000:
                kept.append((f"d{n}", text))
            else:
                kept[rng.randrange(len(kept))] = (f"d{n}", text)
        line = json.dumps({"id": f"d{n}", "text": text, "source": "synthetic"}) + "\n"
        text_bytes += len(text)  # ASCII
        shard.append(line)
        size += len(line)
        n += 1
        if size >= shard_mb * 1e6:
            written += write_shard(folder, shard)
            shard, size = [], 0
    written += write_shard(folder, shard)
    return planted, n, text_bytes / 1e6


def write_shard(folder: Path, lines: list[str]) -> int:
    if not lines:
        return 0
    data = "".join(lines)
    (folder / f"{len(list(folder.glob('*.jsonl'))):05d}.jsonl").write_text(data, encoding="utf-8")
    return len(data.encode("utf-8"))


def bench_scale(scratch: Path, megabytes: float) -> dict:
    """The pipeline on the synthetic corpus: throughput, peak RSS, and how many planted duplicates it removed."""
    raw = scratch / "synthetic" / "raw" / "pretrain"
    start = time.perf_counter()
    planted, documents, text_mb = synthetic_corpus(raw, megabytes)
    generated = time.perf_counter() - start
    run_ = measured("pipeline", raw.parent, scratch / "synthetic" / "out", BENCH_WARMUP="0")
    out = scratch / "synthetic" / "out" / "pretrain"
    written = {orjson.loads(line)["id"] for split in ("train", "validation", "test")
               for shard in sorted((out / split).glob("*.jsonl")) for line in shard.open("rb")}
    removed = {f"d{i}" for i in range(documents)} - written
    found = removed & set(planted)
    return {"megabytes": round(text_mb, 1), "shards": len(list(raw.glob("*.jsonl"))), "documents": documents,
            "generate_seconds": round(generated, 1), "seconds": run_["seconds"],
            "mb_per_s": round(text_mb / run_["seconds"], 3), "peak_rss_mb": run_["peak_rss_mb"],
            "tasks": run_["tasks"], "workers": run_["workers"],
            "planted_duplicates": len(planted), "removed": len(removed),
            "recall": round(len(found) / len(planted), 4), "precision": round(len(found) / max(len(removed), 1), 4),
            "targets": {"peak_rss_mb_below": 1536, "recall": 0.95, "precision": 0.95}}


def bench_tokenize(params: P.Params, repeats: int) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    backend, eos = tokenizer.backend_tokenizer, tokenizer.eos_token_id
    texts = [d["text"] for d in read_jsonl(PREPARED / "pretrain" / "train")]
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
    if not (RAW / "pretrain").is_dir() or not TOKENIZER.exists():
        raise StageError("run the pipeline first (make repro): the benchmark reads data/raw and models/tokenizer")
    Path("data/.work").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-data-", dir="data/.work") as folder:
        scratch = Path(folder)
        today = today_code(scratch)
        ceiling = measured("ceiling", RAW, scratch / "ceiling")
        demo = bench_prepare(RAW, max(1, REPEATS // 2), scratch / "demo", today)
        synthetic_corpus(scratch / "slice" / "pretrain", SLICE_MB, seed=18, shard_mb=4)
        slice_ = bench_prepare(scratch / "slice", 1, scratch / "slice-runs", today, warm_up=False)
        scale = bench_scale(scratch, SYNTH_MB)
    result = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                          "python": platform.python_version()},
              "repeats": REPEATS, "two_process_ceiling": ceiling, "prepare": demo,
              "prepare_synthetic_slice": slice_, "prepare_at_scale": scale,
              "tokenize": bench_tokenize(params, REPEATS)}
    write_json(OUT, result)
    for name, figures in (("demo", demo), (f"{SLICE_MB:g} MB synthetic", slice_)):
        print(f"prepare on the {name} text: {figures['pipeline']['mb_per_s']} MB/s with 2 workers, today's "
              f"{figures['today']['mb_per_s']} MB/s (x{figures['ratio_to_today']}), the reference in one process "
              f"{figures['reference']['mb_per_s']} MB/s (x{figures['ratio_to_reference']})")
    print(f"2 processes do {ceiling['speedup']}x the work of one here (pure Python, same texts); "
          f"{scale['megabytes']} MB synthetic: {scale['mb_per_s']} MB/s, peak RSS {scale['peak_rss_mb']} MB, "
          f"duplicates recall {scale['recall']} precision {scale['precision']}; "
          f"tokenize: {result['tokenize']['pipeline_mb_per_s']} MB/s = {result['tokenize']['ratio_to_direct']} x "
          f"the direct encoder")


if __name__ == "__main__":
    run(main)
