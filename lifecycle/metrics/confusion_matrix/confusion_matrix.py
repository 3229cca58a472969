"""Confusion matrix: rows are the references, columns the predictions (a local copy that loads offline)."""
import datasets
import evaluate
from sklearn.metrics import confusion_matrix


class ConfusionMatrix(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Counts of (reference, prediction) pairs.", citation="",
            inputs_description="predictions, references: class ids; labels: the order of rows and columns",
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}))

    def _compute(self, predictions, references, labels=None):
        return {"confusion_matrix": confusion_matrix(references, predictions, labels=labels).tolist()}
