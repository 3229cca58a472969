"""distill: a smaller student classifier learns from the fine-tuned teacher's soft targets plus the labels.

models/finetuned (teacher) + data/prepared/finetune -> models/distilled/ (safetensors, config, tokenizer),
reports/distill.json (parameters of both, the student's test quality against the teacher's, their agreement).
Loss (Hinton et al. 2015): alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy(labels).
"""
from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path

import numpy as np

from stages import params as P
from stages.core import atomic_path, choose_precision, device_type, read_jsonl, seed_everything, write_json
from stages.evaluate import classification_metrics, predict_logits, softmax

log = logging.getLogger("llm-lifecycle.distill")
TEACHER, OUT = Path("models/finetuned"), Path("models/distilled")


def distillation_loss(student_logits, teacher_logits, labels, temperature: float, alpha: float):
    import torch.nn.functional as F
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=-1), F.softmax(teacher_logits / temperature, dim=-1),
                    reduction="batchmean") * temperature ** 2  # T^2 keeps the soft gradients' scale independent of T
    return alpha * soft + (1 - alpha) * F.cross_entropy(student_logits, labels)


def distilling_trainer(temperature: float, alpha: float):
    """A transformers Trainer whose loss mixes the teacher's soft targets with the labels."""
    from transformers import Trainer

    class DistillTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            teacher = inputs.pop("teacher_logits")
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            loss = distillation_loss(outputs.logits.float(), teacher.float(), labels, temperature, alpha)
            return (loss, outputs) if return_outputs else loss
    return DistillTrainer


def build_student(d: P.DistillParams, teacher, tokenizer, classes: list[str]):
    from transformers import AutoModelForSequenceClassification

    from stages.modeling import build_config, context_length
    shape = P.ModelParams(family=teacher.config.model_type if teacher.config.model_type in ("gpt2", "llama") else "gpt2",
                          n_layers=d.student.n_layers, d_model=d.student.d_model, n_heads=d.student.n_heads,
                          d_ff=d.student.d_ff, context_length=context_length(teacher))
    config = build_config(shape, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
    config.num_labels, config.id2label = len(classes), dict(enumerate(classes))
    config.label2id = {c: i for i, c in enumerate(classes)}
    return AutoModelForSequenceClassification.from_config(config)


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

    from stages.finetune import classification_data, labelled, training_arguments
    from stages.modeling import context_length
    from stages.variants import load_tokenizer

    params = P.load()
    d, f = params.distill, params.finetune
    seed_everything(params.seed)
    device = device_type()
    tokenizer = load_tokenizer(TEACHER)
    teacher = AutoModelForSequenceClassification.from_pretrained(TEACHER, use_safetensors=True).eval()
    length = min(f.max_length, context_length(teacher))
    texts, labels = labelled("train", f.classes)
    texts, labels = texts[:d.max_train_examples], labels[:d.max_train_examples]
    teacher_logits = predict_logits(teacher, tokenizer, texts, d.batch_size, length)
    train = classification_data(tokenizer, texts, labels, length).add_column("teacher_logits", teacher_logits.tolist())

    student = build_student(d, teacher, tokenizer, f.classes)
    with tempfile.TemporaryDirectory() as scratch:
        args = dataclasses.replace(
            training_arguments(f, choose_precision(f.precision, device), device, params.seed), output_dir=scratch,
            num_train_epochs=d.epochs, per_device_train_batch_size=d.batch_size, learning_rate=d.learning_rate,
            eval_strategy="no", save_strategy="no", load_best_model_at_end=False, remove_unused_columns=False,
            group_by_length=False, disable_tqdm=False)
        trainer = distilling_trainer(d.temperature, d.alpha)(model=student, args=args, train_dataset=train,
                                                              data_collator=DataCollatorWithPadding(tokenizer))
        result = trainer.train()
    student = trainer.model.eval()

    test = read_jsonl("data/prepared/finetune/test.jsonl", ("text", "label"))
    index = {c: i for i, c in enumerate(f.classes)}
    test_texts, references = [r["text"] for r in test], [index[r["label"]] for r in test]
    quality = {}
    for name, model in (("teacher", teacher), ("student", student)):
        logits = predict_logits(model, tokenizer, test_texts, d.batch_size, length)
        metrics = classification_metrics(softmax(logits), references, f.classes, bins=10)
        quality[name] = {"parameters": parameter_count(model), "accuracy": round(metrics["accuracy"], 5),
                         "macro_f1": round(metrics["macro_f1"], 5), "predicted": logits.argmax(-1)}
    agreement = float(np.mean(quality["student"].pop("predicted") == quality["teacher"].pop("predicted")))
    with atomic_path(OUT, directory=True) as tmp:
        student.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    write_json("reports/distill.json", quality | {
        "parameter_ratio": round(quality["student"]["parameters"] / quality["teacher"]["parameters"], 5),
        "accuracy_change_points": round(100 * (quality["student"]["accuracy"] - quality["teacher"]["accuracy"]), 4),
        "agreement_with_teacher": round(agreement, 5), "train_examples": len(texts),
        "train_seconds": round(result.metrics["train_runtime"], 2)})
    log.info("student %d parameters (%.1f%% of the teacher): accuracy %.4f vs teacher %.4f",
             quality["student"]["parameters"], 100 * quality["student"]["parameters"] / quality["teacher"]["parameters"],
             quality["student"]["accuracy"], quality["teacher"]["accuracy"])


if __name__ == "__main__":
    from stages.core import run
    run(main)
