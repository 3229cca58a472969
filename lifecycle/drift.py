"""Drift of served traffic against the training data: length PSI, token unigram Jensen-Shannon divergence and
label shift per endpoint; and the A/B comparison of the variants served (traffic share, latency, outcomes). A log
is read only when every record names the model the current params serve (see check_models)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lifecycle.core import DataError, StageError
from lifecycle.io import decode_utf8, parse_jsonl
from lifecycle.params.serve import AbTest, MonitorParams, ServeParams
from lifecycle.variants import model_sha256, variant_dir

EPS = 1e-4  # floor of a bin's share in the PSI: an empty bin is not an infinite shift
KINDS = {"classify": "classifier", "completions": "lm"}  # the model behind each endpoint
NO_TRAFFIC = "no traffic yet"
ANOTHER_MODEL = ("this log belongs to another model; start a new log for the current model (serve.request_log) or "
                 "point monitor.log at its log")


# ---------------------------------------------------------------- divergences

def quantile_edges(reference: list[int], bins: int) -> list[float]:
    """Inner bin edges at the reference's quantiles (repeated edges of discrete lengths merged)."""
    edges = np.quantile(np.asarray(reference, dtype=float), np.linspace(0, 1, bins + 1)[1:-1])
    return sorted({float(e) for e in edges})


def histogram(values: list[int], edges: list[float]) -> list[int]:
    """Counts per bin: bin i holds values in (edges[i-1], edges[i]]."""
    counts = np.bincount(np.searchsorted(edges, np.asarray(values, dtype=float), side="left"), minlength=len(edges) + 1)
    return counts.tolist()


def psi(expected: list[int], actual: list[int]) -> float:
    """Population stability index of `actual` against `expected` counts over the same bins."""
    e = np.maximum(np.asarray(expected, float) / max(sum(expected), 1), EPS)
    a = np.maximum(np.asarray(actual, float) / max(sum(actual), 1), EPS)
    return float(np.sum((a - e) * np.log(a / e)))


def js_divergence(p: Counter, q: Counter) -> float:
    """Jensen-Shannon divergence (bits, 0..1) between two count distributions (0 when either is empty)."""
    from scipy.spatial.distance import jensenshannon
    keys = sorted(set(p) | set(q))
    pv = np.array([p.get(k, 0) for k in keys], float)
    qv = np.array([q.get(k, 0) for k in keys], float)
    if not pv.sum() or not qv.sum():
        return 0.0
    with np.errstate(invalid="ignore"):  # rounding may put the divergence a hair below 0: sqrt -> nan
        distance = jensenshannon(pv, qv, base=2)  # the JS distance: the square root of the divergence
    return 0.0 if np.isnan(distance) else float(distance ** 2)


def text_drift(texts: list[str], reference: list[str], tokenize, bins: int) -> dict:
    """Length (tokens) PSI over the reference's quantile bins and token unigram JS divergence."""
    ref_ids, ids = tokenize(reference), tokenize(texts)
    ref_lengths, lengths = [len(t) for t in ref_ids], [len(t) for t in ids]
    edges = quantile_edges(ref_lengths, bins)
    expected, actual = histogram(ref_lengths, edges), histogram(lengths, edges)
    return {"requests": len(texts), "reference_texts": len(reference),
            "length_psi": round(psi(expected, actual), 4),
            "token_js": round(js_divergence(Counter(t for row in ref_ids for t in row),
                                            Counter(t for row in ids for t in row)), 4),
            "mean_length": {"reference": round(float(np.mean(ref_lengths)), 2),
                            "requests": round(float(np.mean(lengths)), 2)},
            "length_bins": [{"max_tokens": edge, "reference": round(e / sum(expected), 4),
                             "requests": round(a / sum(actual), 4)}
                            for edge, e, a in zip([*edges, None], expected, actual)]}  # None: the open last bin


