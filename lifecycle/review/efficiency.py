"""The report's Compression and Benchmark sections: what each variant costs and gains, one table per question,
from reports/compress.json and reports/bench.json (every other figure stays in those files)."""
from __future__ import annotations

from lifecycle.review.markdown import fmt, get, pct, table

MODELS = (("classifier", "classifier"), ("lm", "language model"))
DECODINGS = (("greedy_tokens_per_s", "greedy"), ("greedy_no_cache_tokens_per_s", "greedy, no KV cache"),
             ("kv_cache_speedup", "KV-cache speed-up"), ("sampling_tokens_per_s", "sampling"),
             ("beam_tokens_per_s", "beam"), ("greedy_speedup_vs_pytorch", "greedy speed-up vs PyTorch"))
ENVIRONMENT_SOFTWARE = ("python", "torch", "transformers", "onnxruntime", "optimum")


def _number(key: str) -> int:
    return int(key.rsplit("_", 1)[-1])


def shapes(bench: dict | None) -> tuple[str | None, str | None, str | None]:
    """The classifier's first sequence length, its largest batch (bench.json keys seq_N, batch_N), and the
    generation's first prompt length (prompt_N); None where the benchmark has none."""
    latency = next((v.get("latency") for v in (get(bench, "classifier") or {}).values() if v.get("latency")), {})
    batches = sorted(latency, key=_number)
    first = next(iter(latency.get("batch_1") or (latency[batches[0]] if batches else {})), None)
    prompts = [k for v in (get(bench, "generation") or {}).values() for k in v if k.startswith("prompt_")]
    return first, (batches[-1] if batches else None), (prompts[0] if prompts else None)


def signed(value, digits: int = 2, unit: str = "") -> str:
    return "—" if value is None else f"{value:+.{digits}f}{unit}"


def compression_row(kind: str, name: str, variant: str, m: dict, bench: dict | None, seq, prompt) -> list[str]:
    if kind == "classifier":
        quality = signed(m.get("accuracy_change_points"), unit=" points accuracy")
        latency = get(bench, f"classifier.{variant}.latency.batch_1.{seq}.p50_ms") if seq else None
        speedup = get(bench, f"classifier.{variant}.speedup_vs_pytorch_batch_1")
    else:
        quality = signed(m.get("perplexity_change_pct"), unit="% perplexity")
        latency = None
        speedup = get(bench, f"generation.{variant}.{prompt}.greedy_speedup_vs_pytorch") if prompt else None
    size = m.get("size_bytes")
    return [name, variant, fmt(size / 1e6, 3) if size is not None else "—", quality, pct(m.get("agreement")),
            fmt(latency, 3), "—" if speedup is None else f"{speedup:.2f}×"]


def compression_lines(compress: dict, bench: dict | None) -> list[str]:
    """One row per variant (classifier, then language model; distilled ones among the classifier's): size, quality
    change and agreement against fp32 PyTorch, p50 latency and speed-up at batch 1."""
    seq, _, prompt = shapes(bench)
    rows = [compression_row(kind, name, variant, m, bench, seq, prompt)
            for kind, name in MODELS for variant, m in (compress.get(kind) or {}).items() if isinstance(m, dict)]
    length = f"{_number(seq)} tokens" if seq else "no benchmark"
    lines = ["Against fp32 PyTorch (`pytorch`): quality change on the test text (classifier: accuracy, points; "
             "language model: perplexity, %), agreement (same predicted class; same next token), then "
             "`reports/bench.json` at batch 1: classifier p50 latency and speed-up (geometric mean over lengths); "
             "language model: greedy-generation speed-up"
             + (f" ({_number(prompt)}-token prompt)" if prompt else "") + ".", ""]
    lines += table(["model", "variant", "size MB", "quality change", "agreement", f"p50 ms, batch 1, {length}",
                    "speed-up, batch 1"], rows) + [""]
    facts: dict[str, list[str]] = {}  # the same facts for both models are said once
    for kind, name in MODELS:
        f = get(compress, f"facts.{kind}") or {}
        if f.get("sparsity_of_projections") is not None:
            facts.setdefault(f"pruned to {pct(f['sparsity_of_projections'])} zeros in the projections "
                             f"({pct(f.get('sparsity_of_all_weights'))} of all weights), static int8 calibrated on "
                             f"{fmt(f.get('calibration_examples_used'))} examples", []).append(name)
    said = "; ".join(f"{' and '.join(names)}: {text}" for text, names in facts.items())
    return lines + ([f"{said[0].upper()}{said[1:]}.", ""] if said else [])


