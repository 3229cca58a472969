"""The whole params.yaml: every section, their cross-section checks, and unknown sections rejected.

Used by `python -m lifecycle.params`, `make repro` (validate before DVC deletes any output) and the tests; a stage
loads only its own sections (`base.load`).
"""
from __future__ import annotations

import sys
from pathlib import Path

from pydantic import Field

from lifecycle.params.audit import *  # noqa: F403
from lifecycle.params.base import PARAMS_FILE, Section, error_lines, params_model, read_yaml, validate_with  # noqa: F401
from lifecycle.params.benchmark import *  # noqa: F403
from lifecycle.params.collect import *  # noqa: F403
from lifecycle.params.compress import *  # noqa: F403
from lifecycle.params.data import *  # noqa: F403
from lifecycle.params.finetune import *  # noqa: F403
from lifecycle.params.model import *  # noqa: F403
from lifecycle.params.prepare import *  # noqa: F403
from lifecycle.params.pretrain import *  # noqa: F403
from lifecycle.params.report import *  # noqa: F403
from lifecycle.params.serve import *  # noqa: F403
from lifecycle.params.tokenizer import *  # noqa: F403

SECTIONS = {
    "data_executor": DataExecutorParams,  # noqa: F405
    "collect": CollectParams, "prepare": PrepareParams, "tokenizer": TokenizerParams,  # noqa: F405
    "tokenize": TokenizeParams, "model": ModelParams, "pretrain": PretrainParams,  # noqa: F405
    "finetune": FinetuneParams, "evaluate": EvaluateParams, "audit": AuditParams,  # noqa: F405
    "compress": CompressParams, "distill": DistillParams, "benchmark": BenchmarkParams,  # noqa: F405
    "serve": ServeParams, "monitor": MonitorParams, "report": ReportParams,  # noqa: F405
}
Params = params_model("Params", {
    **{name: kind if name in ("collect", "prepare") else (kind, kind()) for name, kind in SECTIONS.items()},
    "gates": (list[Gate], Field(default_factory=list, description="quality gates checked by the comparison")),  # noqa: F405
}, extra="forbid")


def validate(data: dict, file: str | Path = PARAMS_FILE):
    return validate_with(Params, data, file)


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else PARAMS_FILE
    params, problems = validate(read_yaml(path), path)
    if problems:
        print("\n".join(f"error: {p}" for p in problems), file=sys.stderr)
        sys.exit(2)
    print(f"{path}: valid ({len(Params.model_fields)} sections, seed {params.seed})")


def load(path: str | Path = PARAMS_FILE):
    """Every section, validated; the first problem raises a one-line StageError."""
    from lifecycle.core import StageError
    params, problems = validate(read_yaml(Path(path)), path)
    if problems:
        more = f" (and {len(problems) - 1} more: python -m lifecycle.params)" if len(problems) > 1 else ""
        raise StageError(problems[0] + more)
    return params
