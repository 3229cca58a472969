"""Distillation (Hinton et al. 2015): a smaller student of the teacher's family, trained with
alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy(labels)."""
from __future__ import annotations

from lifecycle.params.compress import DistillParams
from lifecycle.params.model import ModelParams


def distillation_loss(student_logits, teacher_logits, labels, temperature: float, alpha: float):
    import torch.nn.functional as F
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=-1),
                    F.softmax(teacher_logits / temperature, dim=-1),
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


def build_student(d: DistillParams, teacher, tokenizer, classes: list[str]):
    from transformers import AutoModelForSequenceClassification

    from lifecycle.modeling import build_config, context_length
    shape = ModelParams(family=teacher.config.model_type if teacher.config.model_type in ("gpt2", "llama") else "gpt2",
                          n_layers=d.student.n_layers, d_model=d.student.d_model, n_heads=d.student.n_heads,
                          d_ff=d.student.d_ff, context_length=context_length(teacher))
    config = build_config(shape, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
    config.num_labels, config.id2label = len(classes), dict(enumerate(classes))
    config.label2id = {c: i for i, c in enumerate(classes)}
    return AutoModelForSequenceClassification.from_config(config)
