"""The `report` section (the model card's prose) and the review's `gates`.

A gate names its metric as `file:key`, the way `python -m lifecycle.review.compare` finds it in DVC's metrics diff:
`file` one of the metrics files dvc.yaml declares (a stage's `metrics:` or the top-level `metrics:`), `key` the
dotted path to a number in it (DVC flattens nested objects with dots). Whole-file validation (`python -m
lifecycle.params`, and any `load` of the gates) checks each gate against the project's dvc.yaml: the file must be
declared there, and when it exists on disk the key must name a number in it. A file that no stage has written yet
(a fresh project) cannot say which keys it will hold, so only its declaration is checked; without a dvc.yaml (not a
DVC project) nothing is. A metric that a stage will newly write can be gated once that stage has run.
"""
from __future__ import annotations

import difflib
import json
import posixpath
import re
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationInfo, model_validator

from lifecycle.params.base import Section, between


class ReportParams(Section):
    """What the model card says that no metric can: who the model is for, and what it must not be used for."""
    intended_use: str = "A demonstration of a reproducible LLM lifecycle; not for decisions about people."
    licences: dict[str, str] = Field(default_factory=dict, description="licences of the data files the audit reads, "
                                     "by file as reports/bias.json `inputs` names it (a path, or `package: path`); "
                                     "each collect source states its own `licence`")
    out_of_scope: list[str] = Field(default_factory=list, description="uses the model is not meant for")
    limitations: list[str] = Field(default_factory=list, description="known limitations, one sentence each")
    dpi: between(50, 300, int) = Field(100, description="resolution of the report's PNG figures")


# ---- the metrics a gate may name ----

def _metric_names(entries) -> list[str]:
    """File names of a dvc.yaml `metrics:` list (each a name, or a name mapping to its options)."""
    names = []
    for entry in entries or []:
        names += [entry] if isinstance(entry, str) else list(entry) if isinstance(entry, dict) else []
    return [str(n) for n in names]


def declared_metrics_files(dvc: dict) -> list[str]:
    """Every metrics file of a parsed dvc.yaml, relative to the project root: each stage's `metrics:` (inside its
    `wdir`, and `do:` for foreach/matrix stages) and the top-level `metrics:`."""
    files = []
    for stage in (dvc.get("stages") or {}).values():
        stage = stage.get("do", stage) if isinstance(stage, dict) else {}
        wdir = str(stage.get("wdir", "."))
        files += [posixpath.normpath(posixpath.join(wdir, name)) for name in _metric_names(stage.get("metrics"))]
    files += [posixpath.normpath(name) for name in _metric_names(dvc.get("metrics"))]
    return list(dict.fromkeys(files))


def number_keys(data, prefix: str = "") -> list[str]:
    """Dotted keys of the numbers in a metrics file, as DVC flattens it (lists and text are no gateable metric)."""
    if isinstance(data, dict):
        return [k for key, value in data.items() for k in number_keys(value, f"{prefix}{key}.")]
    is_number = isinstance(data, (int, float)) and not isinstance(data, bool)
    return [prefix.rstrip(".")] if is_number and prefix else []


def _file_keys(path: Path) -> list[str] | None:
    """The number keys of a metrics file on disk; None when it does not exist or cannot be read (keys unknown)."""
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError):
        return None
    return number_keys(data)


def project_metrics(project: Path) -> dict[str, list[str] | None] | None:
    """metrics file -> its number keys (None: not on disk yet) for the project's dvc.yaml; None without one."""
    dvc_yaml = project / "dvc.yaml"
    try:
        dvc = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) if dvc_yaml.is_file() else None
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(dvc, dict):
        return None
    return {name: None if "${" in name else _file_keys(project / name) for name in declared_metrics_files(dvc)}


def _declared(file: str, metrics: dict[str, list[str] | None]) -> str | None:
    """The dvc.yaml name `file` is (a templated `${...}` name matches any value), or None."""
    if file in metrics:
        return file
    return next((n for n in metrics if "${" in n and fnmatchcase(file, re.sub(r"\$\{[^}]*\}", "*", n))), None)


def unknown_metric(metric: str, metrics: dict[str, list[str] | None]) -> str | None:
    """Why `file:key` names no metric of the project, with the nearest that do; None when it may name one."""
    file, key = metric.split(":", 1)
    declared = _declared(file, metrics)
    if declared is not None and (metrics[declared] is None or key in metrics[declared]):
        return None
    nearest_file = declared or next(iter(difflib.get_close_matches(file, list(metrics), n=1)), None)
    keys = metrics.get(nearest_file) or [] if nearest_file else []
    near = [f"{nearest_file}:{k}" for k in difflib.get_close_matches(key, keys, n=3)]
    if declared is None:
        near = near or ([f"{nearest_file}:{key}"] if nearest_file and metrics[nearest_file] is None else [])
        hint = f"nearest: {', '.join(near)}" if near else f"metrics files: {', '.join(metrics) or 'none'}"
        return f"metric = {metric!r}: {file} is not a metrics file of dvc.yaml ({hint})"
    hint = f"nearest: {', '.join(near)}" if near else "`dvc metrics show` lists them"
    return (f"metric = {metric!r}: {file} holds no number '{key}' ({hint}); a gate names a number in a metrics file "
            "of dvc.yaml, checked against the file on disk once its stage has written it")


class Gate(Section):
    """A quality gate on one metric of the head run. `fail_if: threshold` (the default): `file:dotted.key` at least
    `min` and/or at most `max`. `fail_if: significant`: the head is not significantly worse than the base (a paired
    test on the per-example files where both runs have them, else beyond the seed-to-seed noise band of
    reports/noise.json); no min or max then. Validated with a project (whole-file validation), the metric must be
    one dvc.yaml declares (module docstring)."""
    metric: str = Field(description="e.g. reports/eval.json:classifier.accuracy")
    min: float | None = None
    max: float | None = None
    fail_if: Literal["threshold", "significant"] = Field(
        "threshold", description="threshold: fail outside min/max; significant: fail when significantly worse "
                                 "than the base")

    @model_validator(mode="after")
    def _well_formed(self, info: ValidationInfo):
        if ":" not in self.metric or not all(self.metric.split(":", 1)):
            raise ValueError(f"metric = {self.metric!r}: must be 'file:key', "
                             "e.g. 'reports/eval.json:classifier.accuracy'")
        if self.fail_if == "significant" and (self.min is not None or self.max is not None):
            raise ValueError(f"metric = {self.metric!r}: fail_if: significant takes no 'min' or 'max' (it compares "
                             "with the base run)")
        if self.fail_if == "threshold" and self.min is None and self.max is None:
            raise ValueError(f"metric = {self.metric!r}: needs 'min' or 'max'")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min = {self.min} is above max = {self.max}")
        context = info.context if isinstance(info.context, dict) else {}
        if context.get("project") is not None:
            if "metrics" not in context:  # read once per validation, not once per gate
                context["metrics"] = project_metrics(Path(context["project"]))
            problem = context["metrics"] is not None and unknown_metric(self.metric, context["metrics"])
            if problem:
                raise ValueError(problem)
        return self
