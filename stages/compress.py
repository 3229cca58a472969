"""compress: ONNX export (classifier; causal LM with past key values), ORT graph optimisation, dynamic and static
int8 quantization, magnitude pruning; the size and quality change of every variant against fp32 PyTorch.

models/finetuned + models/pretrained + models/distilled + data/prepared ->
models/compressed/{classifier,lm}/<variant>/model.onnx (each with config.json and a tokenizer that emits no
token_type_ids; the distilled student's ONNX variants are classifier/distilled_<variant>), reports/compress.json and
reports/examples/compress/{classifier,lm}.<variant>.jsonl (each evaluation example's result, for paired tests).
"""
from __future__ import annotations

import logging

from lifecycle.compression import OUT, SOURCES, STUDENT, build_variants, detect_isa, distilled_variants, evaluate_kind
from lifecycle.core import StageError, seed_everything
from lifecycle.examples import replaced_folder
from lifecycle.io import atomic_path, restored_on_failure, write_json
from lifecycle.params.base import load
from lifecycle.params.compress import CompressParams
from lifecycle.params.finetune import EvaluateParams, FinetuneParams
from lifecycle.scoring import rounded
from lifecycle.variants import DISTILLED

log = logging.getLogger("llm-lifecycle.compress")


def check_inputs(params) -> None:
    """The models to compress exist and fit: one line before any work."""
    for kind, source in SOURCES.items():
        if not (source / "config.json").is_file():
            raise StageError(f"{source}: no model there "
                             f"(run the {'finetune' if kind == 'classifier' else 'pretrain'} stage first)")
    if params.finetune.task != "classification":
        raise StageError(f"params.yaml: finetune.task = {params.finetune.task!r}: compress needs the classifier "
                         "('classification')")
    if params.compress.distilled and not (STUDENT / "config.json").is_file():
        raise StageError(f"params.yaml: compress.distilled = {list(params.compress.distilled)}: "
                         f"no student at {STUDENT} (run the distill stage first, or set compress.distilled: [])")


def main() -> None:
    params = load(compress=CompressParams, finetune=FinetuneParams, evaluate=EvaluateParams)
    c = params.compress
    check_inputs(params)
    seed_everything(params.seed)
    isa = detect_isa() if c.quantization.isa == "auto" else c.quantization.isa
    log.info("int8 kernels for %s", isa)
    report: dict = {"facts": {}}
    student = [DISTILLED, *distilled_variants(params)] if c.distilled else []
    # The variants are evaluated where they are written; when that fails, the previous ones (which the previous
    # report describes) are put back.
    with restored_on_failure(OUT):
        with atomic_path(OUT, directory=True) as tmp:
            for kind in SOURCES:
                report["facts"][kind] = build_variants(kind, params, isa, tmp / kind)
            if c.distilled:
                report["facts"][DISTILLED] = build_variants("classifier", params, isa, tmp / "classifier", STUDENT,
                                                            list(c.distilled), prefix=f"{DISTILLED}_")
        with replaced_folder("compress") as folder:
            report["classifier"] = evaluate_kind("classifier", [*c.variants, *student], params, folder)
            report["lm"] = evaluate_kind("lm", list(c.variants), params, folder)
            write_json("reports/compress.json", rounded(report, 6))


if __name__ == "__main__":
    from lifecycle.core import run
    run(main)
