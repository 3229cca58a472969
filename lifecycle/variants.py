"""Load any model variant by name: `pytorch` (the fine-tuned / pretrained originals), `distilled` (the distill
stage's student classifier) or an ONNX variant that the compress stage wrote under
models/compressed/{classifier,lm}/<variant>/model.onnx (the student's are named distilled_<variant>)."""
from __future__ import annotations

from pathlib import Path

from lifecycle.core import StageError
from lifecycle.tokens import load_tokenizer

PYTORCH, DISTILLED = "pytorch", "distilled"
ONNX_FILE = "model.onnx"
ORIGINALS = {"classifier": "finetuned", "lm": "pretrained"}


def is_pytorch(variant: str) -> bool:
    """Whether `variant` is a PyTorch model (safetensors) rather than an ONNX graph."""
    return variant in (PYTORCH, DISTILLED)


def available(kind: str, root: Path = Path("models")) -> list[str]:
    """`pytorch`, the `distilled` student (classifier, once distilled) and every exported variant of `kind`
    (classifier | lm) found on disk."""
    root = Path(root)
    directory = root / "compressed" / kind
    found = sorted(p.parent.name for p in directory.glob(f"*/{ONNX_FILE}")) if directory.is_dir() else []
    student = [DISTILLED] if kind == "classifier" and (root / DISTILLED / "config.json").is_file() else []
    return [PYTORCH, *student, *found]


def variant_dir(kind: str, variant: str, root: Path = Path("models")) -> Path:
    """The directory holding `variant`; an unknown or missing one is a one-line StageError naming the others."""
    root = Path(root)
    if variant == PYTORCH:
        path = root / ORIGINALS[kind]
    elif variant == DISTILLED and kind == "classifier":
        path = root / DISTILLED
    else:
        path = root / "compressed" / kind / variant
    marker = path / ("config.json" if is_pytorch(variant) else ONNX_FILE)
    if not marker.is_file():
        raise StageError(f"{kind} variant {variant!r}: not found at {path} "
                         f"(available: {', '.join(available(kind, root))})")
    return path


def model_sha256(directory: str | Path) -> str:
    """The identity of the model in `directory`, as a request log names it: sha256 over every file under it, none
    skipped (weights, graph, config and tokenizer all shape a prediction), each fed as its POSIX path relative to
    `directory`, its size and its bytes, in sorted path order. Any file added, removed, renamed or changed changes
    it; where the directory lives does not."""
    import hashlib
    directory = Path(directory)
    files = sorted((p.relative_to(directory).as_posix(), p) for p in directory.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for name, path in files:
        digest.update(f"{name}\0{path.stat().st_size}\0".encode())
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def session_options(threads: int | None):
    """ONNX Runtime session options with `threads` intra-op threads (None: ORT's default, every physical core)."""
    import onnxruntime
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


def load(kind: str, variant: str, root: Path = Path("models"), threads: int | None = None):
    """(model, tokenizer) of `kind` (classifier | lm); `threads` caps ONNX Runtime's intra-op threads (the
    benchmark gives PyTorch and ORT the same number)."""
    path = variant_dir(kind, variant, root)
    if is_pytorch(variant):
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
        auto = AutoModelForSequenceClassification if kind == "classifier" else AutoModelForCausalLM
        model = auto.from_pretrained(path, use_safetensors=True).eval()
        if kind == "lm":
            model.config.use_cache = True  # pretraining switched it off; generation wants it
    elif kind == "classifier":
        from optimum.onnxruntime import ORTModelForSequenceClassification
        model = ORTModelForSequenceClassification.from_pretrained(path, file_name=ONNX_FILE,
                                                                  session_options=session_options(threads))
    else:
        from optimum.onnxruntime import ORTModelForCausalLM
        model = ORTModelForCausalLM.from_pretrained(path, file_name=ONNX_FILE, use_cache=True,
                                                    session_options=session_options(threads))
    return model, load_tokenizer(path)


def load_classifier(variant: str, root: Path = Path("models"), threads: int | None = None):
    """(model, tokenizer) of a classifier variant, ready for `model(**tokenizer(texts, return_tensors="pt"))`."""
    return load("classifier", variant, root, threads)


def load_lm(variant: str, root: Path = Path("models"), threads: int | None = None):
    """(model, tokenizer) of a causal-LM variant; both kinds support `.generate(...)` (ONNX ones with the KV cache;
    `use_cache=False` feeds them an empty past, recomputing the whole text every step)."""
    return load("lm", variant, root, threads)
