"""Labelled examples: texts and class ids of a prepared split, every label checked against the classes."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lifecycle.core import DataError, StageError
from lifecycle.io import read_jsonl

FINETUNE_DATA = Path("data/prepared/finetune")


def labelled(split: str, classes: list[str], directory: Path = FINETUNE_DATA) -> tuple[list[str], list[int]]:
    """Texts and class ids of a split; a label outside `classes` names the file and row."""
    path = directory / f"{split}.jsonl"
    records = read_jsonl(path, ("text", "label"))
    index = {c: i for i, c in enumerate(classes)}
    for row, record in enumerate(records, start=1):
        if record["label"] not in index:
            raise DataError(path, row,
                            f"label {record['label']!r} is not one of finetune.classes ({', '.join(classes)})")
    return [r["text"] for r in records], [index[r["label"]] for r in records]


def check_every_class_present(labels: list[int], classes: list[str], path: Path) -> None:
    counts = np.bincount(labels, minlength=len(classes))
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty:
        raise StageError(f"{path}: class {empty[0]!r} of finetune.classes has no examples")
