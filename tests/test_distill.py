"""distill on the tiny models: the student is smaller, its quality is reported against the teacher's; the
loss mixes soft targets and labels as documented."""
import json

import pytest

from tests.conftest import run_stage, the_error, tiny_params, write_params


@pytest.fixture(scope="module")
def distilled(tiny_compressed):
    """The distill stage's output where tiny_compressed ran it (before compress exported the student)."""
    return tiny_compressed, json.loads((tiny_compressed / "reports/distill.json").read_text())


def test_student_is_smaller_and_its_quality_is_reported(distilled):
    from transformers import AutoModelForSequenceClassification

    project, report = distilled
    student = AutoModelForSequenceClassification.from_pretrained(project / "models/distilled", use_safetensors=True)
    assert sum(p.numel() for p in student.parameters()) == report["student"]["parameters"]
    assert report["student"]["parameters"] < report["teacher"]["parameters"]
    assert report["parameter_ratio"] == pytest.approx(report["student"]["parameters"] / report["teacher"]["parameters"],
                                                      abs=1e-5)
    for name in ("teacher", "student"):
        assert 0 <= report[name]["accuracy"] <= 1 and 0 <= report[name]["macro_f1"] <= 1
    assert report["accuracy_change_points"] == pytest.approx(
        100 * (report["student"]["accuracy"] - report["teacher"]["accuracy"]), abs=1e-3)
    assert report["train_examples"] == tiny_params()["distill"]["max_train_examples"]


def test_loss_is_soft_targets_plus_labels():
    import torch
    import torch.nn.functional as F

    from lifecycle.distillation import distillation_loss
    student, teacher, labels = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 2.0]]), torch.tensor([1])
    assert distillation_loss(student, teacher, labels, 1.0, 0.0) == pytest.approx(
        float(F.cross_entropy(student, labels)))
    assert distillation_loss(teacher, teacher, labels, 3.0, 1.0) == pytest.approx(0.0, abs=1e-6)
    soft = distillation_loss(student, teacher, labels, 2.0, 1.0)
    assert soft == pytest.approx(4 * float(F.kl_div(F.log_softmax(student / 2, -1), F.softmax(teacher / 2, -1),
                                                    reduction="batchmean")))


def test_bad_student_shape_stops_before_work(tmp_path):
    params = tiny_params()
    params["distill"]["student"].update(d_model=20, n_heads=3)
    write_params(tmp_path, params)
    assert the_error(run_stage("distill", tmp_path)) == (
        "error: params.yaml: distill.student: n_heads = 3 must divide d_model = 20")
