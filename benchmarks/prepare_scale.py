"""One measured prepare run, in its own process: `python -m benchmarks.prepare_scale MODE RAW OUT [TASKS WORKERS]`.

RAW holds a folder of shards per corpus (pretrain/, finetune/), each prepared with its filters from params.yaml.
MODE `reference`: the in-memory, single-process implementation (lifecycle.corpus.prepare_corpus) on all of a
corpus; with LIFECYCLE_SOURCE set to a folder holding another `lifecycle` package (today's, from git), that one
runs. MODE `pipeline`: the datatrove pipeline (lifecycle.prepare_run) with the local executor. Prints one JSON
line: seconds (the prepare calls, after a warm-up), peak RSS of this process and its workers together (sampled
every 20 ms), documents written. MODE `ceiling`: the speed-up two processes give over one on this machine
for the same pure-Python work (the filters), the most any 2-worker pipeline can reach here.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import psutil


class PeakRss:
    """The largest sum of resident memory of this process and all its children, sampled in a thread."""

    def __init__(self, every: float = 0.02):
        self.every, self.peak, self._stop = every, 0, threading.Event()

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(self.every)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def settings() -> tuple:
    """(prepare section, seed) read with the lifecycle package in use (today's knows no data_executor)."""
    import yaml

    from lifecycle.params.prepare import PrepareParams

    data = yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8"))
    return PrepareParams.model_validate(data["prepare"]), data["seed"]


def documents(folder: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(folder.glob("*.jsonl"))  # not splitlines: U+2028 is text
            for line in f.read_text("utf-8").split("\n") if line.strip()]


def reference(corpus: str, raw: Path, out: Path) -> int:
    from lifecycle.corpus import prepare_corpus

    p, seed = settings()
    splits, _ = prepare_corpus(documents(raw), p.filters[corpus], p, seed, corpus)
    for split, kept in splits.items():
        (out / split).mkdir(parents=True, exist_ok=True)
        (out / split / "00000.jsonl").write_text("".join(json.dumps(d) + "\n" for d in kept), encoding="utf-8")
    return sum(len(s) for s in splits.values())


def pipeline(corpus: str, raw: Path, out: Path, tasks: int, workers: int) -> int:
    from lifecycle.params.data import DataExecutorParams
    from lifecycle.prepare_run import prepare_sharded

    p, seed = settings()
    work = out.parent / f".{out.name}.work"
    shutil.rmtree(work, ignore_errors=True)
    report, _ = prepare_sharded(corpus, raw, out, p, seed, DataExecutorParams(tasks=tasks, workers=workers), work)
    shutil.rmtree(work, ignore_errors=True)
    return report["documents_out"]


def _filters(texts: list[str]) -> float:
    from lifecycle.text import normalize, quality_failure

    filters, _ = settings()
    start = time.perf_counter()
    for text in texts:
        quality_failure(normalize(text), filters.filters["pretrain"])
    return time.perf_counter() - start


def ceiling(raw: Path) -> dict:
    """What 2 processes give on this machine for pure-Python work: normalise + quality filters over the first
    shard's texts in one process, then the same in two processes at once (each its own copy)."""
    from multiprocessing import get_context

    texts = [d["text"] for d in documents(raw / "pretrain")][:2000]
    one = min(_filters(texts) for _ in range(2))
    with get_context("fork").Pool(2) as pool:
        two = min(max(pool.map(_filters, [texts, texts])) for _ in range(2))
    return {"mode": "ceiling", "one_process_seconds": round(one, 3), "two_processes_seconds": round(two, 3),
            "speedup": round(2 * one / two, 3)}


def measure(mode: str, raw: Path, out: Path, tasks: int, workers: int) -> dict:
    if os.environ.get("LIFECYCLE_SOURCE"):
        sys.path.insert(0, os.environ["LIFECYCLE_SOURCE"])
    if mode == "pipeline":
        from lifecycle.datapipe import quiet_datatrove
        quiet_datatrove()
    corpora = [c for c in ("pretrain", "finetune") if (raw / c).is_dir()]

    def run(root: Path, target: Path) -> int:
        return sum(reference(c, root / c, target / c) if mode == "reference" else
                   pipeline(c, root / c, target / c, tasks, workers) for c in corpora)
    if os.environ.get("BENCH_WARMUP", "1") == "1":
        run(raw, out)  # warm-up: imports, datatrove's dependency checks, the page cache
        shutil.rmtree(out, ignore_errors=True)
    with PeakRss() as rss:
        start = time.perf_counter()
        written = run(raw, out)
        seconds = time.perf_counter() - start
    return {"mode": mode, "seconds": round(seconds, 3), "peak_rss_mb": round(rss.peak / 2**20, 1),
            "documents_out": written, "tasks": tasks if mode == "pipeline" else 1,
            "workers": workers if mode == "pipeline" else 1}


if __name__ == "__main__":
    mode, raw, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    tasks, workers = (int(sys.argv[4]), int(sys.argv[5])) if len(sys.argv) > 5 else (1, 1)
    print(json.dumps(ceiling(raw) if mode == "ceiling" else measure(mode, raw, out, tasks, workers)))
