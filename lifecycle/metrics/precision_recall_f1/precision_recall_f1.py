"""Precision, recall and F1 per class or averaged (macro, micro, weighted, binary): a local module that loads
offline, one sklearn call for the three."""
import datasets
import evaluate
from sklearn.metrics import precision_recall_fscore_support


def _plain(value):
    return float(value) if getattr(value, "size", 1) == 1 else [float(v) for v in value]


class PrecisionRecallF1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Precision, recall and F1 (sklearn.metrics.precision_recall_fscore_support).", citation="",
            inputs_description="predictions, references: class ids; labels, average ('binary', 'macro', 'micro', "
                               "'weighted' or None for per class)",
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}))

    def _compute(self, predictions, references, labels=None, average="binary", pos_label=1):
        precision, recall, f1, _ = precision_recall_fscore_support(references, predictions, labels=labels,
                                                                   average=average, pos_label=pos_label,
                                                                   zero_division=0)
        return {"precision": _plain(precision), "recall": _plain(recall), "f1": _plain(f1)}
