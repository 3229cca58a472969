"""ROC-AUC from predicted scores: binary (score of the positive class) or one-vs-rest macro for several classes."""
import datasets
import evaluate
from sklearn.metrics import roc_auc_score


class RocAuc(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Area under the ROC curve.", citation="",
            inputs_description="references: class ids; prediction_scores: one score per example (binary) or one probability per class",
            features=[datasets.Features({"prediction_scores": datasets.Value("float"), "references": datasets.Value("int32")}),
                      datasets.Features({"prediction_scores": datasets.Sequence(datasets.Value("float")),
                                         "references": datasets.Value("int32")})])

    def _compute(self, prediction_scores, references, multi_class="ovr", average="macro"):
        if len(set(references)) < 2:
            return {"roc_auc": float("nan")}  # undefined with one class present
        if prediction_scores and isinstance(prediction_scores[0], (list, tuple)):
            return {"roc_auc": float(roc_auc_score(references, prediction_scores, multi_class=multi_class, average=average))}
        return {"roc_auc": float(roc_auc_score(references, prediction_scores))}
