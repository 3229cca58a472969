"""The typed schema of params.yaml, validated before any stage does work.

`python -m stages.params [params.yaml]` validates the whole file and prints every problem, one per line.
A stage calls `load()`: the first problem stops it with one line such as
`params.yaml: prepare.dedup.near.threshold = 1.7: must be between 0 and 1`.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal, Optional

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from stages.core import StageError

PARAMS_FILE = Path("params.yaml")


def between(lo: float, hi: float, kind=float):
    def check(value):
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return value
    return Annotated[kind, AfterValidator(check)]


def at_least(lo: float, kind=int):
    def check(value):
        if value < lo:
            raise ValueError(f"must be at least {lo}")
        return value
    return Annotated[kind, AfterValidator(check)]


def positive(kind=float):
    def check(value):
        if value <= 0:
            raise ValueError("must be greater than 0")
        return value
    return Annotated[kind, AfterValidator(check)]


Fraction = between(0, 1)


class Section(BaseModel):
    # strict: a YAML string "5" is not an int, 1.0 is not a bool; unknown keys are errors.
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


# ---------------------------------------------------------------- collect

class Source(Section):
    """One input of a corpus. Which fields are needed depends on `kind`."""
    name: str = Field(description="names the source in reports and in each document's `source`")
    kind: Literal["package", "path", "hf", "url"]
    package: Optional[str] = Field(None, description="kind package: the installed, pinned package holding the file")
    path: Optional[str] = Field(None, description="package: glob inside the package; path: local file or glob")
    dataset: Optional[str] = Field(None, description="kind hf: the datasets hub name")
    hf_split: str = Field("train", description="kind hf: which split to read")
    url: Optional[str] = None
    sha256: Optional[str] = Field(None, description="kind url: required checksum of the download")
    format: Literal["auto", "text", "jsonl", "csv", "parquet", "shakespeare_md", "mediawiki_xml"] = "auto"
    text_column: str = "text"
    label_column: Optional[str] = Field(None, description="labelled corpora: the column holding the label")
    label_map: dict[str, str] = Field(default_factory=dict, description="raw label -> class name")
    drop_labels: list[str] = Field(default_factory=list, description="raw labels whose rows are skipped")
    weight: positive() = Field(1.0, description="share of the mixture's characters (pretraining)")
    limit: Optional[at_least(1)] = Field(None, description="keep at most this many documents (smoke tests)")

    @model_validator(mode="after")
    def _fields_for_kind(self):
        needs = {"package": ("package", "path"), "path": ("path",), "hf": ("dataset",), "url": ("url", "sha256")}
        for field in needs[self.kind]:
            if getattr(self, field) is None:
                raise ValueError(f"kind '{self.kind}' needs '{field}'")
        if self.sha256 is not None and not (len(self.sha256) == 64 and all(c in "0123456789abcdef" for c in self.sha256)):
            raise ValueError(f"sha256 = {self.sha256!r}: must be 64 lowercase hex digits")
        return self


class CollectParams(Section):
    pretrain: list[Source] = Field(min_length=1)
    finetune: list[Source] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self):
        for corpus in ("pretrain", "finetune"):
            names = [s.name for s in getattr(self, corpus)]
            duplicated = sorted({n for n in names if names.count(n) > 1})
            if duplicated:
                raise ValueError(f"{corpus}: source names must be unique, repeated: {', '.join(duplicated)}")
        for source in self.finetune:
            if source.label_column is None:
                raise ValueError(f"finetune source '{source.name}' needs 'label_column'")
        return self


# ---------------------------------------------------------------- prepare

class Filters(Section):
    """Quality filters; Gopher-style heuristics (Rae et al. 2021). A document failing one is dropped."""
    min_chars: at_least(0) = 1
    max_chars: at_least(1) = 1_000_000
    min_words: at_least(0) = 1
    max_words: at_least(1) = 200_000
    min_mean_word_length: between(0, 100) = 0.0
    max_mean_word_length: between(0, 1000) = 1000.0
    min_alpha_ratio: Fraction = Field(0.0, description="letters / non-space characters")
    min_alpha_word_ratio: Fraction = Field(0.0, description="share of words with at least one letter")
    max_symbol_word_ratio: between(0, 100) = Field(100.0, description="('#' + '...') / words")
    max_bullet_line_ratio: Fraction = 1.0
    max_ellipsis_line_ratio: Fraction = 1.0
    max_repeated_line_ratio: Fraction = Field(1.0, description="duplicate lines / lines")
    max_repeated_line_char_ratio: Fraction = Field(1.0, description="characters in duplicate lines / characters")
    max_top_bigram_char_ratio: Fraction = Field(1.0, description="characters of the most frequent word bigram / characters")
    min_stop_words: at_least(0) = Field(0, description="distinct English stop words (the, be, to, of, and, that, have, with)")

    @model_validator(mode="after")
    def _ranges(self):
        for lo, hi in (("min_chars", "max_chars"), ("min_words", "max_words"),
                       ("min_mean_word_length", "max_mean_word_length")):
            if getattr(self, lo) > getattr(self, hi):
                raise ValueError(f"{lo} = {getattr(self, lo)} is above {hi} = {getattr(self, hi)}")
        return self


class NearDedup(Section):
    enabled: bool = True
    threshold: Fraction = Field(0.8, description="estimated Jaccard similarity at which two documents are near duplicates")
    num_perm: between(16, 1024, int) = 128
    shingle_size: between(1, 32, int) = Field(5, description="words per shingle")

    @model_validator(mode="after")
    def _enough_bands(self):
        if self.enabled:
            from datasketch.lsh import _optimal_param  # the banding MinHashLSH itself will choose

            bands, _ = _optimal_param(self.threshold, self.num_perm, 0.5, 0.5)
            if bands < 2:
                raise ValueError(f"threshold = {self.threshold} with num_perm = {self.num_perm} leaves {bands} LSH band "
                                 "(MinHashLSH needs 2); lower the threshold or raise num_perm")
        return self


class Dedup(Section):
    exact: bool = True
    near: NearDedup = NearDedup()


class Pii(Section):
    email: bool = True
    phone: bool = True
    ip: bool = True
    credit_card: bool = True


class Split(Section):
    validation: between(0, 0.5) = 0.05
    test: between(0, 0.5) = 0.05


class PrepareParams(Section):
    normalization: Literal["NFC", "NFKC", "none"] = "NFKC"
    filters: dict[Literal["pretrain", "finetune"], Filters]
    dedup: Dedup = Dedup()
    pii: Pii = Pii()
    split: Split = Split()
    length_bins: list[at_least(1)] = Field(default_factory=lambda: [10, 30, 100, 300, 1000, 3000, 10000, 30000],
                                           min_length=1, description="upper edges (words) of the length histogram")

    @model_validator(mode="after")
    def _both_corpora(self):
        missing = {"pretrain", "finetune"} - set(self.filters)
        if missing:
            raise ValueError(f"filters: needs a section for {', '.join(sorted(missing))}")
        return self


# ---------------------------------------------------------------- tokenizer / tokenize

class SpecialTokens(Section):
    eos: str = "<|endoftext|>"
    pad: str = "<|pad|>"


class TokenizerParams(Section):
    pretrained: Optional[str] = Field(None, description="use this tokenizer (a local directory, or a hub name online) instead of training one")
    vocab_size: between(260, 1_000_000, int) = 4096
    min_frequency: at_least(1) = 2
    special_tokens: SpecialTokens = SpecialTokens()


class TokenizeParams(Section):
    block_size: between(8, 1_048_576, int) = 128
    batch_size: at_least(1) = 1000


# ---------------------------------------------------------------- model / pretrain

class ModelParams(Section):
    """The architecture, built from scratch; or `base`: an existing model to continue pretraining from."""
    base: Optional[str] = Field(None, description="a model directory (or a hub name, online); the keys below are then ignored")
    family: Literal["gpt2", "llama"] = Field("gpt2", description="gpt2: learned positions, GELU, LayerNorm; llama: rotary, SwiGLU, RMSNorm, GQA")
    n_layers: between(1, 256, int) = 4
    d_model: between(8, 65536, int) = 384
    n_heads: between(1, 1024, int) = 6
    n_kv_heads: Optional[between(1, 1024, int)] = Field(None, description="llama: key/value heads (grouped-query attention); null = n_heads")
    d_ff: between(8, 262144, int) = Field(1536, description="MLP width")
    context_length: between(8, 1_048_576, int) = 128
    dropout: between(0, 0.9) = 0.0
    tie_embeddings: bool = True
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"

    @model_validator(mode="after")
    def _shapes(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads = {self.n_heads} must divide d_model = {self.d_model}")
        if self.n_kv_heads is not None:
            if self.family != "llama":
                raise ValueError(f"n_kv_heads = {self.n_kv_heads}: only family 'llama' has grouped-query attention; "
                                 "use null for gpt2")
            if self.n_heads % self.n_kv_heads:
                raise ValueError(f"n_kv_heads = {self.n_kv_heads} must divide n_heads = {self.n_heads}")
        return self


class Samples(Section):
    prompts: list[str] = Field(default_factory=lambda: ["To be, or not to be", "The history of"])
    max_new_tokens: between(1, 4096, int) = 40
    temperature: between(0.01, 10) = 0.8
    top_k: at_least(0) = 50
    top_p: between(0.01, 1) = 0.95


class PretrainParams(Section):
    max_steps: at_least(1) = 500
    batch_size: at_least(1) = Field(16, description="sequences per device per step")
    gradient_accumulation_steps: at_least(1) = 1
    learning_rate: positive() = 1.5e-3
    adam_beta1: between(0, 0.9999) = 0.9
    adam_beta2: between(0, 0.9999) = 0.95
    weight_decay: between(0, 10) = 0.1
    warmup_steps: at_least(0) = 50
    lr_scheduler: Literal["cosine", "linear", "constant_with_warmup"] = "cosine"
    max_grad_norm: positive() = 1.0
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field("auto", description="auto: bf16 on GPUs and CPUs that have it, fp16 on other GPUs, fp32 otherwise")
    gradient_checkpointing: bool = False
    torch_compile: bool = False
    eval_steps: at_least(1) = 150
    eval_max_blocks: at_least(1) = Field(256, description="validation blocks for the periodic evaluations (the final one uses all)")
    save_steps: at_least(1) = Field(150, description="checkpoint interval: a kill -9 loses at most this many steps")
    logging_steps: at_least(1) = 10
    ddp_timeout_s: at_least(10) = Field(600, description="a hung process group fails after this many seconds")
    samples: Samples = Samples()

    @model_validator(mode="after")
    def _steps(self):
        if self.warmup_steps > self.max_steps:
            raise ValueError(f"warmup_steps = {self.warmup_steps} is above max_steps = {self.max_steps}")
        return self


# ---------------------------------------------------------------- finetune / evaluate

class Lora(Section):
    r: between(1, 1024, int) = 8
    alpha: positive() = 16.0
    dropout: between(0, 0.9) = 0.05
    target_modules: Optional[list[str]] = Field(None, description="null: the token embedding and every attention and MLP projection")
    learning_rate: positive() = Field(1e-3, description="adapters want a higher rate than full fine-tuning")


class EarlyStopping(Section):
    metric: Literal["accuracy", "macro_f1", "loss"] = "accuracy"
    patience: at_least(1) = Field(3, description="evaluations without improvement before training stops")


class FinetuneParams(Section):
    task: Literal["classification", "causal_lm"] = Field("classification", description="causal_lm: domain-adaptive continued pretraining on the task's text")
    base: Optional[str] = Field(None, description="null: models/pretrained; else a model directory (a hub name, online)")
    classes: list[str] = Field(default_factory=lambda: ["negative", "positive"], min_length=2)
    method: Literal["full", "lora"] = "full"
    lora: Lora = Lora()
    max_length: between(8, 1_048_576, int) = Field(128, description="tokens kept per example")
    epochs: positive() = 3.0
    batch_size: at_least(1) = 32
    learning_rate: positive() = 3e-4
    weight_decay: between(0, 10) = 0.01
    warmup_ratio: between(0, 0.5) = 0.06
    eval_steps: at_least(1) = 100
    early_stopping: EarlyStopping = EarlyStopping()
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"

    @model_validator(mode="after")
    def _classes(self):
        repeated = sorted({c for c in self.classes if self.classes.count(c) > 1})
        if repeated:
            raise ValueError(f"classes: repeated {', '.join(repeated)}")
        if self.task == "causal_lm" and self.early_stopping.metric != "loss":
            raise ValueError(f"early_stopping.metric = {self.early_stopping.metric!r}: task 'causal_lm' has only 'loss'")
        return self


class EvaluateParams(Section):
    batch_size: at_least(1) = 32
    stride: Optional[at_least(1)] = Field(None, description="sliding-window step for texts longer than the context; null: half the context")
    calibration_bins: between(2, 100, int) = 10


# ---------------------------------------------------------------- report / gates

class ReportParams(Section):
    """What the model card says that no metric can: who the model is for, and what it must not be used for."""
    intended_use: str = "A demonstration of a reproducible LLM lifecycle; not for decisions about people."
    licences: dict[str, str] = Field(default_factory=dict, description="data source name -> its licence (collect's "
                                     "sources, and any other data the run uses, e.g. the audit's)")
    out_of_scope: list[str] = Field(default_factory=list, description="uses the model is not meant for")
    limitations: list[str] = Field(default_factory=list, description="known limitations, one sentence each")
    dpi: between(50, 300, int) = Field(100, description="resolution of the report's PNG figures")


class Gate(Section):
    """A quality gate on one metric of the head run: `file:dotted.key` at least `min` and/or at most `max`."""
    metric: str = Field(description="e.g. reports/eval.json:classifier.accuracy")
    min: Optional[float] = None
    max: Optional[float] = None

    @model_validator(mode="after")
    def _well_formed(self):
        if ":" not in self.metric or not all(self.metric.split(":", 1)):
            raise ValueError(f"metric = {self.metric!r}: must be 'file:key', e.g. 'reports/eval.json:classifier.accuracy'")
        if self.min is None and self.max is None:
            raise ValueError(f"metric = {self.metric!r}: needs 'min' or 'max'")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min = {self.min} is above max = {self.max}")
        return self


class Params(Section):
    seed: at_least(0) = 0
    collect: CollectParams
    prepare: PrepareParams
    tokenizer: TokenizerParams = TokenizerParams()
    tokenize: TokenizeParams = TokenizeParams()
    model: ModelParams = ModelParams()
    pretrain: PretrainParams = PretrainParams()
    finetune: FinetuneParams = FinetuneParams()
    evaluate: EvaluateParams = EvaluateParams()
    report: ReportParams = ReportParams()
    gates: list[Gate] = Field(default_factory=list, description="quality gates checked by `python -m stages.compare`")

    @model_validator(mode="after")
    def _context_fits_blocks(self):
        context, block = self.model.context_length, self.tokenize.block_size
        if self.model.base is None and context > block:
            raise ValueError(f"model.context_length = {context} is longer than the packed blocks "
                             f"(tokenize.block_size = {block}); raise tokenize.block_size or lower the context")
        if self.model.base is None and block % context:
            raise ValueError(f"tokenize.block_size = {block} must be a multiple of model.context_length = {context}")
        return self


# ---------------------------------------------------------------- loading and error lines

_TYPE_WORDS = {"int_type": "must be an integer", "float_type": "must be a number", "bool_type": "must be true or false",
               "string_type": "must be a string", "list_type": "must be a list", "dict_type": "must be a mapping",
               "model_type": "must be a mapping", "missing": "is required", "extra_forbidden": "unknown key"}


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _allowed_keys(loc: tuple) -> str:
    model = Params
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return ""
        annotation = field.annotation
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                model = candidate
                break
            inner = getattr(candidate, "__args__", ())
            models = [a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)]
            if models:
                model = models[0]
                break
        else:
            return ""
    return ", ".join(model.model_fields)


def error_lines(err: ValidationError, file: str | Path) -> list[str]:
    lines = []
    for e in err.errors():
        loc = e["loc"]
        kind = e["type"]
        if kind == "value_error":
            message = e["msg"].removeprefix("Value error, ")
        elif kind == "literal_error":
            message = f"must be one of {e['ctx']['expected']}"
        elif kind == "extra_forbidden":
            allowed = _allowed_keys(loc)
            message = "unknown key" + (f" (allowed: {allowed})" if allowed else "")
        elif kind == "float_type" and isinstance(e["input"], str):
            message = "must be a number (YAML reads 1e-3 as text: write 1.0e-3)"
        elif kind in ("too_short", "too_long"):
            message = e["msg"].lower()
        else:
            message = _TYPE_WORDS.get(kind, e["msg"])
        value = e["input"] if kind != "missing" else None
        shown = f" = {value!r}" if kind != "missing" and not isinstance(value, (dict, list)) else ""
        lines.append(f"{file}: {_dotted(loc)}{shown}: {message}" if loc else f"{file}: {message}")
    return lines


def read_yaml(path: Path) -> dict:
    if not path.exists():
        raise StageError(f"{path}: not found (run from the project root)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark else ""
        raise StageError(f"{path}:{where} not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(data, dict):
        raise StageError(f"{path}: must be a mapping of sections")
    return data


def validate(data: dict, file: str | Path = PARAMS_FILE) -> tuple[Params | None, list[str]]:
    try:
        return Params.model_validate(data), []
    except ValidationError as err:
        return None, error_lines(err, file)


def load(path: str | Path = PARAMS_FILE) -> Params:
    """Validated params; the first problem raises a one-line StageError."""
    path = Path(path)
    params, problems = validate(read_yaml(path), path)
    if problems:
        more = f" (and {len(problems) - 1} more: python -m stages.params)" if len(problems) > 1 else ""
        raise StageError(problems[0] + more)
    return params


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else PARAMS_FILE
    params, problems = validate(read_yaml(path), path)
    if problems:
        print("\n".join(f"error: {p}" for p in problems), file=sys.stderr)
        sys.exit(2)
    print(f"{path}: valid ({len(Params.model_fields)} sections, seed {params.seed})")


if __name__ == "__main__":
    from stages.core import run
    run(main)
