"""Precision per class or averaged (macro, micro, weighted, binary): a local copy that loads offline."""
import datasets
import evaluate
from sklearn.metrics import precision_score


class Precision(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Precision (sklearn.metrics.precision_score).", citation="",
            inputs_description="predictions, references: class ids; labels, average ('binary', 'macro', 'micro', 'weighted' or None for per class)",
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}))

    def _compute(self, predictions, references, labels=None, average="binary", pos_label=1):
        value = precision_score(references, predictions, labels=labels, average=average, pos_label=pos_label, zero_division=0)
        return {"precision": float(value) if getattr(value, "size", 1) == 1 else [float(v) for v in value]}
