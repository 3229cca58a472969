"""significance: is a metric's change between two runs larger than re-sampling the test set would give?

Both runs scored the same test examples, so their difference is judged on paired examples: a paired bootstrap
resamples example indices (the same indices for both sides), recomputes the statistic on each side and takes the
percentile interval of head - base. Ratio statistics (perplexity, bits per byte) are recomputed from the
resampled sums, not averaged per document. For accuracy McNemar's exact test on the discordant pairs says the same
thing without resampling.

Per-example records (lifecycle.examples: one JSON object a line, reports/examples/<stem>/<prefix>.jsonl):
- classifier: {"id", "label": class id, "probabilities": [one per class]}; the prediction is the argmax.
- language model: {"id", "nll": nats summed over the document's tokens, "tokens", "bytes"}.
Records pair by `id`; classifier pairs must also agree on the label (else they are left out and counted).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lifecycle.stats import interval_quantiles

CALIBRATION_BINS = 10
CLASSIFIER, LM = "classifier", "lm"
STATISTICS = {"accuracy": CLASSIFIER, "macro_f1": CLASSIFIER, "expected_calibration_error": CLASSIFIER,
              "perplexity": LM, "bits_per_byte": LM}


# ---------------------------------------------------------------- pairing

@dataclass
class Paired:
    """The examples both sides scored, as arrays in one order (`base[k][i]` and `head[k][i]` are example i)."""
    kind: str
    base: dict[str, np.ndarray]
    head: dict[str, np.ndarray]
    only_base: int = 0
    only_head: int = 0
    label_mismatch: int = 0

    @property
    def n(self) -> int:
        return size(self.base)


def size(side: dict[str, np.ndarray]) -> int:
    return len(side["label" if "label" in side else "nll"])


def _by_id(records: list[dict], side: str) -> dict:
    out = {}
    for i, record in enumerate(records, 1):
        if not isinstance(record, dict) or "id" not in record:
            raise ValueError(f"{side}: row {i}: a per-example record needs an 'id'")
        if record["id"] in out:
            raise ValueError(f"{side}: row {i}: id {record['id']!r} appears twice")
        out[record["id"]] = record
    return out


def _columns(records: list[dict], kind: str, side: str) -> dict[str, np.ndarray]:
    keys = ("label", "probabilities") if kind == CLASSIFIER else ("nll", "tokens", "bytes")
    missing = next(((r["id"], k) for r in records for k in keys if k not in r), None)
    if missing:
        raise ValueError(f"{side}: id {missing[0]!r}: a {kind} record needs {missing[1]!r}")
    if kind == LM:
        return {k: np.array([r[k] for r in records], dtype=float) for k in keys}
    try:
        probabilities = np.array([r["probabilities"] for r in records], dtype=float).reshape(len(records), -1)
    except ValueError:  # ragged, or no records at all
        if records:
            raise ValueError(f"{side}: 'probabilities' must be lists of one number per class") from None
        probabilities = np.zeros((0, 1))
    return {"label": np.array([r["label"] for r in records], dtype=int),
            "predicted": probabilities.argmax(axis=1), "confidence": probabilities.max(axis=1, initial=0.0)}


def pair(base: list[dict], head: list[dict], kind: str) -> Paired:
    """The examples in both lists, paired by id in the base's order (classifier pairs: only where the labels agree)."""
    old, new = _by_id(base, "base"), _by_id(head, "head")
    common = [i for i in old if i in new]
    mismatch = 0
    if kind == CLASSIFIER:
        agree = [i for i in common if old[i].get("label") == new[i].get("label")]
        mismatch, common = len(common) - len(agree), agree
    shared = len(common) + mismatch
    sides = [_columns([records[i] for i in common], kind, name) for records, name in ((old, "base"), (new, "head"))]
    if kind == CLASSIFIER:  # one set of classes for both sides and every replicate: the paired sample's
        classes = np.union1d(*(np.union1d(side["label"], side["predicted"]) for side in sides))
        sides = [{**side, "classes": classes} for side in sides]
    return Paired(kind, *sides, only_base=len(old) - shared, only_head=len(new) - shared, label_mismatch=mismatch)


# ---------------------------------------------------------------- statistics of weighted (resampled) examples
# Each takes W (replicates x examples: how often each example was drawn) and one side's columns.

def _accuracy(w: np.ndarray, side: dict) -> np.ndarray:
    return w @ (side["predicted"] == side["label"]) / w.shape[1]


def _macro_f1(w: np.ndarray, side: dict) -> np.ndarray:
    """Mean over the classes of 2TP / (2TP + FP + FN), 0 for a class neither predicted nor present."""
    scores = []
    for k in side["classes"]:
        predicted, actual = side["predicted"] == k, side["label"] == k
        tp, fp, fn = w @ (predicted & actual), w @ (predicted & ~actual), w @ (~predicted & actual)
        denominator = 2 * tp + fp + fn
        scores.append(np.divide(2 * tp, denominator, out=np.zeros_like(denominator, dtype=float),
                                where=denominator > 0))
    return np.mean(scores, axis=0)


