"""Texts of your own to score: a .txt or .md file is one document; a .jsonl file or a folder of .jsonl shards
holds one document per row. Every problem is one line naming the file and the row.

The evaluate stage scores the texts named in params.yaml `evaluate.texts`; each path must be one of its deps in
dvc.yaml (or lie under one), so that DVC re-runs evaluate when the text changes.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from lifecycle.core import DataError, StageError
from lifecycle.io import decode_utf8, parse_jsonl

DOCUMENT_SUFFIXES = (".txt", ".md")  # a whole file is one document
DVC_YAML = Path("dvc.yaml")


def read_texts(path: str | Path, text_column: str = "text") -> tuple[list[str], list[str]]:
    """(ids, texts) of a text file or of the rows of a .jsonl file or folder of shards, in order. A file's id is
    its name; a row's is its `id` column, or `<shard name>:<row>` when it has none."""
    path = Path(path)
    if not path.exists():
        raise StageError(f"{path}: no such file or folder")
    if path.is_file() and path.suffix.lower() in DOCUMENT_SUFFIXES:
        text = decode_utf8(path.read_bytes(), path)
        if not text.strip():
            raise DataError(path, 0, "empty: no text")
        return [path.name], [text]
    if path.is_file() and path.suffix.lower() != ".jsonl":
        raise StageError(f"{path}: not a .txt, .md or .jsonl file, nor a folder of .jsonl shards")
    files = sorted(p for p in path.glob("*.jsonl") if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise StageError(f"{path}: a folder without .jsonl files (put one document per row in *.jsonl shards)")
    ids, texts, row_of = [], [], {}
    for file in files:
        for row, record in parse_jsonl(decode_utf8(file.read_bytes(), file), file, (text_column,), text_column):
            if not record[text_column].strip():
                raise DataError(file, row, f"column '{text_column}' is empty")
            doc_id = str(record["id"]) if "id" in record else f"{file.name}:{row}"
            if doc_id in row_of:
                raise DataError(file, row, f"id {doc_id!r} appears twice (first at {row_of[doc_id]})")
            row_of[doc_id] = f"{file.name} row {row}"
            ids.append(doc_id)
            texts.append(record[text_column])
    return ids, texts


def _normal(path: str) -> str:
    return os.path.normpath(path).replace(os.sep, "/")


def stage_deps(stage: str, dvc_yaml: Path = DVC_YAML) -> list[str]:
    """The deps of `stage` in dvc.yaml, as normalised paths."""
    if not dvc_yaml.is_file():
        raise StageError(f"{dvc_yaml}: not found (run from the project root)")
    stages = (yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}).get("stages", {})
    if stage not in stages:
        raise StageError(f"{dvc_yaml}: no stage '{stage}'")
    return [_normal(str(dep)) for dep in stages[stage].get("deps", [])]


def check_tracked(texts, key: str = "evaluate.texts", stage: str = "evaluate", dvc_yaml: Path = DVC_YAML) -> None:
    """Each text's path is a dep of `stage` (or lies under a folder dep) and exists; else one line naming the
    params key and the path."""
    if not texts:
        return
    deps = stage_deps(stage, dvc_yaml)
    for i, text in enumerate(texts):
        where = f"params.yaml: {key}[{i}].path = {text.path!r}"
        path = _normal(text.path)
        if not any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps):
            raise StageError(f"{where} is not a dep of the {stage} stage in {dvc_yaml}: add it to its deps so DVC "
                             f"re-runs {stage} when the text changes")
        if not Path(text.path).exists():
            raise StageError(f"{where}: no such file or folder")


def named_texts(texts, key: str = "evaluate.texts", stage: str = "evaluate") -> dict[str, tuple[list[str], list[str]]]:
    """name -> (ids, texts) of params' named texts (NamedText), each checked to be a DVC dep of `stage` first."""
    check_tracked(texts, key, stage)
    return {text.name: read_texts(text.path, text.text_column) for text in texts}
