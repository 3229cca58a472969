"""Paired significance of a metric's change: bootstrap intervals and McNemar on constructed examples with known
answers."""
import math

import numpy as np
import pytest

from lifecycle.review import significance as S


def classifier(labels, predicted, confidence=0.9, start=0) -> list[dict]:
    """Two-class records whose argmax is `predicted`, with that class at probability `confidence`."""
    out = []
    for i, (label, guess) in enumerate(zip(labels, predicted), start):
        probabilities = [1 - confidence, confidence] if guess == 1 else [confidence, 1 - confidence]
        out.append({"id": f"doc-{i}", "label": int(label), "probabilities": probabilities})
    return out


def lm(nll, tokens, sizes) -> list[dict]:
    return [{"id": i, "nll": n, "tokens": t, "bytes": b} for i, (n, t, b) in enumerate(zip(nll, tokens, sizes))]


def test_identical_predictions_give_delta_zero_interval_zero_and_mcnemar_one():
    records = classifier([0, 1] * 50, [0, 1, 1, 0] * 25)
    shuffled = list(reversed(records))  # pairing is by id, not by order
    for name in ("accuracy", "macro_f1", "expected_calibration_error"):
        result = S.paired_difference(records, shuffled, name)
        assert (result.delta, result.ci_low, result.ci_high) == (0, 0, 0) and not result.significant, name
    result = S.paired_difference(records, shuffled, "accuracy")
    assert (result.mcnemar_p, result.b, result.c, result.n) == (1.0, 0, 0, 100)


def test_twenty_pairs_only_head_gets_right_is_significant():
    labels = [1] * 100
    base = classifier(labels, [1] * 80 + [0] * 20)  # 80 right
    head = classifier(labels, [1] * 100)  # the 20 base got wrong are right now: b = 0, c = 20
    result = S.paired_difference(base, head, "accuracy")
    assert (result.b, result.c) == (0, 20)
    assert result.mcnemar_p == pytest.approx(2 * 0.5 ** 20)
    assert result.delta == pytest.approx(0.2) and result.ci_low > 0 and result.significant


def test_equal_discordant_pairs_give_mcnemar_one():
    labels = [1] * 60
    base = classifier(labels, [0] * 10 + [1] * 50)  # wrong on the first 10
    head = classifier(labels, [1] * 10 + [0] * 10 + [1] * 40)  # right there, wrong on the next 10
    result = S.paired_difference(base, head, "accuracy")
    assert (result.b, result.c, result.mcnemar_p, result.delta) == (10, 10, 1.0, 0.0)
    assert result.ci_low < 0 < result.ci_high and not result.significant


def test_mcnemar_alone():
    assert S.mcnemar([True, True, False], [True, False, True]) == (1.0, 1, 1)
    p, b, c = S.mcnemar([False] * 5, [True] * 5)
    assert (b, c) == (0, 5) and p == pytest.approx(2 * 0.5 ** 5)


def test_perplexity_and_bits_per_byte_are_ratios_of_sums():
    nll, tokens, sizes = [10.0, 30.0, 5.0], [5, 10, 5], [20, 40, 10]
    side = S.pair(lm(nll, tokens, sizes), lm(nll, tokens, sizes), S.LM).base
    assert S.statistic("perplexity", side) == pytest.approx(math.exp(45 / 20))  # not the mean of per-doc exps
    assert S.statistic("bits_per_byte", side) == pytest.approx(45 / math.log(2) / 70)


def test_lm_difference_has_the_sign_of_the_change():
    rng = np.random.default_rng(0)
    tokens = rng.integers(50, 200, 300)
    nll = tokens * rng.normal(4.0, 0.3, 300)
    base, head = lm(nll, tokens, tokens * 4), lm(nll * 0.9, tokens, tokens * 4)  # every document 10% fewer nats
    result = S.paired_difference(base, head, "perplexity")
    expected = math.exp(0.9 * nll.sum() / tokens.sum()) - math.exp(nll.sum() / tokens.sum())
    assert result.delta == pytest.approx(expected) and result.ci_high < 0 and result.significant
    assert result.mcnemar_p is None


def test_point_estimates_match_the_evaluation_metrics():
    from sklearn.metrics import f1_score

    from lifecycle.metrics import load_metric

    rng = np.random.default_rng(3)
    labels, n = rng.integers(0, 3, 200), 200
    probabilities = rng.dirichlet([1, 1, 1], n)
    records = [{"id": i, "label": int(label), "probabilities": p.tolist()}
               for i, (label, p) in enumerate(zip(labels, probabilities))]
    side = S.pair(records, records, S.CLASSIFIER).base
    ece = load_metric("expected_calibration_error").compute(probabilities=probabilities.tolist(),
                                                            references=labels.tolist(), n_bins=10)
    assert S.statistic("expected_calibration_error", side) == pytest.approx(ece["expected_calibration_error"])
    predicted = probabilities.argmax(axis=1)
    assert S.statistic("macro_f1", side) == pytest.approx(f1_score(labels, predicted, average="macro"))
    assert S.statistic("accuracy", side) == pytest.approx((predicted == labels).mean())


def test_the_interval_covers_the_true_difference_in_a_seeded_simulation():
    """Two classifiers with true accuracies 0.70 and 0.75, 100 simulated test sets of 300 examples: a 95% interval
    holds the true difference (0.05) in about 95 of them (88: three standard deviations below)."""
    rng = np.random.default_rng(7)
    covered = 0
    for trial in range(100):
        labels = rng.integers(0, 2, 300)
        base_right, head_right = rng.random(300) < 0.70, rng.random(300) < 0.75
        base = classifier(labels, np.where(base_right, labels, 1 - labels))
        head = classifier(labels, np.where(head_right, labels, 1 - labels))
        result = S.paired_difference(base, head, "accuracy", n_boot=400, seed=trial)
        covered += result.ci_low <= 0.05 <= result.ci_high
    assert covered >= 88, covered


def test_the_same_seed_gives_the_same_interval():
    labels = [0, 1] * 40
    base, head = classifier(labels, [0] * 80), classifier(labels, labels[:60] + [0] * 20)
    first, second = (S.paired_difference(base, head, "macro_f1", seed=5) for _ in range(2))
    assert (first.ci_low, first.ci_high) == (second.ci_low, second.ci_high)


def test_ids_in_one_side_only_and_disagreeing_labels_are_left_out_and_counted():
    base = classifier([1, 1, 0, 0], [1, 1, 0, 0])  # doc-0 .. doc-3
    head = classifier([1, 0, 0], [1, 0, 0], start=1) + classifier([1], [1], start=9)  # doc-1 .. doc-3, doc-9
    head[0]["label"] = 0  # doc-1: another label than in base
    result = S.paired_difference(base, head, "accuracy")
    assert (result.n, result.only_base, result.only_head, result.label_mismatch) == (2, 1, 1, 1)
    assert S.paired_difference(base, classifier([1], [1], start=20), "accuracy") is None  # nothing pairs


def test_bad_records_name_the_problem():
    with pytest.raises(ValueError, match="head: row 2: id 'doc-0' appears twice"):
        S.pair(classifier([1], [1]), classifier([1, 1], [1, 1], start=0)[:1] * 2, S.CLASSIFIER)
    with pytest.raises(ValueError, match="base: id 0: a lm record needs 'tokens'"):
        S.pair([{"id": 0, "nll": 1.0, "bytes": 3}], [{"id": 0, "nll": 1.0, "tokens": 1, "bytes": 3}], S.LM)