def _calibration_error(w: np.ndarray, side: dict) -> np.ndarray:
    """sum_b |correct_b - confidence_b| / n over equal-width confidence bins (as lifecycle/metrics' ECE)."""
    bins = np.clip(np.ceil(side["confidence"] * CALIBRATION_BINS).astype(int) - 1, 0, CALIBRATION_BINS - 1)
    members = np.eye(CALIBRATION_BINS)[bins]  # examples x bins
    correct = (side["predicted"] == side["label"])[:, None]
    gap = w @ (members * correct) - w @ (members * side["confidence"][:, None])
    return np.abs(gap).sum(axis=1) / w.shape[1]


def _perplexity(w: np.ndarray, side: dict) -> np.ndarray:
    return np.exp((w @ side["nll"]) / (w @ side["tokens"]))


def _bits_per_byte(w: np.ndarray, side: dict) -> np.ndarray:
    return (w @ side["nll"]) / math.log(2) / (w @ side["bytes"])


STATISTIC: dict[str, Callable[[np.ndarray, dict], np.ndarray]] = {
    "accuracy": _accuracy, "macro_f1": _macro_f1, "expected_calibration_error": _calibration_error,
    "perplexity": _perplexity, "bits_per_byte": _bits_per_byte}


def statistic(name: str, side: dict[str, np.ndarray]) -> float:
    """`name` of one side's examples, each counted once."""
    return float(STATISTIC[name](np.ones((1, size(side))), side)[0])


# ---------------------------------------------------------------- the tests

@dataclass
class Difference:
    """head - base of a statistic on paired examples, with its paired-bootstrap interval (and McNemar for
    accuracy)."""
    statistic: str
    delta: float
    ci_low: float
    ci_high: float
    confidence: float
    n: int
    only_base: int = 0
    only_head: int = 0
    label_mismatch: int = 0
    mcnemar_p: float | None = None
    b: int | None = None  # base right, head wrong
    c: int | None = None  # base wrong, head right

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (and, for accuracy, McNemar rejects equal error rates at the same level)."""
        outside = self.ci_low > 0 or self.ci_high < 0
        return outside and (self.mcnemar_p is None or self.mcnemar_p < 1 - self.confidence)


def _weights(rng: np.random.Generator, replicates: int, n: int) -> np.ndarray:
    """How often each of n examples is drawn in each replicate of n draws with replacement."""
    draws = rng.integers(0, n, size=(replicates, n)) + n * np.arange(replicates)[:, None]
    return np.bincount(draws.ravel(), minlength=replicates * n).reshape(replicates, n).astype(float)


def bootstrap_deltas(paired: Paired, name: str, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """head - base of `name` on `n_boot` resamples of the paired examples (the same resample for both sides),
    in blocks of at most ~4M weights."""
    rng, fn = np.random.default_rng(seed), STATISTIC[name]
    block = max(1, 4_000_000 // max(paired.n, 1))
    out = []
    for start in range(0, n_boot, block):
        w = _weights(rng, min(block, n_boot - start), paired.n)
        out.append(fn(w, paired.head) - fn(w, paired.base))
    return np.concatenate(out)


def mcnemar(base_correct, head_correct) -> tuple[float, int, int]:
    """McNemar's exact test: two-sided binomial p-value of the discordant pairs, b (base right, head wrong) and
    c (base wrong, head right)."""
    from scipy.stats import binomtest

    base_correct, head_correct = np.asarray(base_correct, bool), np.asarray(head_correct, bool)
    b, c = int((base_correct & ~head_correct).sum()), int((~base_correct & head_correct).sum())
    return (1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)), b, c


def paired_difference(base: list[dict], head: list[dict], name: str, n_boot: int = 1000, confidence: float = 0.95,
                      seed: int = 0) -> Difference | None:
    """head - base of statistic `name` (STATISTICS) on the records both sides share; None when none pair."""
    paired = pair(base, head, STATISTICS[name])
    if paired.n == 0:
        return None
    delta = statistic(name, paired.head) - statistic(name, paired.base)
    low, high = np.quantile(bootstrap_deltas(paired, name, n_boot, seed), interval_quantiles(confidence))
    result = Difference(name, float(delta), float(low), float(high), confidence, paired.n, paired.only_base,
                        paired.only_head, paired.label_mismatch)
    if name == "accuracy":
        correct = [side["predicted"] == side["label"] for side in (paired.base, paired.head)]
        result.mcnemar_p, result.b, result.c = mcnemar(*correct)
    return result
