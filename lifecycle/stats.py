"""Statistics behind every interval in the reports: percentile bootstrap of a mean, Wilson interval of a rate, and
the two-way cluster bootstrap of a templates x names matrix.

Why two-way: the audit's sentences are not independent. They are every template filled with every name, so a
template that reads as positive lifts all its names at once, and a name that reads as positive lifts all its
templates. Resampling sentences as if independent (a row bootstrap) ignores both and gives intervals that are too
narrow; resampling templates and names (the "pigeonhole" bootstrap: McCullagh 2000, Owen 2007) keeps both sources
of variation. It is conservative: on cells with no template or name effect at all its interval of a mean is about
sqrt(3) times the row bootstrap's (each cell's own noise is counted three times), never narrower.
"""
from __future__ import annotations

from collections.abc import Callable

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


# ---------------------------------------------------------------- two-way cluster bootstrap

# statistic(row_weights (B, rows), column_weights (B, columns)) -> (B, K): K figures of each of B weighted copies
# of the matrix, where a weight is how often that row or column was drawn (all ones: the data as it is).
Statistic = Callable[[np.ndarray, np.ndarray], np.ndarray]


def two_way_weights(n_rows: int, strata, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """How often each row and each column is drawn in each of `n_boot` replicates: rows with replacement from all
    rows; columns with replacement within their stratum (`strata`: one label per column), so every stratum keeps
    its size. Seeded (numpy default_rng)."""
    rng = np.random.default_rng(seed)
    strata = np.asarray(strata)
    rows = rng.multinomial(n_rows, np.full(n_rows, 1 / n_rows), size=n_boot).astype(float)
    columns = np.zeros((n_boot, len(strata)))
    for stratum in np.unique(strata):
        members = np.flatnonzero(strata == stratum)
        columns[:, members] = rng.multinomial(len(members), np.full(len(members), 1 / len(members)), size=n_boot)
    return rows, columns


def cluster_bootstrap(statistic: Statistic, n_rows: int, strata, n_boot: int, confidence: float,
                      seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The statistic's K figures on the data (value) and the percentile interval of each over `n_boot` two-way
    replicates (rows, and columns within `strata`, drawn with replacement): three arrays of K."""
    value = statistic(np.ones((1, n_rows)), np.ones((1, len(strata))))[0]
    replicates = statistic(*two_way_weights(n_rows, strata, n_boot, seed))
    low, high = np.quantile(replicates, interval_quantiles(confidence), axis=0)
    return value, low, high


def group_means(values, membership) -> Statistic:
    """Weighted mean of `values` (rows x columns) over all rows and the columns of each group: membership is a
    0/1 matrix (columns x groups). Each group must be a union of the bootstrap's strata (its weight never 0)."""
    values, membership = np.asarray(values, dtype=float), np.asarray(membership, dtype=float)

    def statistic(rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        totals = ((rows @ values) * columns) @ membership
        return totals / (rows.sum(axis=1, keepdims=True) * (columns @ membership))
    return statistic


def majority_disagreement(labels, membership) -> Statistic:
    """Share of (row, column) cells whose label differs from the row's majority label, over all rows and the
    columns of each group (membership: columns x groups, 0/1). The majority is taken over all columns, weighted,
    in each replicate (a tie goes to the smaller label)."""
    labels, membership = np.asarray(labels), np.asarray(membership, dtype=float)
    classes = np.unique(labels)
    one_hot = (labels[..., None] == classes).astype(float)  # rows x columns x classes
    n_rows, n_columns, n_classes = one_hot.shape
    n_groups = membership.shape[1]
    # per column: its label in each row, split by group -> columns x (rows * groups * classes)
    by_group = np.einsum("tnc,ng->ntgc", one_hot, membership).reshape(n_columns, -1)
    overall = one_hot.transpose(1, 0, 2).reshape(n_columns, -1)

    def statistic(rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        majority = (columns @ overall).reshape(-1, n_rows, n_classes).argmax(axis=2)  # B x rows
        counts = (columns @ by_group).reshape(-1, n_rows, n_groups, n_classes)
        agreeing = np.take_along_axis(counts, majority[:, :, None, None], axis=3)[..., 0]  # B x rows x groups
        size = columns @ membership  # B x groups
        disagreeing = np.einsum("bt,btg->bg", rows, size[:, None, :] - agreeing)
        return disagreeing / (rows.sum(axis=1, keepdims=True) * size)
    return statistic


def row_bootstrap_group_means(values, codes, n_groups: int, n_boot: int, seed: int, chunk: int = 50) -> np.ndarray:
    """(n_boot, n_groups) means of `values` by group (`codes`: 0..n_groups-1) when the rows are resampled with
    replacement as if independent (NaN where a replicate draws no row of a group): the row bootstrap the cluster
    bootstrap is compared with. Seeded (numpy default_rng)."""
    rng = np.random.default_rng(seed)
    values, codes = np.asarray(values, dtype=float), np.asarray(codes)
    out = []
    for start in range(0, n_boot, chunk):
        draws = rng.integers(0, len(values), size=(min(chunk, n_boot - start), len(values)))
        bins = (np.arange(len(draws))[:, None] * n_groups + codes[draws]).ravel()
        size = len(draws) * n_groups
        sums = np.bincount(bins, weights=values[draws].ravel(), minlength=size).reshape(-1, n_groups)
        counts = np.bincount(bins, minlength=size).reshape(-1, n_groups)
        out.append(np.divide(sums, counts, out=np.full(sums.shape, np.nan), where=counts > 0))
    return np.concatenate(out)
