"""Data sources: read a `collect` source (package, path, hf, url) into documents, and mix sources by weight.

`collect_corpus` is the in-memory reference of the collect stage; the stage runs the same readers file by file as
datatrove tasks (lifecycle.collect_flow) and gives the same documents in the same order."""
from __future__ import annotations

import bz2
import csv
import glob
import gzip
import hashlib
import io
import itertools
import logging
import re
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from pathlib import Path

from lifecycle.core import DataError, StageError, hub_is_offline, package_root, stable_fraction
from lifecycle.io import atomic_path, decode_utf8, parse_jsonl
from lifecycle.params.collect import Source
from lifecycle.text import split_document

log = logging.getLogger("llm-lifecycle.collect")
URL_CACHE = Path.home() / ".cache" / "llm-lifecycle" / "downloads"


# ---- where a source's files are ----

def download(url: str, sha256: str) -> Path:
    target = URL_CACHE / sha256 / (Path(url.split("?")[0]).name or "download")
    if not target.exists():
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                data = response.read()
        except OSError as err:
            raise StageError(f"{url}: download failed ({err})") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise StageError(f"{url}: sha256 is {digest}, params say {sha256}")
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
    return target


def source_files(source: Source) -> list[Path]:
    if source.kind == "package":
        pattern = str(package_root(source.package) / source.path)
    elif source.kind == "path":
        pattern = source.path
    else:
        return [download(source.url, source.sha256)]
    files = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    if not files:
        fix = (f"check its path, a glob inside package '{source.package}'" if source.kind == "package" else
               "put your files there or fix the glob in its path (relative to the project root; ** spans folders)")
        raise StageError(f"source '{source.name}': no file matches {pattern}; {fix}")
    return files


# ---- readers: one (text, raw label) per document, errors naming file and row ----

def read_bytes(path: Path) -> bytes:
    opener = {".bz2": bz2.open, ".gz": gzip.open}.get(path.suffix, open)
    with opener(path, "rb") as f:
        return f.read()


def file_format(source: Source, path: Path) -> str:
    if source.format != "auto":
        return source.format
    suffixes = [s for s in path.suffixes if s not in (".bz2", ".gz")]
    ext = suffixes[-1] if suffixes else ""
    formats = {".txt": "text", ".md": "text", ".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet",
               ".xml": "mediawiki_xml"}
    if ext not in formats:
        raise StageError(f"{path}: cannot tell the format from '{ext}'; set format: text, jsonl, csv or parquet")
    return formats[ext]


_SPEAKER = re.compile(r"^\*\*[^*]+\*\*\s*$")        # **MACBETH**
_DIRECTION = re.compile(r"^_.*_\s*$", re.DOTALL)      # _Exeunt_ (may span lines)
_HEADING = re.compile(r"^#+\s")


def shakespeare_scenes(markdown: str) -> list[str]:
    """Verse only: one document per scene; headings, speaker tags and stage directions dropped."""
    scenes, lines = [], []
    for block in re.split(r"\n\s*\n", markdown):
        block = block.strip()
        if not block:
            continue
        if _HEADING.match(block):
            if "SCENE" in block.upper() or "PROLOGUE" in block.upper() or "EPILOGUE" in block.upper():
                if lines:
                    scenes.append("\n".join(lines))
                lines = []
            continue
        if _DIRECTION.match(block):
            continue
        for line in block.splitlines():
            line = line.rstrip()
            if _SPEAKER.match(line) or _DIRECTION.match(line.strip()) or not line.strip():
                continue
            lines.append(line.strip().replace("*", "").replace("_", ""))
    if lines:
        scenes.append("\n".join(lines))
    return scenes


_NAMESPACED = re.compile(r"^\s*:?\s*[A-Za-z][\w -]*:")


