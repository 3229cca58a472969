"""Accuracy: the share of predictions equal to the reference labels (a local copy that loads offline)."""
import datasets
import evaluate
from sklearn.metrics import accuracy_score


class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Share of correct predictions.", citation="", inputs_description="predictions, references: class ids",
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}))

    def _compute(self, predictions, references):
        return {"accuracy": float(accuracy_score(references, predictions))}
