"""The evaluation metrics the project ships as local `evaluate` modules: they load offline, unlike the hub's.

Each folder holds one module (`<name>/<name>.py`, one import per line: evaluate's dependency scanner misreads
`import a, b`). Load one with `load_metric("accuracy")`.
"""
from __future__ import annotations

from functools import cache
from pathlib import Path

HERE = Path(__file__).parent
RUNTIME_FILES = ("lifecycle/metrics",)  # the modules below are loaded by path: the deps check counts them


@cache
def load_metric(name: str):
    import evaluate
    if not (HERE / name / f"{name}.py").exists():
        have = sorted(p.name for p in HERE.iterdir() if p.is_dir() and not p.name.startswith("_"))
        raise ValueError(f"no local metric {name!r}: have {', '.join(have)}")
    return evaluate.load(str(HERE / name))