def label_shift(reference: list[str], predicted: list[str]) -> dict:
    """Predicted-label distribution against the training labels: shares, PSI and JS divergence."""
    classes = sorted(set(reference) | set(predicted))
    ref, pred = Counter(reference), Counter(predicted)
    return {"reference": {c: round(ref[c] / len(reference), 4) for c in classes},
            "predicted": {c: round(pred[c] / len(predicted), 4) for c in classes},
            "psi": round(psi([ref[c] for c in classes], [pred[c] for c in classes]), 4),
            "js": round(js_divergence(ref, pred), 4)}


def lines_of(documents: list[str]) -> list[str]:
    return [line.strip() for doc in documents for line in doc.split("\n") if line.strip()]


# ---------------------------------------------------------------- A/B

def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


def variant_summary(records: list[dict]) -> dict:
    latencies = [r["latency_ms"] for r in records if r.get("latency_ms") is not None]
    ok = [r for r in records if r.get("outcome") == "ok"]
    completions = [r for r in ok if r.get("endpoint") == "completions"]
    labels = Counter(r["label"] for r in ok if r.get("endpoint") == "classify")
    return {"requests": len(records), "ok_rate": round(len(ok) / len(records), 4),
            "outcomes": dict(Counter(r.get("outcome", "unknown") for r in records)),
            "latency_p50_ms": percentile(latencies, 50), "latency_p95_ms": percentile(latencies, 95),
            "mean_completion_tokens": round(float(np.mean([r["completion_tokens"] for r in completions])), 2)
                                      if completions else None,
            "filtered_share": round(sum(1 for r in completions if r.get("filtered")) / len(completions), 4)
                              if completions else None,
            "label_shares": {k: round(v / sum(labels.values()), 4) for k, v in sorted(labels.items())}}


def ab_comparison(records: list[dict], ab: AbTest) -> dict:
    """Per-variant figures and the sample-ratio check: is B's share of traffic consistent with the split?"""
    from scipy.stats import binomtest
    a, b = ab.variants
    by = {v: [r for r in records if r.get("variant") == v] for v in (a, b)}
    n = len(by[a]) + len(by[b])
    if n == 0:
        return {"variants": [a, b], "requests": 0, "note": "no request in the log was served by either variant"}
    summary = {v: variant_summary(rs) if rs else {"requests": 0} for v, rs in by.items()}
    out = {"variants": [a, b], "expected_b_share": ab.split, "observed_b_share": round(len(by[b]) / n, 4),
           "sample_ratio_p_value": round(binomtest(len(by[b]), n, ab.split).pvalue, 4) if 0 < ab.split < 1 else None,
           "by_variant": summary}
    if by[a] and by[b] and summary[a]["latency_p50_ms"] and summary[b]["latency_p50_ms"]:
        out["latency_p50_b_over_a"] = round(summary[b]["latency_p50_ms"] / summary[a]["latency_p50_ms"], 3)
    return out


# ---------------------------------------------------------------- the stage

def read_log(path: Path) -> list[tuple[int, dict]]:
    """(line, record) of each record of a serve request log, every record checked for its endpoint's text."""
    if not path.exists():
        raise StageError(f"params.yaml: monitor.log = '{path}': not found (point it at a serve request log)")
    rows = parse_jsonl(decode_utf8(path.read_bytes(), path), path, required=("endpoint",), text_column=None)
    for row, record in rows:
        needs = {"completions": "prompt", "classify": "text"}.get(record["endpoint"])
        if needs is None:
            raise DataError(path, row, f"endpoint {record['endpoint']!r}: expected 'completions' or 'classify'")
        if not isinstance(record.get(needs), str):
            raise DataError(path, row, f"missing text column '{needs}'")
    return rows


# ---------------------------------------------------------------- which model wrote the log

def served_variants(serve: ServeParams) -> list[str]:
    """The variants the current serve params serve: serve.ab's two when set (the server then loads only those),
    else serve.variant."""
    return list(serve.ab.variants) if serve.ab else [serve.variant]


def short(sha256: str) -> str:
    return f"{sha256[:8]}…"


