"""verdict: whether a metric's change between two runs is a change or noise, and whether a gate holds.

A delta is judged with what the two runs offer:
- per-example files in both runs (lifecycle.examples): a paired bootstrap interval of head - base (and McNemar's
  test for accuracy) covers the sampling of the test set (lifecycle.review.significance);
- reports/noise.json (lifecycle.review.noise): a band of seed-to-seed differences covers training noise.
The delta is significant (🟢 better / 🔴 worse) when every estimate there is says so: the paired interval excludes 0
and |delta| exceeds the band. With neither there is "no noise estimate", never a colour. A timing measured on other
hardware (bench.json's `environment`) is "not comparable".
"""
from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import dataclass, field

from lifecycle.core import StageError
from lifecycle.examples import metric_examples_path
from lifecycle.params.report import Gate
from lifecycle.review.markdown import fmt
from lifecycle.review.revision import Revision
from lifecycle.review.significance import STATISTICS, Difference, paired_difference

BETTER, WORSE, WITHIN_NOISE, NO_ESTIMATE, NOT_COMPARABLE, UNCHANGED = (
    "better", "worse", "within noise", "no noise estimate", "not comparable", "unchanged")
SIGNIFICANT = (BETTER, WORSE)
MARK = {BETTER: "🟢 better", WORSE: "🔴 worse", WITHIN_NOISE: "⚪ within noise"}

NOISE_FILE = "reports/noise.json"
BENCH_FILE = "reports/bench.json"
# What makes two speed measurements comparable: the machine, its threads and the libraries that run the model.
ENVIRONMENT = ("cpu", "cpu_flags", "gpu", "threads", "python", "torch", "transformers", "onnxruntime", "optimum")
TIMING = ("reports/bench.json:*", "reports/bench/*", "*latency*", "*_ms", "*tokens_per_s*", "*per_second*", "*_per_s",
          "*throughput*", "*speedup*", "*_seconds", "*mfu*", "*tflops*")


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def signed(value: float | None, suffix: str = "") -> str:
    return "" if value is None else ("+" if value > 0 else "") + fmt(value) + suffix


def is_timing(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in TIMING)


def environment_changes(diff: dict) -> list[str]:
    """'key: base → head' of every ENVIRONMENT entry of bench.json that both runs record and that differs (from
    `Repo.metrics.diff(all=True)`'s "diff", which carries text values too)."""
    bench = diff.get(BENCH_FILE, {})
    changes = []
    for key in ENVIRONMENT:
        change = bench.get(f"environment.{key}") or {}
        old, new = change.get("old"), change.get("new")
        if old is not None and new is not None and old != new:
            changes.append(f"{key}: {old} → {new}")
    return changes


# ---------------------------------------------------------------- reports/noise.json

@dataclass
class Noise:
    """The seed-to-seed bands of one reports/noise.json."""
    revision: str
    seeds: list
    confidence: float
    bands: dict[str, float] = field(default_factory=dict)


def read_noise(revisions: list[Revision]) -> Noise | None:
    """reports/noise.json of the first revision that has one; None when none has."""
    for revision in revisions:
        text = revision.read_text(NOISE_FILE)
        if text is None:
            continue
        where = f"{NOISE_FILE} at {revision.name}"
        try:
            data = json.loads(text)
            bands = {name: float(entry["band"]) for name, entry in data["metrics"].items()
                     if is_number(entry.get("band"))}
            confidence = float(data.get("confidence", 0.95))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise StageError(f"{where}: not a noise estimate ({type(err).__name__}: {err}); make noise writes "
                             "it") from None
        return Noise(revision.name, list(data.get("seeds") or []), confidence, bands)
    return None


# ---------------------------------------------------------------- one metric

