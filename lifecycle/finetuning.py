"""Fine-tuning: the task model (classifier or causal LM, full or LoRA), its data and its Trainer arguments."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lifecycle.core import StageError
from lifecycle.hardware import world
from lifecycle.params.finetune import FinetuneParams
from lifecycle.tokens import blocks_to_dataset, encode, pack

# Every attention and MLP projection (QLoRA, Dettmers 2023) and the token embedding: a small model's weak
# pretrained features need the embedding to adapt (measured here: 58 % -> 70 % validation accuracy at step 200).
LORA_TARGETS = {
    "gpt2": ["wte", "c_attn", "c_proj", "c_fc"],
    "llama": ["embed_tokens", "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


def load_model(source: str, f: FinetuneParams, tokenizer):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    kwargs = dict(use_safetensors=True, trust_remote_code=False)
    try:
        if f.task == "causal_lm":
            return AutoModelForCausalLM.from_pretrained(source, **kwargs)
        return AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=len(f.classes), id2label=dict(enumerate(f.classes)),
            label2id={c: i for i, c in enumerate(f.classes)}, pad_token_id=tokenizer.pad_token_id, **kwargs)
    except (OSError, ValueError) as err:
        raise StageError(f"{source}: cannot load it as a model with safetensors weights "
                         f"({str(err).splitlines()[0]})") from None


def with_lora(model, f: FinetuneParams):
    """Wrap in LoRA adapters (peft); the task head stays fully trainable."""
    from peft import LoraConfig, TaskType, get_peft_model

    family = model.config.model_type
    targets = f.lora.target_modules or LORA_TARGETS.get(family, "all-linear")
    config = LoraConfig(task_type=TaskType.CAUSAL_LM if f.task == "causal_lm" else TaskType.SEQ_CLS,
                        r=f.lora.r, lora_alpha=f.lora.alpha, lora_dropout=f.lora.dropout, target_modules=targets,
                        fan_in_fan_out=family == "gpt2")  # gpt2 stores its projections as Conv1D (in, out)
    try:
        return get_peft_model(model, config)
    except ValueError as err:
        raise StageError(f"params.yaml: finetune.lora.target_modules = {targets!r}: "
                         f"{str(err).splitlines()[0]}") from None


def trainable_parameters(model) -> dict:
    from lifecycle.modeling import parameter_count
    trainable, total = parameter_count(model, trainable_only=True), parameter_count(model)
    return {"trainable": trainable, "total": total, "trainable_share": round(trainable / total, 5)}


def classification_data(tokenizer, texts: list[str], labels: list[int], max_length: int):
    from datasets import Dataset
    encoded = tokenizer(texts, truncation=True, max_length=max_length)
    return Dataset.from_dict({"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
                              "labels": labels})


def causal_lm_data(tokenizer, texts: list[str], block_size: int):
    blocks = pack(encode(tokenizer.backend_tokenizer, texts, tokenizer.eos_token_id), block_size)
    if len(blocks) == 0:
        raise StageError(f"data/prepared/finetune: too little text for one {block_size}-token block; "
                         "lower finetune.max_length")
    return blocks_to_dataset(blocks)


def class_metrics():
    """compute_metrics for the Trainer: accuracy and macro-F1 through the project's local evaluate modules."""
    from lifecycle.metrics import load_metric
    accuracy, f1 = load_metric("accuracy"), load_metric("precision_recall_f1")

    def compute(prediction):
        predicted = np.asarray(prediction.predictions).argmax(-1)
        return {"accuracy": accuracy.compute(predictions=predicted, references=prediction.label_ids)["accuracy"],
                "macro_f1": f1.compute(predictions=predicted, references=prediction.label_ids, average="macro")["f1"]}
    return compute


def training_arguments(f: FinetuneParams, precision: str, device: str, seed: int, output_dir: Path, **overrides):
    """`overrides`: keywords that replace these (lifecycle.sharding.fsdp_arguments)."""
    from transformers import TrainingArguments

    metric = "eval_loss" if f.early_stopping.metric == "loss" else f"eval_{f.early_stopping.metric}"
    return TrainingArguments(**dict(
        output_dir=str(output_dir), num_train_epochs=f.epochs, per_device_train_batch_size=f.batch_size,
        per_device_eval_batch_size=f.batch_size, weight_decay=f.weight_decay,
        learning_rate=f.lora.learning_rate if f.method == "lora" else f.learning_rate,
        warmup_ratio=f.warmup_ratio, lr_scheduler_type="linear", bf16=precision == "bf16", fp16=precision == "fp16",
        use_cpu=device == "cpu", eval_strategy="steps", eval_steps=f.eval_steps, save_strategy="steps",
        save_steps=f.eval_steps, save_total_limit=2, load_best_model_at_end=True, metric_for_best_model=metric,
        greater_is_better=f.early_stopping.metric != "loss", logging_steps=max(1, f.eval_steps // 5), seed=seed,
        data_seed=seed, report_to="none",
        ddp_backend=None if world()[2] == 1 else "nccl" if device == "cuda" else "gloo",
        group_by_length=f.task == "classification", disable_tqdm=False) | overrides)


def task_data(f: FinetuneParams, tokenizer, train: tuple[list, list], validation: tuple[list, list], length: int):
    """(train dataset, validation dataset, collator, compute_metrics) for the task."""
    from transformers import DataCollatorWithPadding

    from lifecycle.training import causal_lm_collate
    if f.task == "classification":
        return (classification_data(tokenizer, *train, length), classification_data(tokenizer, *validation, length),
                DataCollatorWithPadding(tokenizer), class_metrics())
    return causal_lm_data(tokenizer, train[0], length), causal_lm_data(tokenizer, validation[0], length), \
        causal_lm_collate, None


def run_summary(f: FinetuneParams, trainer, run: dict, best: dict, counts: dict) -> dict:
    """`run`: the whole run's train loss and wall seconds (training.WholeRun: before and after a resume)."""
    from lifecycle.training import checkpoint_step

    best_checkpoint = trainer.state.best_model_checkpoint
    return {"task": f.task, "method": f.method, "parameters": counts, "steps": trainer.state.global_step,
            "best_step": checkpoint_step(Path(best_checkpoint)) if best_checkpoint else None,
            "validation": {k.removeprefix("eval_"): round(v, 5) for k, v in best.items()
                           if k in ("eval_loss", "eval_accuracy", "eval_macro_f1")},
            "train_loss": round(run["train_loss"], 5), "train_seconds": round(run["seconds"], 2)}