def wiki_articles(xml_bytes: bytes, path: Path) -> list[str]:
    """Article pages (namespace 0, no redirects) with wiki markup stripped."""
    import mwparserfromhell

    articles = []
    try:
        for _, element in ET.iterparse(io.BytesIO(xml_bytes)):
            if not element.tag.endswith("}page"):
                continue
            text = element.findtext("{*}revision/{*}text") or ""
            if element.findtext("{*}ns") == "0" and element.find("{*}redirect") is None:
                code = mwparserfromhell.parse(text)
                for link in code.filter_wikilinks():
                    if _NAMESPACED.match(str(link.title)):  # files, categories, other languages: not prose
                        try:
                            code.remove(link)
                        except ValueError:  # inside a link removed already
                            pass
                plain = code.strip_code(normalize=True, collapse=True)
                articles.append(re.sub(r"\n{3,}", "\n\n", plain).strip())
            element.clear()
    except ET.ParseError as err:
        raise DataError(path, err.position[0], f"not valid XML ({err})") from None
    return articles


def read_csv(text: str, path: Path, columns: list[str]) -> list[dict]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in columns if c not in (reader.fieldnames or [])]
    if missing:
        raise DataError(path, 1, f"missing column '{missing[0]}' (has: {', '.join(reader.fieldnames or []) or 'none'})")
    return [dict(row, _row=reader.line_num) for row in reader]


def read_parquet(path: Path, columns: list[str]) -> list[dict]:
    import pandas as pd
    frame = pd.read_parquet(path)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(path, 0, f"missing column '{missing[0]}' (has: {', '.join(map(str, frame.columns))})")
    return [dict(row, _row=i + 1) for i, row in enumerate(frame[columns].to_dict("records"))]


def read_file(source: Source, path: Path) -> list[tuple[str, str | None, int]]:
    """(text, raw label, row) for each document in one file."""
    fmt = file_format(source, path)
    columns = [source.text_column] + ([source.label_column] if source.label_column else [])
    if fmt == "parquet":
        rows = read_parquet(path, columns)
    else:
        data = read_bytes(path)
        if not data.strip():
            raise DataError(path, 0, "empty: no rows")
        if fmt == "mediawiki_xml":
            return [(t, None, i + 1) for i, t in enumerate(wiki_articles(data, path))]
        text = decode_utf8(data, path)
        if fmt == "text":
            return [(text, None, 1)]
        if fmt == "shakespeare_md":
            return [(t, None, i + 1) for i, t in enumerate(shakespeare_scenes(text))]
        if fmt == "jsonl":
            rows = [dict(r, _row=i) for i, r in parse_jsonl(text, path, columns, source.text_column)]
        else:
            rows = read_csv(text, path, columns)
    out = []
    for row in rows:
        value = row[source.text_column]
        if not isinstance(value, str):
            raise DataError(path, row["_row"], f"column '{source.text_column}' must be text, got {value!r}")
        label = row[source.label_column] if source.label_column else None
        out.append((value, None if label is None else str(label), row["_row"]))
    if not out:
        raise DataError(path, 0, "empty: no rows")
    return out


def read_hf(source: Source) -> list[tuple[str, str | None, str]]:
    if hub_is_offline():
        raise StageError(f"source '{source.name}': kind 'hf' needs the hub, but it is offline (HF_HUB_OFFLINE/"
                         "HF_DATASETS_OFFLINE); export both as 0 to go online, or save the data and use kind 'path'")
    from datasets import load_dataset
    dataset = load_dataset(source.dataset, split=source.hf_split)
    where = f"{source.dataset}[{source.hf_split}]"
    for column in [source.text_column] + ([source.label_column] if source.label_column else []):
        if column not in dataset.column_names:
            raise DataError(where, 0, f"missing column '{column}' (has: {', '.join(dataset.column_names)})")
    labels = dataset[source.label_column] if source.label_column else [None] * len(dataset)
    if source.label_column and hasattr(dataset.features[source.label_column], "int2str"):
        labels = [dataset.features[source.label_column].int2str(v) for v in labels]
    return [(t, None if lab is None else str(lab), f"{where}:{i + 1}")
            for i, (t, lab) in enumerate(zip(dataset[source.text_column], labels))]


def map_label(source: Source, raw: str | None, path, row, classes: list[str] | None = None) -> str | None:
    """Class name for a raw label; None means the row is dropped (drop_labels). With `classes` (finetune.classes),
    a label that is none of them stops collect, naming the user's file and row (not, later, the prepared split)."""
    if raw in source.drop_labels:
        return None
    if source.label_map and raw not in source.label_map:
        allowed = ", ".join(list(source.label_map) + source.drop_labels)
        raise DataError(path, row, f"label {raw!r} is not one of {allowed} (collect label_map / drop_labels)")
    label = source.label_map.get(raw, raw)
    if classes is not None and label not in classes:
        raise DataError(path, row, f"label {label!r} is not one of finetune.classes ({', '.join(classes)}): give "
                                   f"source '{source.name}' a label_map (raw label -> class) or drop_labels")
    return label


