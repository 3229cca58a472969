"""Statistics behind every interval in the reports: percentile bootstrap of a mean, Wilson interval of a rate."""
from __future__ import annotations

import numpy as np


def interval_quantiles(confidence: float) -> list[float]:
    """The two quantiles of a central interval, e.g. [0.025, 0.975] for 0.95."""
    tail = (1 - confidence) / 2
    return [tail, 1 - tail]


def bootstrap_mean(values, n_boot: int, confidence: float, seed: int) -> dict:
    """Mean of `values` and the percentile interval of its bootstrap distribution (scipy, seeded). A single value
    has no spread to resample: its interval is the value itself."""
    from scipy.stats import bootstrap

    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return {"value": mean, "ci_low": mean, "ci_high": mean}
    result = bootstrap((values,), np.mean, n_resamples=n_boot, confidence_level=confidence, method="percentile",
                       rng=np.random.default_rng(seed), vectorized=True)
    low, high = result.confidence_interval
    return {"value": mean, "ci_low": float(low), "ci_high": float(high)}


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (scipy)."""
    from scipy.stats import binomtest

    interval = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)