@dataclass
class MetricRow:
    name: str                          # file:key
    old: object
    new: object
    sign: int = 0                      # +1 higher is better, -1 lower is better, 0 neither
    paired: Difference | None = None   # on the per-example files of both runs
    band: float | None = None          # seed-to-seed noise band
    comparable: bool = True            # False: a timing measured on different hardware

    @property
    def delta(self) -> float | None:
        return self.new - self.old if is_number(self.old) and is_number(self.new) else None

    @property
    def delta_pct(self) -> float | None:
        """100 * delta / |base|; None where a percentage misleads: base 0, or base and head on either side of 0."""
        delta = self.delta
        if delta is None or self.old == 0 or self.old * self.new < 0:
            return None
        return 100 * delta / abs(self.old)

    @property
    def verdict(self) -> str:
        delta = self.delta
        if delta is None:
            return ""
        if delta == 0:
            return UNCHANGED
        if not self.comparable:
            return NOT_COMPARABLE
        if not self.sign:
            return ""
        if self.paired is None and self.band is None:
            return NO_ESTIMATE
        paired_agrees = self.paired is None or (self.paired.significant and self.paired.delta * delta > 0)
        if not paired_agrees or (self.band is not None and abs(delta) <= self.band):
            return WITHIN_NOISE
        return BETTER if delta * self.sign > 0 else WORSE

    @property
    def mark(self) -> str:
        if self.old is None or self.new is None:
            return "new" if self.old is None else "removed"
        return MARK.get(self.verdict, self.verdict)

    def delta_text(self) -> str:
        """'+0.012 [-0.008, +0.031]' (paired interval), '±0.02' (noise band) after the delta, where known."""
        if self.delta is None:
            return ""
        parts = [signed(self.delta)]
        if self.paired is not None:
            interval = f"[{signed(self.paired.ci_low)}, {signed(self.paired.ci_high)}]"
            partial = self.paired.only_base or self.paired.only_head or self.paired.label_mismatch
            # on examples both runs share; when they do not share all, the paired delta differs from the metric's
            parts.append(f"(on the {self.paired.n} shared: {signed(self.paired.delta)} {interval})" if partial
                         else interval)
            if self.paired.mcnemar_p is not None:
                parts.append(f"p={self.paired.mcnemar_p:.2g}")
        if self.band is not None:
            parts.append(f"±{fmt(self.band)}")
        return " ".join(parts)


def examples_file(name: str) -> str | None:
    """The per-example file a metric is computed from (lifecycle.examples), for the statistics recomputed here."""
    file, key = name.split(":", 1)
    prefix, _, statistic = key.rpartition(".")
    if statistic not in STATISTICS or not prefix:
        return None
    return metric_examples_path(file, key).as_posix()


def paired(name: str, base: Revision, head: Revision, confidence: float) -> Difference | None:
    """The paired difference of metric `name` where both revisions have its per-example file."""
    path = examples_file(name)
    old, new = (side.examples(path) for side in (base, head)) if path else (None, None)
    if old is None or new is None:
        return None
    try:
        return paired_difference(old, new, name.rsplit(".", 1)[1], confidence=confidence)
    except ValueError as err:
        raise StageError(f"{path} ({base.name} vs {head.name}): {err}") from None


def judge(rows: list[MetricRow], base: Revision, head: Revision, noise: Noise | None, hardware_differs: bool) -> None:
    """Give each row its estimates: the paired difference, the noise band, and whether it can be compared."""
    confidence = noise.confidence if noise else 0.95
    for row in rows:
        if row.delta is None or row.delta == 0:
            continue
        row.comparable = not (hardware_differs and is_timing(row.name))
        if row.sign and row.comparable:
            row.paired = paired(row.name, base, head, confidence)
            row.band = noise.bands.get(row.name) if noise else None


# ---------------------------------------------------------------- gates

@dataclass
class GateResult:
    gate: Gate
    row: MetricRow

    @property
    def value(self):
        return self.row.new

    @property
    def significance(self) -> bool:
        return self.gate.fail_if == "significant"

    @property
    def note(self) -> str:
        """Why a gate passed without a judgement, or what it lacked."""
        if not is_number(self.value):
            return "no value"
        if not self.significance:
            return ""
        if not is_number(self.row.old):
            return "no base"
        verdict = self.row.verdict
        if verdict == NOT_COMPARABLE:
            return "not comparable: different hardware"
        if verdict == NO_ESTIMATE:
            return "no noise estimate: cannot judge"
        if not self.row.sign:
            return "no direction (lifecycle/review/compare.py DIRECTIONS): cannot judge"
        return ""

    @property
    def passed(self) -> bool:
        if not is_number(self.value):
            return False
        if self.significance:
            return self.row.verdict != WORSE
        return ((self.gate.min is None or self.value >= self.gate.min)
                and (self.gate.max is None or self.value <= self.gate.max))

    @property
    def rule(self) -> str:
        if self.significance:
            return "not significantly worse"
        parts = ([f"≥ {self.gate.min:g}"] if self.gate.min is not None else []) + \
                ([f"≤ {self.gate.max:g}"] if self.gate.max is not None else [])
        return " and ".join(parts)

    def failure(self) -> str:
        """The line `--fail-on-gate` prints for a failed gate."""
        if self.significance and is_number(self.value):
            return (f"gate failed: {self.gate.metric} is significantly worse: {fmt(self.row.old)} → {fmt(self.value)} "
                    f"(Δ {self.row.delta_text()}), needs {self.rule}")
        return f"gate failed: {self.gate.metric} = {fmt(self.value)}, needs {self.rule}"
