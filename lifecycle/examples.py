"""Per-example results beside each reported metric, so two runs can be compared example by example (paired
significance tests) rather than only by their averages.

The convention: the metric `reports/<stem>.json:<prefix>.<statistic>` is computed from the file
`reports/examples/<stem>/<prefix>.jsonl` (e.g. reports/eval.json:classifier.accuracy <->
reports/examples/eval/classifier.jsonl; reports/compress.json:lm.int8_dynamic.bits_per_byte <->
reports/examples/compress/lm.int8_dynamic.jsonl). One JSON record a line, sorted by id:
- a classifier's: {"id", "label" (index into finetune.classes), "probabilities" (one per class; predicted = argmax)};
- a language model's: {"id", "nll" (nats summed over the document's scored tokens), "tokens", "bytes" (UTF-8 bytes
  of the text scored)}.
A stage writes its whole folder at once (`replaced_folder`), so the files always come from one run.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

from lifecycle.core import DataError, StageError
from lifecycle.io import atomic_path, decode_utf8, parse_jsonl, read_jsonl, write_jsonl

EXAMPLES = Path("reports/examples")
DIGITS = 6


def examples_path(stem: str, prefix: str, root: Path = EXAMPLES) -> Path:
    """The examples file of the metrics `reports/<stem>.json:<prefix>.*`."""
    return Path(root) / stem / f"{prefix}.jsonl"


def metric_examples_path(report: str | Path, key: str, root: Path = EXAMPLES) -> Path:
    """The examples file a metric was computed from: ("reports/eval.json", "classifier.accuracy") ->
    reports/examples/eval/classifier.jsonl."""
    prefix, dot, _statistic = key.rpartition(".")
    if not dot:
        raise StageError(f"{report}:{key}: a metric key needs a prefix and a statistic (e.g. classifier.accuracy)")
    return examples_path(Path(report).stem, prefix, root)


def example_file(folder: Path, prefix: str) -> Path:
    """The file of `prefix` inside a folder being written (`replaced_folder`'s)."""
    return Path(folder) / f"{prefix}.jsonl"


@contextlib.contextmanager
def replaced_folder(stem: str, root: Path = EXAMPLES) -> Iterator[Path]:
    """A temporary folder that replaces reports/examples/<stem> as a whole when the block succeeds; write each file
    as `folder / f"{prefix}.jsonl"`."""
    with atomic_path(Path(root) / stem, directory=True) as folder:
        yield folder


def ids_and_texts(path: str | Path, required: Sequence[str] = ("text",)) -> tuple[list[str], list[str]]:
    """The `id` and `text` of every record of a prepared split (a .jsonl file, or a folder of shards), in corpus
    order."""
    records = read_jsonl(path, ("id", *required))
    return [str(record["id"]) for record in records], [record["text"] for record in records]


def _sorted_by_id(path: Path, ids: Sequence[str], columns: dict[str, Sequence]) -> list[dict]:
    for name, values in columns.items():
        if len(values) != len(ids):
            raise StageError(f"{path}: {len(ids)} ids but {len(values)} values of {name!r}")
    seen: set[str] = set()
    for row, example_id in enumerate(ids, start=1):
        if example_id in seen:
            raise DataError(path, row, f"id {example_id!r} appears twice: per-example results need unique ids")
        seen.add(example_id)
    records = [{"id": str(example_id)} | {name: values[i] for name, values in columns.items()}
               for i, example_id in enumerate(ids)]
    return sorted(records, key=lambda record: record["id"])


def write_classifier_examples(path: str | Path, ids: Sequence[str], labels: Sequence[int], probabilities) -> int:
    """One record per example: its true class index and the predicted probability of each class."""
    path = Path(path)
    columns = {"label": [int(label) for label in labels],
               "probabilities": [[round(float(p), DIGITS) for p in row] for row in probabilities]}
    return _write(path, _sorted_by_id(path, ids, columns))


def write_lm_examples(path: str | Path, ids: Sequence[str], nll, tokens, n_bytes) -> int:
    """One record per document: summed NLL (nats) of its scored tokens, their count and the text's UTF-8 bytes."""
    path = Path(path)
    columns = {"nll": [round(float(v), DIGITS) for v in nll], "tokens": [int(v) for v in tokens],
               "bytes": [int(v) for v in n_bytes]}
    return _write(path, _sorted_by_id(path, ids, columns))


def write_lm_scores(path: str | Path, ids: Sequence[str], per_document: dict) -> int:
    """`write_lm_examples` of scoring.language_model_scores' per-document arrays."""
    return write_lm_examples(path, ids, per_document["nll"], per_document["tokens"], per_document["bytes"])


def _write(path: Path, records: list[dict]) -> int:
    with atomic_path(path) as tmp:
        return write_jsonl(tmp, records)


def read_examples(source: str | Path | TextIO) -> list[dict]:
    """The records of an examples file: a path, or a text stream (such as a file at a git revision)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise StageError(f"{path}: no such examples file (run the stage that writes it: dvc repro)")
        return _parse(decode_utf8(path.read_bytes(), path), path)
    return _parse(source.read(), getattr(source, "name", "<examples stream>"))


def _parse(text: str, name) -> list[dict]:
    """Every record, each with an 'id' (an empty file has none)."""
    if not text.strip():
        return []
    return [record for _, record in parse_jsonl(text, name, required=("id",), text_column=None)]