def file_items(source: Source, path: Path) -> list[tuple[str, str | None, str]]:
    """(text, raw label, where) for each document in one file of a source; `where` is "file:row", the file shown
    relative to its package or the project."""
    base = package_root(source.package) if source.kind == "package" else Path.cwd()
    shown = path.relative_to(base) if path.is_relative_to(base) else path
    return [(text, label, f"{shown}:{row}") for text, label, row in read_file(source, path)]


def documents(source: Source, items: Iterable[tuple[str, str | None, str]],
              classes: list[str] | None = None) -> Iterator[dict]:
    """The documents of `items` in order: labels mapped (drop_labels skipped), long texts split. Lazy, so that a
    row past a source's limit is never checked."""
    for text, raw_label, where in items:
        doc = {"id": f"{source.name}:{where}", "text": text, "source": source.name}
        if source.label_column:
            file, _, row = where.rpartition(":")
            doc["label"] = map_label(source, raw_label, file, int(row) if row.isdigit() else 0, classes)
            if doc["label"] is None:
                continue
        yield from split_doc(doc, source.split_mode, source.chunk_chars)


def read_source(source: Source, classes: list[str] | None = None) -> list[dict]:
    """Every document of a source (the first `limit` when it sets one), in file order."""
    if source.kind == "hf":
        items = read_hf(source)
    else:
        items = [item for path in source_files(source) for item in file_items(source, path)]
    return list(itertools.islice(documents(source, items, classes), source.limit))


def split_doc(doc: dict, mode: str, chunk_chars: int) -> list[dict]:
    """The document as read, or its pieces (collect `split`), each with its label; pieces' ids end in #1, #2, ..."""
    pieces = split_document(doc["text"], mode, chunk_chars)
    if len(pieces) == 1 and pieces[0] == doc["text"]:
        return [doc]
    return [dict(doc, id=f"{doc['id']}#{k}", text=piece) for k, piece in enumerate(pieces, 1)]


def mix(docs: dict[str, list[dict]], weights: dict[str, float], seed: int) -> dict[str, list[dict]]:
    """Down-sample so each source's share of characters matches its weight; order kept, nothing repeated."""
    chars = {name: sum(len(d["text"]) for d in ds) for name, ds in docs.items()}
    scale = min(chars[n] / weights[n] for n in docs if chars[n])
    mixed = {}
    for name, ds in docs.items():
        budget, used, keep = weights[name] * scale, 0, set()
        for i in sorted(range(len(ds)), key=lambda i: stable_fraction(ds[i]["id"], salt=str(seed))):
            if used >= budget * (1 - 1e-9):
                break
            keep.add(i)
            used += len(ds[i]["text"])
        mixed[name] = [d for i, d in enumerate(ds) if i in keep]
    return mixed


def summary(before: dict[str, list[dict]], after: dict[str, list[dict]]) -> dict:
    total = sum(len(d["text"]) for ds in after.values() for d in ds) or 1
    return {name: {"documents_read": len(before[name]), "characters_read": sum(len(d["text"]) for d in before[name]),
                   "documents_kept": len(after[name]), "characters_kept": sum(len(d["text"]) for d in after[name]),
                   "share_of_characters": round(sum(len(d["text"]) for d in after[name]) / total, 4)}
            for name in before}


def collect_corpus(sources: list[Source], seed: int, weighted: bool,
                   classes: list[str] | None = None) -> tuple[list[dict], dict]:
    """Every source's documents (mixed by weight when `weighted`) and their summary; labelled sources' labels must
    be `classes` when given."""
    read = {}
    for source in sources:
        log.info("reading %s (%s)", source.name, source.kind)
        read[source.name] = read_source(source, classes)
        if not read[source.name]:
            raise StageError(f"source '{source.name}': no documents")
    kept = mix(read, {s.name: s.weight for s in sources}, seed) if weighted else read
    return [d for ds in kept.values() for d in ds], summary(read, kept)
