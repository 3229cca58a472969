"""Benchmarks of model variants: classifier latency percentiles and throughput, generation speed with and without
the KV cache, each variant's peak memory in a process of its own, the int8 gain of a ~20M-parameter random model,
and the speed-up against size and quality. Every input (texts, prompts, random weights, seeds) is fixed."""
from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np

from lifecycle.core import StageError
from lifecycle.modeling import parameter_count
from lifecycle.params.benchmark import BenchmarkParams, GenerationBench, SmallBench
from lifecycle.params.model import ModelParams
from lifecycle.variants import PYTORCH, available, load

MODELS = Path("models")
TEXTS, PROMPTS = Path("data/prepared/finetune/test"), Path("data/prepared/pretrain/test")


# ---------------------------------------------------------------- measuring

def memory_status() -> dict:
    """This process's resident memory now (VmRSS) and its high-water mark (VmHWM), in MiB (Linux /proc)."""
    status = Path("/proc/self/status").read_text()
    return {key: int(status.split(f"{key}:")[1].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}


def variant_peak_memory(kind: str, variant: str, root: Path, threads: int | None, inputs: dict) -> dict:
    """Peak resident memory of one variant, measured in the fresh process this runs in: the high-water mark is
    reset after the imports every variant pays (the baseline), then read after loading the variant and running its
    largest workload once. `model_peak_mb` is the rise over the baseline."""
    import optimum.onnxruntime  # noqa: F401  (imported by every variant's process alike)
    import torch
    if threads:
        torch.set_num_threads(threads)
    baseline = memory_status()["VmRSS"]
    try:
        Path("/proc/self/clear_refs").write_text("5")  # high-water mark := now (Linux >= 4.0)
    except OSError as err:
        raise StageError(f"/proc/self/clear_refs: cannot reset the peak memory mark ({err.strerror})") from None
    model, tokenizer = load(kind, variant, root, threads)
    with torch.no_grad():
        if kind == "classifier":
            model(**fixed_batch(tokenizer, inputs["texts"], inputs["batch_size"], inputs["length"]))
        else:
            prompt = dict(tokenizer([inputs["prompt"]], truncation=True, max_length=inputs["length"],
                                    return_tensors="pt"))
            model.generate(**prompt, max_new_tokens=inputs["new_tokens"], min_new_tokens=inputs["new_tokens"],
                           do_sample=False, pad_token_id=model.config.pad_token_id)
    peak = memory_status()["VmHWM"]
    return {"peak_rss_mb": round(peak, 1), "model_peak_mb": round(peak - baseline, 1)}


def peak_memory(kind: str, variant: str, root: Path, threads: int | None, inputs: dict) -> dict:
    """`variant_peak_memory` in a new process (spawned, so no other variant's memory is counted)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(variant_peak_memory, kind, variant, root, threads, inputs).result()


def time_calls(call, warmup: int, repetitions: int) -> np.ndarray:
    """Wall-clock milliseconds of each of `repetitions` calls, after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repetitions):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return np.asarray(times)


def latency_summary(times_ms: np.ndarray, batch_size: int) -> dict:
    p50, p95, p99 = np.percentile(times_ms, [50, 95, 99])
    return {"p50_ms": round(float(p50), 4), "p95_ms": round(float(p95), 4), "p99_ms": round(float(p99), 4),
            "sequences_per_s": round(batch_size * 1000 / float(times_ms.mean()), 2)}


def geometric_mean(values: list[float]) -> float:
    return float(math.exp(sum(math.log(v) for v in values) / len(values)))


def fixed_batch(tokenizer, texts: list[str], batch_size: int, length: int) -> dict:
    """`batch_size` real texts cut or padded to exactly `length` tokens: every variant sees the same tensors."""
    picked = [texts[i % len(texts)] for i in range(batch_size)]
    return dict(tokenizer(picked, truncation=True, max_length=length, padding="max_length", return_tensors="pt"))


