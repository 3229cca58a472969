"""stats: the two-way cluster bootstrap of a templates x names matrix, on matrices whose answers are known."""
import time

import numpy as np
import pytest

from lifecycle.stats import (
    bootstrap_mean,
    cluster_bootstrap,
    group_means,
    majority_disagreement,
    row_bootstrap_group_means,
    two_way_weights,
)

T, N = 24, 800
STRATA = np.repeat(np.arange(8), N // 8)  # 8 gender x race cells of 100 names
OVERALL = np.ones((N, 1))


def width(interval) -> float:
    return float(interval[2][0] - interval[1][0])


def row_width(values: np.ndarray) -> float:
    """The sentence (row) bootstrap: every cell resampled as if independent."""
    result = bootstrap_mean(values.ravel(), 400, 0.95, seed=0)
    return result["ci_high"] - result["ci_low"]


def test_each_replicate_draws_every_template_count_and_keeps_every_stratum_its_size():
    rows, columns = two_way_weights(T, STRATA, n_boot=50, seed=3)
    assert rows.shape == (50, T) and columns.shape == (50, N)
    assert (rows.sum(axis=1) == T).all()
    for stratum in range(8):
        assert (columns[:, STRATA == stratum].sum(axis=1) == 100).all()
    assert (rows.std(axis=0) > 0).all()  # with replacement: counts vary
    again = two_way_weights(T, STRATA, n_boot=50, seed=3)
    assert (again[0] == rows).all() and (again[1] == columns).all()  # seeded


def test_a_constant_matrix_has_a_zero_width_interval():
    for statistic in (group_means(np.full((T, N), 0.7), OVERALL),
                      majority_disagreement(np.ones((T, N), dtype=int), OVERALL)):
        value, low, high = cluster_bootstrap(statistic, T, STRATA, n_boot=100, confidence=0.95, seed=0)
        assert low == pytest.approx(value) and high == pytest.approx(value)


def test_the_value_is_the_plain_estimate():
    rng = np.random.default_rng(0)
    values = (rng.random((T, N)) < 0.6).astype(float)
    membership = np.stack([STRATA < 4, STRATA >= 4], axis=1)
    value, low, high = cluster_bootstrap(group_means(values, membership), T, STRATA, 200, 0.95, seed=0)
    assert value == pytest.approx([values[:, STRATA < 4].mean(), values[:, STRATA >= 4].mean()])
    assert (low <= value).all() and (value <= high).all()


def test_majority_disagreement_by_hand():
    labels = np.array([[1, 1, 1, 0],    # majority 1: the fourth name disagrees
                       [0, 0, 1, 0],    # majority 0: the third disagrees
                       [2, 2, 2, 2]])   # no one disagrees
    membership = np.array([[1, 1, 0], [1, 1, 0], [1, 0, 1], [1, 0, 1]])  # everyone; first two; last two
    value, _, _ = cluster_bootstrap(majority_disagreement(labels, membership), 3, [0, 0, 1, 1], 20, 0.95, seed=0)
    assert value == pytest.approx([2 / 12, 0 / 6, 2 / 6])


def test_a_tie_goes_to_the_smaller_label():
    labels = np.array([[0, 1, 1, 0]])
    membership = np.array([[1, 0], [0, 1], [0, 1], [1, 0]])
    value, _, _ = cluster_bootstrap(majority_disagreement(labels, membership), 1, [0, 1, 1, 0], 10, 0.95, seed=0)
    assert value == pytest.approx([0.0, 1.0])  # majority 0: the names labelled 1 disagree


def test_template_clustering_widens_the_interval_far_beyond_the_row_bootstrap():
    rng = np.random.default_rng(1)
    per_template = rng.uniform(0.1, 0.9, size=(T, 1))  # some templates read as positive for every name
    values = (rng.random((T, N)) < per_template).astype(float)
    cluster = width(cluster_bootstrap(group_means(values, OVERALL), T, STRATA, 400, 0.95, seed=0))
    assert cluster > 5 * row_width(values)


def test_name_clustering_widens_it_too():
    rng = np.random.default_rng(2)
    per_name = rng.uniform(0.2, 0.8, size=(1, N))  # some names read as positive in every template
    values = (rng.random((T, N)) < per_name).astype(float)
    cluster = width(cluster_bootstrap(group_means(values, OVERALL), T, STRATA, 400, 0.95, seed=0))
    assert cluster > 1.5 * row_width(values)


def test_independent_cells_give_about_the_row_interval_at_most_sqrt3_wider():
    """With no template or name effect, the two-way bootstrap counts each cell's noise three times (row, column and
    cell): its interval is about sqrt(3) times the row bootstrap's (McCullagh 2000), conservative, never narrower."""
    rng = np.random.default_rng(3)
    values = (rng.random((T, N)) < 0.6).astype(float)
    ratio = width(cluster_bootstrap(group_means(values, OVERALL), T, STRATA, 1000, 0.95, seed=0)) / row_width(values)
    assert 1.0 < ratio < 2.1 and ratio == pytest.approx(np.sqrt(3), abs=0.35)


def test_a_thousand_replicates_of_the_full_audit_take_well_under_a_second_or_two():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, size=(T, N))
    membership = np.concatenate([OVERALL, np.eye(8)[STRATA]], axis=1)
    start = time.perf_counter()
    for statistic in (group_means(labels, membership), majority_disagreement(labels, membership)):
        cluster_bootstrap(statistic, T, STRATA, 1000, 0.95, seed=0)
    assert time.perf_counter() - start < 2.0


def test_the_row_bootstrap_resamples_rows_as_if_independent_by_group():
    values, codes = np.array([1.0, 1.0, 0.0, 0.0, 0.0, 1.0]), np.array([0, 0, 1, 1, 1, 1])
    rates = row_bootstrap_group_means(values, codes, 2, n_boot=120, seed=0, chunk=50)  # chunks of 50, 50, 20
    assert rates.shape == (120, 2)
    assert np.nanmin(rates[:, 0]) == np.nanmax(rates[:, 0]) == 1.0  # group 0: always 1
    assert np.nanmean(rates[:, 1]) == pytest.approx(0.25, abs=0.05)
    assert np.isnan(rates).any()  # six draws from six rows: some replicates miss group 0 (NaN, not 0)
    assert np.array_equal(rates, row_bootstrap_group_means(values, codes, 2, n_boot=120, seed=0), equal_nan=True)
