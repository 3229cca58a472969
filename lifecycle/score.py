"""score: perplexity, bits per byte and bits per character of any causal language model on any text.

    python -m lifecycle.score MODEL TEXT [TEXT ...] [--stride N] [--batch-size N] [--text-column C] [--json OUT]

MODEL is a PyTorch model directory (config.json + safetensors weights: models/pretrained, or models/finetuned after
a `finetune.task: causal_lm` run), an ONNX LM directory (model.onnx: models/compressed/lm/<variant>), or a variant
name `lm:<variant>` (lm:pytorch, lm:int8_dynamic, ...: lifecycle.variants). TEXT is a .txt or .md file (one
document), or a .jsonl file or a folder of .jsonl shards (one document per row: lifecycle.texts). Each text is
scored as the evaluate stage scores its own (lifecycle.scoring.language_model_scores), offline; one table row per
text, and with --json the figures written to a file.
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from lifecycle.core import StageError
from lifecycle.io import write_json
from lifecycle.modeling import context_length
from lifecycle.texts import read_texts
from lifecycle.variants import ONNX_FILE, variant_dir

log = logging.getLogger("llm-lifecycle.score")
VARIANT_PREFIX = "lm:"
SAFETENSORS = ("model.safetensors", "model.safetensors.index.json")
CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def model_directory(model: str) -> Path:
    """The directory MODEL names: a variant name `lm:<variant>`, or a directory holding an LM."""
    if model.startswith(VARIANT_PREFIX):
        return variant_dir("lm", model.removeprefix(VARIANT_PREFIX))
    path = Path(model)
    if not path.is_dir():
        raise StageError(f"MODEL {model!r}: no such directory (give a model directory such as models/pretrained, "
                         f"or a variant name such as {VARIANT_PREFIX}int8_dynamic)")
    if (path / ONNX_FILE).is_file():
        return path
    if not (path / "config.json").is_file():
        raise StageError(f"MODEL {model!r}: not a model directory (looked for {ONNX_FILE}, or config.json with "
                         f"{' or '.join(SAFETENSORS)})")
    if not any((path / name).is_file() for name in SAFETENSORS):
        raise StageError(f"MODEL {model!r}: no {' or '.join(SAFETENSORS)} beside config.json (only safetensors "
                         "weights are loaded, never pickled ones)")
    return path


def causal_lm_check(path: Path, model: str) -> None:
    """A PyTorch directory whose config names another kind of model (a classifier) is refused, not half-loaded."""
    import json
    architectures = json.loads((path / "config.json").read_text(encoding="utf-8")).get("architectures") or []
    if architectures and not any(a.endswith(CAUSAL_SUFFIXES) for a in architectures):
        raise StageError(f"MODEL {model!r}: a {', '.join(architectures)}, not a causal language model "
                         "(models/finetuned is one only after finetune.task: causal_lm)")


def load_lm(model: str):
    """(model, tokenizer, directory) of MODEL; a PyTorch one on the GPU when there is one, ONNX on the CPU."""
    from lifecycle.tokens import load_tokenizer

    path = model_directory(model)
    tokenizer = load_tokenizer(path)
    if (path / ONNX_FILE).is_file():
        from optimum.onnxruntime import ORTModelForCausalLM
        lm = ORTModelForCausalLM.from_pretrained(path, file_name=ONNX_FILE, use_cache=True)
    else:
        from transformers import AutoModelForCausalLM

        from lifecycle.hardware import device_type
        causal_lm_check(path, model)
        lm = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, trust_remote_code=False)
        lm = lm.to(device_type()).eval()
    return lm, tokenizer, path


def score_texts(lm, tokenizer, corpora: dict[str, tuple[list[str], list[str]]], stride: int | None,
                batch_size: int) -> dict:
    """name -> {"documents", and language_model_scores' metrics} of each text (`corpora`: name -> (ids, texts))."""
    from lifecycle.scoring import language_model_scores

    return {name: {"documents": len(ids)} | language_model_scores(lm, tokenizer, texts, stride, batch_size,
                                                                  f"score {name}")[0]
            for name, (ids, texts) in corpora.items()}


COLUMNS = (("documents", "documents", "d"), ("tokens", "tokens", "d"), ("bytes", "bytes", "d"),
           ("characters", "characters", "d"), ("perplexity", "perplexity", ".4f"),
           ("bits/byte", "bits_per_byte", ".5f"), ("bits/char", "bits_per_character", ".5f"))


def table(scores: dict) -> str:
    """One aligned row per text, under a header."""
    rows = [["text", *(title for title, _, _ in COLUMNS)]]
    rows += [[name, *(format(m[key], spec) for _, key, spec in COLUMNS)] for name, m in scores.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                               enumerate(zip(row, widths))).rstrip() for row in rows)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lifecycle.score", description=__doc__.splitlines()[0])
    parser.add_argument("model", metavar="MODEL",
                        help="a model directory (PyTorch safetensors or ONNX), or a variant such as lm:int8_dynamic")
    parser.add_argument("texts", metavar="TEXT", nargs="+",
                        help="a .txt/.md file (one document), or a .jsonl file or folder of shards (one per row)")
    parser.add_argument("--stride", type=positive_int, help="sliding-window step; default: half the context")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="windows per forward pass (32)")
    parser.add_argument("--text-column", default="text", help="the column holding the text in .jsonl rows (text)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the figures to this JSON file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):  # before transformers loads: offline unless exported
        os.environ.setdefault(var, "1")
    args = parse_args(argv)
    repeated = sorted({t for t in args.texts if args.texts.count(t) > 1})
    if repeated:
        raise StageError(f"TEXT {repeated[0]!r} is given twice")
    corpora = {path: read_texts(path, args.text_column) for path in args.texts}  # bad text fails before the model
    lm, tokenizer, directory = load_lm(args.model)
    scores = score_texts(lm, tokenizer, corpora, args.stride, args.batch_size)
    print(table(scores))
    if args.json:
        context = context_length(lm)
        stride = min(args.stride or max(1, context // 2), context - 1)  # as language_model_scores steps
        write_json(args.json, {"model": args.model, "model_directory": str(directory), "context": context,
                               "stride": stride, "batch_size": args.batch_size, "texts": scores})
        log.info("wrote %s", args.json)


if __name__ == "__main__":
    from lifecycle.core import run
    run(main)
