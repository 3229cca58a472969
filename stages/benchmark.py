"""benchmark: every model variant timed in one process, so the ratios between them are fair.

models/{finetuned,pretrained,distilled,compressed} + reports/compress.json -> reports/bench.json (classifier
latency p50/p95/p99 and sequences/s per variant x batch size x sequence length; LM generation tokens/s per prompt
length for greedy, sampling and beam search with the KV cache, and greedy without it; each variant's peak memory
in a process of its own; the "small" ~20M-parameter config's int8 / ORT fp32 ratio) and
reports/plots/speedup.json (speed-up against size and quality). Timings vary run to run; bench.json's
"environment" names the CPU (and its int8/bf16 instruction sets), threads and library versions they depend on.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from tqdm import tqdm

from lifecycle.benchmarking import (
    MODELS,
    PROMPTS,
    TEXTS,
    add_speedups,
    chosen_variants,
    classifier_latencies,
    generation_speeds,
    peak_memory,
    small_config_ratios,
    speedup_plot,
)
from lifecycle.core import seed_everything
from lifecycle.environment import describe
from lifecycle.io import read_jsonl, write_json
from lifecycle.params.base import load
from lifecycle.params.benchmark import BenchmarkParams
from lifecycle.params.model import ModelParams
from lifecycle.variants import PYTORCH
from lifecycle.variants import load as load_variant

log = logging.getLogger("llm-lifecycle.benchmark")
COMPRESS_REPORT = Path("reports/compress.json")


def main() -> None:
    import torch

    params = load(benchmark=BenchmarkParams, model=ModelParams)
    b = params.benchmark
    seed_everything(params.seed)
    if b.threads:
        torch.set_num_threads(b.threads)
    classifier_variants = chosen_variants(b.variants, "classifier")
    lm_variants = list(chosen_variants(b.generation.variants, "lm"))
    texts = [d["text"] for d in read_jsonl(TEXTS)]
    prompt_text = read_jsonl(PROMPTS)[0]["text"]

    report: dict = {"threads": torch.get_num_threads(), "classifier": {}, "generation": {}}
    for variant in tqdm(classifier_variants, desc="classifier variants"):
        model, tokenizer = load_variant("classifier", variant, MODELS, b.threads)
        report["classifier"][variant] = {"latency": classifier_latencies(model, tokenizer, texts, b)}
        del model
    add_speedups(report["classifier"])
    for variant in tqdm(lm_variants, desc="LM variants"):
        model, tokenizer = load_variant("lm", variant, MODELS, b.threads)
        report["generation"][variant] = generation_speeds(model, tokenizer, prompt_text, b.generation, b, params.seed)
        del model
    for _variant, by_prompt in report["generation"].items():
        for length, speeds in by_prompt.items():
            reference = report["generation"][PYTORCH][length]["greedy_tokens_per_s"]
            speeds["greedy_speedup_vs_pytorch"] = round(speeds["greedy_tokens_per_s"] / reference, 4)
    # Memory after timing, each variant in a process of its own (the timings above all share one process).
    inputs = {"classifier": {"texts": texts, "batch_size": max(b.batch_sizes), "length": max(b.sequence_lengths)},
              "lm": {"prompt": prompt_text, "length": max(b.generation.prompt_tokens),
                     "new_tokens": b.generation.new_tokens}}
    for kind, section in (("classifier", "classifier"), ("lm", "generation")):
        for variant in tqdm(report[section], desc=f"{kind} peak memory"):
            report[section][variant] |= peak_memory(kind, variant, MODELS, b.threads, inputs[kind])
    if b.small.enabled:
        report["small"] = small_config_ratios(b.small, b, texts, params.seed)

    compress = json.loads(COMPRESS_REPORT.read_text()) if COMPRESS_REPORT.exists() else {}
    write_json("reports/plots/speedup.json", speedup_plot(report["classifier"], compress))
    write_json("reports/bench.json", report | {"environment": describe()})
    for variant, result in report["classifier"].items():
        log.info("%-15s speed-up vs PyTorch %.2fx (batch 1: %.2fx)", variant, result["speedup_vs_pytorch"],
                 result.get("speedup_vs_pytorch_batch_1", float("nan")))


if __name__ == "__main__":
    from lifecycle.core import run
    run(main)
