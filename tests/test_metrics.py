"""The local evaluate modules against values computed by hand on tiny inputs."""
import math

import pytest

from lifecycle.metrics import load_metric

PREDICTIONS, REFERENCES = [0, 1, 1, 0], [0, 1, 0, 0]
# class 0: tp 2, fp 0, fn 1 -> precision 1, recall 2/3, F1 0.8; class 1: tp 1, fp 1, fn 0 -> 0.5, 1, 2/3


def test_accuracy():
    assert load_metric("accuracy").compute(predictions=PREDICTIONS, references=REFERENCES)["accuracy"] == 0.75


def test_macro_f1():
    f1 = load_metric("precision_recall_f1").compute(predictions=PREDICTIONS, references=REFERENCES,
                                                    average="macro")["f1"]
    assert f1 == pytest.approx((0.8 + 2 / 3) / 2)


def test_per_class_precision_and_recall():
    per_class = load_metric("precision_recall_f1").compute(predictions=PREDICTIONS, references=REFERENCES, average=None)
    assert per_class["precision"] == pytest.approx([1.0, 0.5])
    assert per_class["recall"] == pytest.approx([2 / 3, 1.0])
    assert per_class["f1"] == pytest.approx([0.8, 2 / 3])


def test_confusion_matrix_rows_are_references():
    matrix = load_metric("confusion_matrix").compute(predictions=PREDICTIONS, references=REFERENCES, labels=[0, 1])
    assert matrix["confusion_matrix"] == [[2, 1], [0, 1]]


def test_roc_auc_counts_correctly_ordered_pairs():
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: 3 of the 4 pairs are ordered correctly
    auc = load_metric("roc_auc").compute(prediction_scores=[0.1, 0.4, 0.35, 0.8], references=[0, 0, 1, 1])
    assert auc["roc_auc"] == pytest.approx(0.75)


def test_roc_auc_with_one_class_is_undefined():
    assert math.isnan(load_metric("roc_auc").compute(prediction_scores=[0.2, 0.9], references=[1, 1])["roc_auc"])


PROBABILITIES = [[0.85, 0.15], [0.75, 0.25], [0.35, 0.65], [0.45, 0.55]]
CALIBRATION_REFERENCES = [0, 1, 1, 1]  # confidences 0.85 right, 0.75 wrong, 0.65 right, 0.55 right


def test_expected_calibration_error_one_example_per_bin():
    ece = load_metric("expected_calibration_error").compute(probabilities=PROBABILITIES,
                                                            references=CALIBRATION_REFERENCES, n_bins=10)
    assert ece["expected_calibration_error"] == pytest.approx((0.15 + 0.75 + 0.35 + 0.45) / 4)
    assert [b["count"] for b in ece["reliability_diagram"]] == [1, 1, 1, 1]


def test_expected_calibration_error_is_zero_when_a_bin_is_calibrated_on_average():
    ece = load_metric("expected_calibration_error").compute(probabilities=PROBABILITIES,
                                                            references=CALIBRATION_REFERENCES, n_bins=2)
    # one bin (0.5, 1]: accuracy 3/4, mean confidence (0.85 + 0.75 + 0.65 + 0.55) / 4 = 0.7
    assert ece["expected_calibration_error"] == pytest.approx(0.05)
    assert ece["reliability_diagram"] == [pytest.approx({"bin_upper": 1.0, "confidence": 0.7, "accuracy": 0.75,
                                                         "count": 4})]


def test_unknown_metric_names_the_ones_there_are():
    with pytest.raises(ValueError, match="no local metric 'bleu': have accuracy"):
        load_metric("bleu")
