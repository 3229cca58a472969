"""finetune: specialise the pretrained model: sequence classification (full or LoRA) or causal-LM domain adaptation.

models/pretrained (or finetune.base) + data/prepared/finetune -> models/finetuned/ (a plain transformers model:
LoRA adapters are merged), resumable checkpoints in models/checkpoints/finetune/, dvclive curves in
reports/live/finetune/, reports/finetune.json (trainable parameters, best validation metric).
"""
from __future__ import annotations

import logging
from pathlib import Path

from lifecycle.core import seed_everything
from lifecycle.finetuning import load_model, run_summary, task_data, trainable_parameters, training_arguments, with_lora
from lifecycle.hardware import choose_precision, device_type, init_distributed, world
from lifecycle.io import atomic_path, write_json
from lifecycle.labels import check_every_class_present, labelled
from lifecycle.modeling import context_length
from lifecycle.params.audit import AuditParams
from lifecycle.params.base import load
from lifecycle.params.finetune import FinetuneParams
from lifecycle.params.pretrain import PretrainParams
from lifecycle.sharding import fsdp_arguments, refuse_unshardable, whole_model
from lifecycle.tokens import load_tokenizer
from lifecycle.training import LiveCurves, WholeRun, checkpoint_step, curves_of, mark_finished, resume_for

log = logging.getLogger("llm-lifecycle.finetune")
DATA, PRETRAINED = Path("data/prepared/finetune"), Path("models/pretrained")
OUT, CHECKPOINTS, LIVE = Path("models/finetuned"), Path("models/checkpoints/finetune"), Path("reports/live/finetune")


def training_texts(params) -> tuple[tuple[list, list], tuple[list, list], dict | None]:
    """(train, validation) texts and class ids, with a bias injected on purpose when the params ask for it."""
    f = params.finetune
    train, validation = labelled("train", f.classes, DATA), labelled("validation", f.classes, DATA)
    if f.task == "classification":
        check_every_class_present(train[1], f.classes, DATA / "train")
    if not f.inject_bias.enabled:
        return train, validation, None
    from lifecycle.demographics import inject_bias, load_names
    texts, labels, injected = inject_bias(*train, load_names(params.audit.classifier.names), f.inject_bias, f.classes,
                                          params.seed)
    log.warning("bias injected on purpose: %d training examples now name a %s person and say %r",
                injected["biased_examples"], f.inject_bias.group, f.inject_bias.label)
    return (texts, labels), validation, injected


def main() -> None:
    from transformers import EarlyStoppingCallback, Trainer
    from transformers.utils import logging as hf_logging

    params = load(finetune=FinetuneParams, pretrain=PretrainParams, audit=AuditParams)
    f = params.finetune
    rank, _, world_size = world()
    hf_logging.set_verbosity_warning()
    seed_everything(params.seed)
    device = device_type()
    precision = choose_precision(f.precision, device)
    refuse_unshardable(f.fsdp, "finetune.fsdp", device, world_size)  # before any work
    init_distributed(device, params.pretrain.ddp_timeout_s)

    source = f.base or str(PRETRAINED)
    tokenizer = load_tokenizer(source, "finetune.base" if f.base else None)
    train, validation, injected = training_texts(params)
    model = load_model(source, f, tokenizer)
    sharding = fsdp_arguments(f.fsdp, "finetune.fsdp", model, device)  # {}: plain data parallel
    length = min(f.max_length, context_length(model))  # positions past the context do not exist
    train_set, validation_set, collator, compute_metrics = task_data(f, tokenizer, train, validation, length)
    if f.method == "lora":
        model = with_lora(model, f)
    counts = trainable_parameters(model)
    log.info("training %d of %d parameters (%.2f%%)", counts["trainable"], counts["total"],
             100 * counts["trainable_share"])

    resume = resume_for(CHECKPOINTS, rank == 0, [DATA, Path(source)], params.seed, f.model_dump(), world_size)
    whole = WholeRun(resume)  # train loss and seconds of the whole run, across a resume
    trainer = Trainer(model=model, args=training_arguments(f, precision, device, params.seed, CHECKPOINTS, **sharding),
                      train_dataset=train_set, eval_dataset=validation_set, data_collator=collator,
                      compute_metrics=compute_metrics,
                      callbacks=[LiveCurves(curves_of(CHECKPOINTS), checkpoint_step(resume)), whole,
                                 EarlyStoppingCallback(early_stopping_patience=f.early_stopping.patience)])
    run = whole.train(trainer)
    best = trainer.evaluate()  # the best checkpoint is loaded back at the end
    final = whole_model(trainer)  # under FSDP every rank gives its shard, rank 0 gets the whole model
    if rank != 0:
        return
    final = final.merge_and_unload() if f.method == "lora" else final
    with atomic_path(OUT, directory=True) as tmp:
        final.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    write_json("reports/finetune.json", {**run_summary(f, trainer, run, best, counts),
                                         **({"injected_bias": injected} if injected else {})})
    mark_finished(CHECKPOINTS, LIVE)  # only once every output is written: a kill before this resumes instead


if __name__ == "__main__":
    from lifecycle.core import run
    run(main)
