"""What every section of the params schema shares: field types, loading, cross-section checks and error lines.

A bad value stops the run with one line such as
`params.yaml: prepare.dedup.near.threshold = 1.7: must be between 0 and 1`, and a misspelt section with
`params.yaml: unknown section 'pretrian' (did you mean 'pretrain'?)`: every load checks the file's top-level keys
against SECTION_NAMES, whichever sections it reads.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from lifecycle.core import StageError

PARAMS_FILE = Path("params.yaml")

# Every top-level key params.yaml may hold: the shared `seed`, one per section module, and the review's `gates`.
# Kept here (not derived from lifecycle.params.schema) so that a stage need not import every section's module;
# tests/test_params.py checks that it names exactly schema.Params's fields.
SECTION_NAMES = ("seed", "data_executor", "collect", "prepare", "tokenizer", "tokenize", "model", "pretrain",
                 "finetune", "evaluate", "audit", "compress", "distill", "benchmark", "serve", "monitor",
                 "report", "gates")


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


def unique():
    def check(value):
        repeated = sorted({str(v) for v in value if value.count(v) > 1})
        if repeated:
            raise ValueError(f"repeated: {', '.join(repeated)}")
        return value
    return AfterValidator(check)


Fraction = between(0, 1)


class Section(BaseModel):
    # strict: a YAML string "5" is not an int, 1.0 is not a bool; unknown keys are errors.
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


# ---- sub-sections that several sections share (here, so that a stage reading one need not import the other) ----

class Fsdp(Section):
    """Fully sharded data parallel through the Trainer (PyTorch FSDP via accelerate): each of the torchrun processes
    holds a shard of the weights, gradients and optimizer state instead of a whole copy. GPUs only: accelerate
    refuses FSDP on CPU (lifecycle.sharding, reports/bench/fsdp.json)."""
    sharding: Literal["full_shard", "shard_grad_op", "hybrid_shard"] = Field(
        "full_shard", description="full_shard: weights, gradients and optimizer state sharded (ZeRO-3); "
                                  "shard_grad_op: weights kept whole between forward and backward (ZeRO-2); "
                                  "hybrid_shard: full_shard within a node, replicated across nodes (version 1)")
    version: Literal[1, 2] = Field(2, description="2: per-parameter sharding (fully_shard), PyTorch's current FSDP; "
                                                  "1: the flat-parameter FSDP")
    offload: bool = Field(False, description="keep the sharded weights and optimizer state in CPU memory")

    @model_validator(mode="after")
    def _hybrid_needs_version_1(self):
        if self.sharding == "hybrid_shard" and self.version != 1:
            raise ValueError("sharding = 'hybrid_shard' needs version = 1 (the Trainer's FSDP 2 shards over every "
                             "process)")
        return self


# ---- checks that span sections: each runs whenever every section it names is loaded ----

CROSS_CHECKS: list[tuple[tuple[str, ...], Callable[..., None]]] = []


def cross_check(*sections: str):
    """Register `check(*section_values)`; it raises ValueError with the message the user sees."""
    def register(check):
        CROSS_CHECKS.append((sections, check))
        return check
    return register


def run_cross_checks(params) -> None:
    loaded = type(params).model_fields
    for sections, check in CROSS_CHECKS:
        if all(name in loaded for name in sections):
            check(*(getattr(params, name) for name in sections))


def params_model(name: str, sections: dict[str, object], extra: str = "ignore") -> type[BaseModel]:
    """A root model holding `sections` (name -> type, or (type, default)) and the shared `seed`."""
    fields = {"seed": (at_least(0), 0)} | {key: value if isinstance(value, tuple) else (value, ...)
                                           for key, value in sections.items()}
    validators = {"_cross": model_validator(mode="after")(lambda self: (run_cross_checks(self), self)[1])}
    return create_model(name, __config__=ConfigDict(extra=extra, strict=True, validate_default=True),
                        __validators__=validators, **fields)


# ---- loading and error lines ----

_TYPE_WORDS = {"int_type": "must be an integer", "float_type": "must be a number", "bool_type": "must be true or false",
               "string_type": "must be a string", "list_type": "must be a list", "dict_type": "must be a mapping",
               "model_type": "must be a mapping", "missing": "is required", "extra_forbidden": "unknown key"}


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _inner_model(annotation) -> type[BaseModel] | None:
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
        models = [a for a in getattr(candidate, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
        if models:
            return models[0]
    return None


def _allowed_keys(root: type[BaseModel], loc: tuple) -> str:
    model = root
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        model = _inner_model(field.annotation) if field is not None else None
        if model is None:
            return ""
    return ", ".join(model.model_fields)


def _message(root: type[BaseModel], e: dict) -> str:
    kind = e["type"]
    if kind == "value_error":
        return e["msg"].removeprefix("Value error, ")
    if kind == "literal_error":
        return f"must be one of {e['ctx']['expected']}"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(root, e["loc"])
        return "unknown key" + (f" (allowed: {allowed})" if allowed else "")
    if kind == "float_type" and isinstance(e["input"], str) and (fixed := yaml_float(e["input"])):
        return f"must be a number (YAML reads {e['input'].strip()} as text: write {fixed})"
    if kind in ("too_short", "too_long"):
        return e["msg"].lower()
    return _TYPE_WORDS.get(kind, e["msg"])


def yaml_float(text: str) -> str | None:
    """`text` rewritten so that YAML takes it for a number, when it is a number in exponent notation that YAML 1.1
    (PyYAML) reads as text: 1e-3, 5E4, 2.5e3 (YAML 1.1 wants a dot in the mantissa and a sign on the exponent);
    else None (a word such as 'fast' is no number at all, and gets no hint)."""
    match = re.fullmatch(r"([-+]?)(\d*)(?:\.(\d*))?[eE]([-+]?)(\d+)", text.strip())
    if not match or not (match[2] or match[3]) or isinstance(yaml.safe_load(text), float):  # not quoted 1.0e-3
        return None
    sign, whole, fraction, exp_sign, exponent = match.groups()
    fixed = f"{sign}{whole or 0}.{fraction or 0}e{exp_sign or '+'}{exponent}"
    return fixed if isinstance(yaml.safe_load(fixed), float) else None


def unknown_section(file: str | Path, key, known=SECTION_NAMES) -> str:
    """`file: unknown section 'pretrian' (did you mean 'pretrain'?)`, or the list of sections when none is near."""
    near = difflib.get_close_matches(str(key), list(known), n=1)
    hint = f"did you mean '{near[0]}'?" if near else f"sections: {', '.join(known)}"
    return f"{file}: unknown section {str(key)!r} ({hint})"


def error_lines(err: ValidationError, file: str | Path, root: type[BaseModel] | None = None) -> list[str]:
    """One line per problem: `file: dotted.key = value: what is allowed`."""
    root = root or BaseModel
    lines = []
    for e in err.errors():
        loc, kind = e["loc"], e["type"]
        if kind == "extra_forbidden" and len(loc) == 1 and not issubclass(root, Section):  # a whole params file
            lines.append(unknown_section(file, loc[0], root.model_fields))
            continue
        value = e["input"] if kind != "missing" else None
        shown = f" = {value!r}" if kind != "missing" and not isinstance(value, (dict, list)) else ""
        message = _message(root, e)
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


def validate_with(root: type[BaseModel], data: dict, file: str | Path = PARAMS_FILE):
    """(params, []) or (None, problem lines). Validators see the project's directory (the params file's) as
    `info.context["project"]`: the gates check their metrics against its dvc.yaml (lifecycle.params.report)."""
    try:
        return root.model_validate(data, context={"project": Path(file).parent}), []
    except ValidationError as err:
        return None, error_lines(err, file, root)


def load(path: str | Path = PARAMS_FILE, **sections):
    """The `seed` and the named sections of params.yaml (name=SectionType), validated; the first problem raises a
    one-line StageError. Other sections are not validated (`python -m lifecycle.params` checks the whole file), but
    an unknown top-level key (a misspelt section) stops every stage, before any work."""
    path = Path(path)
    root = params_model("StageParams", {name: _with_default(kind) for name, kind in sections.items()})
    data = read_yaml(path)
    params, problems = validate_with(root, data, path)
    problems = [unknown_section(path, key) for key in data if key not in SECTION_NAMES] + problems
    if problems:
        more = f" (and {len(problems) - 1} more: python -m lifecycle.params)" if len(problems) > 1 else ""
        raise StageError(problems[0] + more)
    return params


def _with_default(kind):
    """A section type, with its own defaults as the default when none of its fields is required."""
    if isinstance(kind, tuple):
        return kind
    if isinstance(kind, type) and issubclass(kind, BaseModel) and not any(
            f.is_required() for f in kind.model_fields.values()):
        return kind, kind()
    return kind