def classifier_latencies(model, tokenizer, texts: list[str], b: BenchmarkParams) -> dict:
    import torch
    out = {}
    for batch_size in b.batch_sizes:
        for length in b.sequence_lengths:
            batch = fixed_batch(tokenizer, texts, batch_size, length)

            def call(batch=batch):
                with torch.no_grad():
                    model(**batch)
            out[f"batch_{batch_size}"] = out.get(f"batch_{batch_size}", {}) | {
                f"seq_{length}": latency_summary(time_calls(call, b.warmup, b.repetitions), batch_size)}
    return out


def add_speedups(results: dict, reference: str = PYTORCH) -> None:
    """p50 ratios against `reference` per shape, their geometric mean, and the same at batch 1 alone."""
    for _variant, result in results.items():
        ratios, batch1 = [], []
        for batch, by_length in result["latency"].items():
            for length, summary in by_length.items():
                ratio = results[reference]["latency"][batch][length]["p50_ms"] / summary["p50_ms"]
                summary["speedup_vs_pytorch"] = round(ratio, 4)
                ratios.append(ratio)
                if batch == "batch_1":
                    batch1.append(ratio)
        result["speedup_vs_pytorch"] = round(geometric_mean(ratios), 4)
        if batch1:
            result["speedup_vs_pytorch_batch_1"] = round(geometric_mean(batch1), 4)


# ---------------------------------------------------------------- generation

def decoding_kwargs(mode: str, g: GenerationBench) -> dict:
    if mode == "greedy":
        return {"do_sample": False, "num_beams": 1}
    if mode == "sampling":
        return {"do_sample": True, "temperature": g.temperature, "top_k": g.top_k, "top_p": g.top_p, "num_beams": 1}
    return {"do_sample": False, "num_beams": g.num_beams}


def tokens_per_second(model, prompt: dict, new_tokens: int, kwargs: dict, warmup: int, repetitions: int,
                      seed: int) -> tuple[float, list[int]]:
    """Generated tokens per second, forcing exactly `new_tokens` (no early end of sequence), and the tokens."""
    import torch
    generated = []

    def call():
        torch.manual_seed(seed)  # sampling draws the same tokens on every repetition
        with torch.no_grad():
            output = model.generate(**prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                    pad_token_id=model.config.pad_token_id, **kwargs)
        assert output.shape[-1] - prompt["input_ids"].shape[-1] == new_tokens
        generated[:] = output[0, prompt["input_ids"].shape[-1]:].tolist()
    times = time_calls(call, warmup, repetitions)
    return round(new_tokens * 1000 / float(np.median(times)), 2), generated


def generation_speeds(model, tokenizer, prompt_text: str, g: GenerationBench, b: BenchmarkParams,
                      seed: int) -> dict:
    """Per prompt length: tokens/s of each decoding with the KV cache, and of greedy decoding without it (every
    step recomputes the whole text; an exported LM is fed an empty past), their ratio, and whether both greedy
    runs chose the same tokens."""
    from lifecycle.modeling import context_length
    context = context_length(model)
    if max(g.prompt_tokens) + g.new_tokens > context:
        raise StageError(f"params.yaml: benchmark.generation: prompt_tokens {max(g.prompt_tokens)} + new_tokens "
                         f"{g.new_tokens} do not fit the language model's context of {context} tokens")
    out = {}
    for length in g.prompt_tokens:
        prompt = dict(tokenizer([prompt_text], truncation=True, max_length=length, return_tensors="pt"))
        if prompt["input_ids"].shape[-1] < length:
            raise StageError(f"{PROMPTS}: the first document has {prompt['input_ids'].shape[-1]} tokens, fewer than "
                             f"benchmark.generation.prompt_tokens {length}")
        speeds, tokens = {}, {}
        for mode in dict.fromkeys(["greedy", *g.decoding]):  # greedy always: the cache's reference
            speeds[f"{mode}_tokens_per_s"], tokens[mode] = tokens_per_second(
                model, prompt, g.new_tokens, decoding_kwargs(mode, g) | {"use_cache": True}, min(b.warmup, 1),
                g.repetitions, seed)
        speeds["greedy_no_cache_tokens_per_s"], uncached = tokens_per_second(
            model, prompt, g.new_tokens, decoding_kwargs("greedy", g) | {"use_cache": False}, min(b.warmup, 1),
            g.repetitions, seed)
        speeds["kv_cache_speedup"] = round(speeds["greedy_tokens_per_s"] / speeds["greedy_no_cache_tokens_per_s"], 4)
        speeds["no_cache_same_tokens"] = uncached == tokens["greedy"]
        out[f"prompt_{length}"] = speeds
    return out


