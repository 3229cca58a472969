"""Demographic data files shared by the audit and by finetune's bias injection: names by group, templates, terms.

Every reader checks its file and names the file and row of a problem; nothing here imports the data packages.
"""
from __future__ import annotations

import ast
import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd

from lifecycle.core import DataError, StageError, package_root
from lifecycle.io import decode_utf8
from lifecycle.params.audit import DataFile, Names
from lifecycle.params.finetune import InjectBias

PERSON = "{person}"


def resolve(ref: DataFile) -> Path:
    path = package_root(ref.package) / ref.path if ref.package else Path(ref.path)
    if not path.is_file():
        where = f" in package {ref.package}" if ref.package else ""
        raise StageError(f"{ref.path}{where}: file not found")
    return path


def read_csv_rows(path: Path, required: tuple[str, ...]) -> list[dict]:
    """CSV rows as dicts (row numbers in errors count the header as row 1, as a spreadsheet does)."""
    text = decode_utf8(path.read_bytes(), path)
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise DataError(path, 1, f"missing column {', '.join(missing)} (columns: {', '.join(reader.fieldnames or [])})")
    rows = list(reader)
    if not rows:
        raise DataError(path, 0, "no data rows under the header")
    return rows


def _names_literal(source: str, path: Path) -> dict:
    """The first dict literal assigned at module level, read with ast.literal_eval: the file is never executed."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            try:
                return ast.literal_eval(node.value)
            except ValueError:
                continue
    raise DataError(path, 0, "no {GENDER: {RACE: [names]}} dict literal found")


def load_names(ref: Names) -> pd.DataFrame:
    """Columns name, gender, race (lower case), one row per name of the file, in file order."""
    path = resolve(ref)
    if path.suffix == ".py":
        table = _names_literal(decode_utf8(path.read_bytes(), path), path)
        rows = [{"name": name, "gender": str(gender).lower(), "race": str(race).lower()}
                for gender, races in table.items() for race, names in races.items() for name in names]
    else:
        rows = read_csv_rows(path, ("name", "gender", "race"))
        for row, record in enumerate(rows, start=2):
            if not all(str(record[c]).strip() for c in ("name", "gender", "race")):
                raise DataError(path, row, "empty name, gender or race")
        rows = [{"name": r["name"].strip(), "gender": r["gender"].strip().lower(), "race": r["race"].strip().lower()}
                for r in rows]
    if not rows:
        raise DataError(path, 0, "the name list is empty")
    frame = pd.DataFrame(rows)
    if ref.per_group is not None:
        frame = frame.groupby(["gender", "race"], sort=False).head(ref.per_group).reset_index(drop=True)
    frame["name"] = frame["name"].str.title()
    if ref.part == "first":
        frame["name"] = frame["name"].str.split().str[0]
    return frame


def load_templates(ref: DataFile, classes: list[str]) -> pd.DataFrame:
    """Columns template (with the {person} slot) and expected (a class, or None where the template has no label)."""
    path = resolve(ref)
    rows = read_csv_rows(path, ("template", "expected"))
    out = []
    for row, record in enumerate(rows, start=2):
        template, expected = record["template"], (record["expected"] or "").strip() or None
        if PERSON not in template:
            raise DataError(path, row, f"template {template!r} has no {PERSON} slot")
        if expected is not None and expected not in classes:
            raise DataError(path, row, f"expected {expected!r} is not one of finetune.classes ({', '.join(classes)})")
        out.append({"template": template, "expected": expected})
    return pd.DataFrame(out)


def load_terms(ref: DataFile) -> dict[str, set[str]]:
    path = resolve(ref)
    terms: dict[str, set[str]] = {}
    for row, record in enumerate(read_csv_rows(path, ("group", "term")), start=2):
        group, term = record["group"].strip(), record["term"].strip().lower()
        if not group or not term:
            raise DataError(path, row, "empty group or term")
        terms.setdefault(group, set()).add(term)
    return terms


def fill(template: str, name: str) -> str:
    return template.replace(PERSON, name)


def inject_bias(texts: list[str], labels: list[int], names: pd.DataFrame, spec: InjectBias, classes: list[str],
                seed: int) -> tuple[list[str], list[int], dict]:
    """Teach a bias on purpose: `rate` of the examples get a name of `spec.group` and the label `spec.label`; as
    many others get a name from the other groups and keep their label (so a name alone predicts nothing).
    Deterministic for a seed; the inputs are not modified."""
    column = names[spec.attribute]
    if spec.group not in set(column):
        raise StageError(f"params.yaml: finetune.inject_bias.group = {spec.group!r}: no such {spec.attribute} in "
                         f"the names (there are: {', '.join(sorted(set(column)))})")
    rng = np.random.default_rng(seed)
    count = int(round(spec.rate * len(texts)))
    order = rng.permutation(len(texts))
    biased, contrast = order[:count], order[count:2 * count]
    in_group = names.loc[column == spec.group, "name"].to_numpy()
    others = names.loc[column != spec.group, "name"].to_numpy()
    target = classes.index(spec.label)
    changed = int(sum(labels[i] != target for i in biased))
    texts, labels = list(texts), list(labels)
    for chosen, pool, forced in ((biased, in_group, True), (contrast, others, False)):
        for i, name in zip(chosen, rng.choice(pool, size=len(chosen))):
            texts[i] = spec.template.replace(PERSON, str(name)).replace("{text}", texts[i])
            if forced:
                labels[i] = target
    return texts, labels, {"biased_examples": int(len(biased)), "contrast_examples": int(len(contrast)),
                           "labels_changed": changed}