def environment_lines(bench: dict) -> list[str]:
    """Threads, machine and library versions the timings were taken with (bench.json `environment`, if any)."""
    env = bench.get("environment") or {}
    machine = f"Timed with {fmt(bench.get('threads', env.get('threads')))} threads"
    if env.get("cpu"):
        machine += f" on {env['cpu']} ({fmt(env.get('cores'))} cores"
        machine += f"; {env['cpu_flags']})" if env.get("cpu_flags") else ")"
    if env.get("gpu") not in (None, "none"):
        machine += f", GPU {env['gpu']}"
    lines = [machine + "."]
    shown = {"cpu", "cpu_flags", "cores", "threads", "gpu"}
    software = [f"{k} {env[k]}" for k in ENVIRONMENT_SOFTWARE if k in env]
    software += [f"{k} {v}" for k, v in env.items()
                 if k not in shown and k not in ENVIRONMENT_SOFTWARE and not isinstance(v, (dict, list))]
    if software:
        lines[0] += " " + ", ".join(software) + "."
    return lines + [""]


def classifier_bench_rows(bench: dict, seq: str, largest: str) -> list[list[str]]:
    rows = []
    for variant, v in (bench.get("classifier") or {}).items():
        one, big = get(v, f"latency.batch_1.{seq}") or {}, get(v, f"latency.{largest}.{seq}") or {}
        rows.append([variant, f"{fmt(one.get('p50_ms'), 3)} / {fmt(one.get('p95_ms'), 3)}",
                     f"{fmt(big.get('p50_ms'), 3)} / {fmt(big.get('p95_ms'), 3)}", fmt(big.get("sequences_per_s"), 3),
                     f"{fmt(v.get('peak_rss_mb'))} / {fmt(v.get('model_peak_mb'))}",
                     f"{fmt(v.get('speedup_vs_pytorch_batch_1'), 3)}× / {fmt(v.get('speedup_vs_pytorch'), 3)}×"])
    return rows


def small_lines(small: dict) -> list[str]:
    """The `small` model's int8 check in two lines: its shape and p50s, then its speed-up ratios."""
    if not small:
        return []
    p50 = ", ".join(f"{k.removesuffix('_p50_ms')} {fmt(v, 3)} ms" for k, v in small.items() if k.endswith("_p50_ms"))
    ratios = ", ".join(f"{k.replace('_speedup_vs_', ' vs ')} {fmt(v, 3)}×" for k, v in small.items()
                       if "_speedup_vs_" in k)
    return [f"A small model ({fmt(small.get('parameters'))} parameters, batch {fmt(small.get('batch_size'))}, "
            f"{fmt(small.get('sequence_length'))} tokens), p50: {p50}. Speed-ups: {ratios}.", ""]


def benchmark_lines(bench: dict) -> list[str]:
    """The timings a reader compares: classifier latency at batch 1 and the largest batch, throughput, memory and
    speed-up; generation tokens/s by decoding; the small model's ratios; what it was timed on."""
    seq, largest, prompt = shapes(bench)
    lines = environment_lines(bench)
    if seq:
        lines += table(["classifier variant", f"p50 / p95 ms, batch 1, {_number(seq)} tokens",
                        f"p50 / p95 ms, batch {_number(largest)}", f"sequences/s, batch {_number(largest)}",
                        "peak MB (process / model)", "speed-up vs PyTorch (batch 1 / all shapes)"],
                       classifier_bench_rows(bench, seq, largest)) + [""]
    if prompt:
        generation = bench.get("generation") or {}
        lines += table([f"language model, {_number(prompt)}-token prompt, tokens/s"] + [h for _, h in DECODINGS],
                       [[variant] + [fmt(get(g, f"{prompt}.{k}"), 3) for k, _ in DECODINGS]
                        for variant, g in generation.items()]) + [""]
    return lines + small_lines(bench.get("small") or {}) + \
        ["Every shape, percentile and prompt length: `reports/bench.json`.", ""]