def current_model(checked: dict, kind: str, variant: str, root: Path) -> dict:
    """{sha256, path} of `kind`'s `variant` as it is on disk now, hashed once per check (kept in `checked`)."""
    by_variant = checked.setdefault(kind, {})
    if variant not in by_variant:
        directory = variant_dir(kind, variant, root)
        by_variant[variant] = {"sha256": model_sha256(directory), "path": directory.as_posix()}
    return by_variant[variant]


def check_models(rows: list[tuple[int, dict]], path: Path, variants: list[str], root: Path = Path("models")) -> dict:
    """Refuses a log that another model wrote: a record naming a variant the params do not serve, a hash other than
    that variant's current one (the classifier's for classify records, the LM's for completions), or no model at
    all (an older server's). One line names the file, the line, both hashes and the fix. Returns what was checked:
    {kind: {variant: {sha256, path}}}."""
    checked: dict[str, dict] = {}
    for row, record in rows:
        kind, model, where = KINDS[record["endpoint"]], record.get("model"), f"{path}:{row}"
        if model is None:
            variant = record.get("variant") if record.get("variant") in variants else variants[0]
            now = current_model(checked, kind, variant, root)
            raise StageError(f"{where}: names no model (a log from an older server), but the current {variant} is "
                             f"{short(now['sha256'])} ({now['path']}): {ANOTHER_MODEL}")
        if not (isinstance(model, dict) and isinstance(model.get("variant"), str)
                and isinstance(model.get("sha256"), str)):
            raise DataError(path, row, f'model: expected {{"variant": <name>, "sha256": <hex>}}, got {model!r}')
        served_by = f"{where}: served by {model['variant']} sha256 {short(model['sha256'])}"
        if model["variant"] not in variants:
            raise StageError(f"{served_by}, but the current params serve {' and '.join(variants)} (serve.variant, "
                             f"serve.ab): {ANOTHER_MODEL}")
        now = current_model(checked, kind, model["variant"], root)
        if model["sha256"] != now["sha256"]:
            raise StageError(f"{served_by}, but the current {model['variant']} is {short(now['sha256'])} "
                             f"({now['path']}): {ANOTHER_MODEL}")
    return checked


def monitor(records: list[dict], reference: list[dict], lm_reference: list[str], tokenize, settings: MonitorParams,
            ab: AbTest | None) -> dict:
    """The drift and A/B report of `records`; none (no log configured yet): status 'no traffic yet', zero counts."""
    classify = [r for r in records if r["endpoint"] == "classify" and r.get("outcome", "ok") == "ok"]
    prompts = [r["prompt"] for r in records if r["endpoint"] == "completions"]
    drift = {}
    if classify:
        drift["classify"] = text_drift([r["text"] for r in classify], [d["text"] for d in reference], tokenize,
                                       settings.bins)
        if all("label" in d for d in reference):
            drift["classify"]["labels"] = label_shift([d["label"] for d in reference], [r["label"] for r in classify])
    if prompts:
        drift["completions"] = text_drift(prompts, lines_of(lm_reference), tokenize, settings.bins)
    for _name, d in drift.items():
        shifted = [k for k, v in (("length", d["length_psi"]), ("labels", d.get("labels", {}).get("psi", 0)))
                   if v > settings.psi_alert]
        d["drifted"] = shifted
    endpoints = Counter(r["endpoint"] for r in records)
    return {"status": "ok" if records else NO_TRAFFIC, "log": settings.log,
            "requests": {"total": len(records), **{e: endpoints[e] for e in KINDS},
                         "not_ok": sum(1 for r in records if r.get("outcome", "ok") != "ok")},
            "psi_alert": settings.psi_alert, "drift": drift, "ab": ab_comparison(records, ab) if ab else None}


def tokenizer_function(directory: Path):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(directory)

    def tokenize(texts: list[str]) -> list[list[int]]:
        out = []
        for start in tqdm(range(0, len(texts), 1000), desc="tokenize", unit="k texts", disable=len(texts) < 5000):
            out += tokenizer(texts[start:start + 1000], add_special_tokens=False)["input_ids"]
        return out
    return tokenize
