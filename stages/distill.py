"""distill: a smaller student classifier learns from the fine-tuned teacher's soft targets plus the labels.

models/finetuned (teacher) + data/prepared/finetune -> models/distilled/ (safetensors, config, tokenizer),
reports/distill.json (parameters of both, the student's test quality against the teacher's, their agreement).
"""
from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path

import numpy as np

from lifecycle.core import seed_everything
from lifecycle.distillation import build_student, distilling_trainer
from lifecycle.finetuning import classification_data, training_arguments
from lifecycle.hardware import choose_precision, device_type
from lifecycle.io import atomic_path, write_json
from lifecycle.labels import labelled
from lifecycle.modeling import context_length, parameter_count
from lifecycle.params.base import load
from lifecycle.params.compress import DistillParams
from lifecycle.params.finetune import FinetuneParams
from lifecycle.scoring import classification_metrics, predict_logits, softmax
from lifecycle.tokens import load_tokenizer

log = logging.getLogger("llm-lifecycle.distill")
TEACHER, OUT, DATA = Path("models/finetuned"), Path("models/distilled"), Path("data/prepared/finetune")


def train_student(params, teacher, tokenizer, length: int):
    from transformers import DataCollatorWithPadding

    d, f = params.distill, params.finetune
    texts, labels = labelled("train", f.classes, DATA)
    texts, labels = texts[:d.max_train_examples], labels[:d.max_train_examples]
    teacher_logits = predict_logits(teacher, tokenizer, texts, d.batch_size, length)
    train = classification_data(tokenizer, texts, labels, length).add_column("teacher_logits", teacher_logits.tolist())
    student = build_student(d, teacher, tokenizer, f.classes)
    device = device_type()
    with tempfile.TemporaryDirectory() as scratch:
        args = dataclasses.replace(
            training_arguments(f, choose_precision(f.precision, device), device, params.seed, Path(scratch)),
            num_train_epochs=d.epochs, per_device_train_batch_size=d.batch_size, learning_rate=d.learning_rate,
            eval_strategy="no", save_strategy="no", load_best_model_at_end=False, remove_unused_columns=False,
            group_by_length=False, disable_tqdm=False)
        trainer = distilling_trainer(d.temperature, d.alpha)(model=student, args=args, train_dataset=train,
                                                              data_collator=DataCollatorWithPadding(tokenizer))
        result = trainer.train()
    return trainer.model.eval(), len(texts), result.metrics["train_runtime"]


def test_quality(models: dict, tokenizer, classes: list[str], batch_size: int, length: int) -> dict:
    """Parameters, accuracy and macro-F1 of each model on the test split, and the student's agreement
    with the teacher."""
    texts, references = labelled("test", classes, DATA)
    quality = {}
    for name, model in models.items():
        logits = predict_logits(model, tokenizer, texts, batch_size, length)
        metrics = classification_metrics(softmax(logits), references, classes, bins=10)
        quality[name] = {"parameters": parameter_count(model), "accuracy": round(metrics["accuracy"], 5),
                         "macro_f1": round(metrics["macro_f1"], 5), "predicted": logits.argmax(-1)}
    agreement = float(np.mean(quality["student"].pop("predicted") == quality["teacher"].pop("predicted")))
    return quality | {
        "parameter_ratio": round(quality["student"]["parameters"] / quality["teacher"]["parameters"], 5),
        "accuracy_change_points": round(100 * (quality["student"]["accuracy"] - quality["teacher"]["accuracy"]), 4),
        "agreement_with_teacher": round(agreement, 5)}


def main() -> None:
    from transformers import AutoModelForSequenceClassification

    params = load(distill=DistillParams, finetune=FinetuneParams)
    seed_everything(params.seed)
    tokenizer = load_tokenizer(TEACHER)
    teacher = AutoModelForSequenceClassification.from_pretrained(TEACHER, use_safetensors=True).eval()
    length = min(params.finetune.max_length, context_length(teacher))
    student, examples, seconds = train_student(params, teacher, tokenizer, length)
    quality = test_quality({"teacher": teacher, "student": student}, tokenizer, params.finetune.classes,
                           params.distill.batch_size, length)
    with atomic_path(OUT, directory=True) as tmp:
        student.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    write_json("reports/distill.json", quality | {"train_examples": examples, "train_seconds": round(seconds, 2)})
    log.info("student %d parameters (%.1f%% of the teacher): accuracy %.4f vs teacher %.4f",
             quality["student"]["parameters"], 100 * quality["parameter_ratio"],
             quality["student"]["accuracy"], quality["teacher"]["accuracy"])


if __name__ == "__main__":
    from lifecycle.core import run
    run(main)
