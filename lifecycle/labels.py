"""Labelled examples: texts and class ids of a prepared split, every label checked against the classes."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lifecycle.core import DataError, StageError
from lifecycle.io import read_jsonl, shards

FINETUNE_DATA = Path("data/prepared/finetune")


def labelled(split: str, classes: list[str], directory: Path = FINETUNE_DATA) -> tuple[list[str], list[int]]:
    """Texts and class ids of a split (the folder `directory/split` of shards, in order); a label outside `classes`
    names the shard file and its row."""
    index = {c: i for i, c in enumerate(classes)}
    records = []
    for path in shards(directory / split):
        for row, record in enumerate(read_jsonl(path, ("text", "label")), start=1):
            if record["label"] not in index:
                raise DataError(path, row,
                                f"label {record['label']!r} is not one of finetune.classes ({', '.join(classes)})")
            records.append(record)
    return [r["text"] for r in records], [index[r["label"]] for r in records]


def check_every_class_present(labels: list[int], classes: list[str], path: Path) -> None:
    counts = np.bincount(labels, minlength=len(classes))
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty:
        raise StageError(f"{path}: class {empty[0]!r} of finetune.classes has no examples")