# ---------------------------------------------------------------- the "small" config (~20M parameters)

def small_config_ratios(s: SmallBench, b: BenchmarkParams, texts: list[str], seed: int) -> dict:
    """A randomly initialised classifier of the `small` shape, exported and int8-quantized here, then timed:
    a tiny model's latency is mostly overhead, a 20-30M one shows what int8 kernels buy."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from lifecycle.compression import detect_isa, export_onnx, quantize_dynamic
    from lifecycle.modeling import build_config
    from lifecycle.variants import load_tokenizer

    tokenizer = load_tokenizer(MODELS / "finetuned")
    shape = ModelParams(n_layers=s.n_layers, d_model=s.d_model, n_heads=s.n_heads, d_ff=s.d_ff,
                          context_length=s.sequence_length)
    config = build_config(shape, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
    config.num_labels = 2
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    parameters = parameter_count(model)
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        model.save_pretrained(root / "finetuned", safe_serialization=True)
        tokenizer.save_pretrained(root / "finetuned")
        export_onnx(root / "finetuned", root / "compressed/classifier/onnx_fp32", "classifier")
        quantize_dynamic(root / "compressed/classifier/onnx_fp32", root / "compressed/classifier/int8_dynamic",
                         detect_isa(), per_channel=False)
        for variant in (PYTORCH, "onnx_fp32", "int8_dynamic"):
            loaded, _ = load("classifier", variant, root, b.threads)
            batch = fixed_batch(tokenizer, texts, s.batch_size, s.sequence_length)

            def call(loaded=loaded, batch=batch):
                with torch.no_grad():
                    loaded(**batch)
            results[variant] = latency_summary(time_calls(call, b.warmup, b.repetitions), s.batch_size)
    return {"parameters": parameters, "batch_size": s.batch_size, "sequence_length": s.sequence_length,
            **{f"{v}_p50_ms": r["p50_ms"] for v, r in results.items()},
            "int8_speedup_vs_onnx_fp32": round(results["onnx_fp32"]["p50_ms"] / results["int8_dynamic"]["p50_ms"], 4),
            "int8_speedup_vs_pytorch": round(results[PYTORCH]["p50_ms"] / results["int8_dynamic"]["p50_ms"], 4),
            "onnx_fp32_speedup_vs_pytorch": round(results[PYTORCH]["p50_ms"] / results["onnx_fp32"]["p50_ms"], 4)}


# ---------------------------------------------------------------- plot data

def speedup_plot(classifier: dict, compress: dict) -> list[dict]:
    """One row per classifier variant: speed-up against size (MB) and quality (test accuracy)."""
    quality = compress.get("classifier", {})
    rows = []
    for variant, result in classifier.items():
        if variant not in quality:
            continue
        rows.append({"variant": variant, "size_mb": round(quality[variant]["size_bytes"] / 1e6, 3),
                     "accuracy": quality[variant]["accuracy"], "speedup_vs_pytorch": result["speedup_vs_pytorch"]})
    return rows


def chosen_variants(requested: list[str] | None, kind: str) -> list[str]:
    found = available(kind, MODELS)
    if requested is None:
        return found
    missing = [v for v in requested if v not in found]
    if missing:
        raise StageError(f"params.yaml: benchmark.variants: {kind} variant {missing[0]!r} not found "
                         f"(available: {', '.join(found)})")
    return list(dict.fromkeys([PYTORCH, *requested]))  # PyTorch is the reference of every ratio
