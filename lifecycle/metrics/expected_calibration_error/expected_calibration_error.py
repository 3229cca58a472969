"""Expected calibration error (Guo et al. 2017) with the reliability-diagram data behind it.

Predictions are binned by confidence (the top class probability) into equal-width bins; ECE is the mean over
examples of |accuracy - confidence| of their bin: sum_b (n_b / n) * |acc_b - conf_b|.
"""
import datasets
import evaluate
import numpy as np


class ExpectedCalibrationError(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Expected calibration error over equal-width confidence bins.", citation="Guo et al., 2017",
            inputs_description="probabilities: one probability per class for each example; references: class ids; n_bins",
            features=datasets.Features({"probabilities": datasets.Sequence(datasets.Value("float64")),
                                        "references": datasets.Value("int32")}))

    def _compute(self, probabilities, references, n_bins=10):
        probabilities = np.asarray(probabilities, dtype=np.float64)
        references = np.asarray(references)
        confidence = probabilities.max(axis=1)
        correct = probabilities.argmax(axis=1) == references
        # bin i holds confidences in (i/n, (i+1)/n]; a confidence of exactly 0 joins the first bin
        bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
        ece, diagram = 0.0, []
        for b in range(n_bins):
            members = bins == b
            count = int(members.sum())
            if count:
                accuracy, mean_confidence = float(correct[members].mean()), float(confidence[members].mean())
                ece += count / len(references) * abs(accuracy - mean_confidence)
                diagram.append({"bin_upper": (b + 1) / n_bins, "confidence": mean_confidence,
                                "accuracy": accuracy, "count": count})
        return {"expected_calibration_error": float(ece), "reliability_diagram": diagram}
