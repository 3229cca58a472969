"""Outputs written atomically, and user data read with errors that name the file and the row."""
from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from lifecycle.core import DataError, StageError

# ---- atomic outputs: a failed or killed stage never leaves a half-written output ----

@contextlib.contextmanager
def atomic_path(path: str | Path, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; on success it replaces `path`, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        tmp.chmod(0o755)
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        tmp.chmod(0o644)  # mkstemp's 0600 would make outputs unreadable to others
    try:
        yield tmp
        replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def restored_on_failure(path: str | Path) -> Iterator[None]:
    """For a stage that replaces an output (atomic_path) and then checks or measures it: when the block fails, the
    output is put back as it was before (or removed, if there was none), so that a failed stage leaves the previous
    output, not an unchecked new one beside the previous reports. What is kept meanwhile is a hard-linked copy (no
    bytes copied: atomic_path replaces files, it never writes into them). A copy left by a killed run (kill -9
    skips the clean-up) is removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.kept.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    kept = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".kept.tmp", dir=path.parent))
    try:
        if path.is_dir():
            shutil.copytree(path, kept / path.name, symlinks=True, copy_function=os.link)
        yield
    except BaseException:
        if (kept / path.name).is_dir():
            replace(kept / path.name, path)
        elif path.is_dir():
            shutil.rmtree(path)
        raise
    finally:
        shutil.rmtree(kept, ignore_errors=True)


def replace(new: Path, path: Path) -> None:
    """Put `new` at `path`. A file is replaced in one rename; a directory is swapped in two (the previous one is
    moved aside first, and put back if the second rename fails), so `path` is never half-written."""
    if not (path.is_dir() and not path.is_symlink()):
        if new.is_dir() and (path.exists() or path.is_symlink()):
            path.unlink()
        os.replace(new, path)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old.tmp", dir=path.parent))
    os.replace(path, aside / path.name)
    try:
        os.replace(new, path)
    except BaseException:
        os.replace(aside / path.name, path)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def write_json(path: str | Path, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    """Write records one JSON object a line (into an already-temporary location); return the count."""
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


# ---- reading user data: every problem names the file and the row ----

def decode_utf8(data: bytes, path: str | Path) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        row = data.count(b"\n", 0, err.start) + 1
        raise DataError(path, row, f"not valid UTF-8 (byte 0x{data[err.start]:02x} at offset {err.start})") from None


def parse_jsonl(text: str, path: str | Path, required: Iterable[str] = ("text",),
                text_column: str | None = "text") -> list[tuple[int, dict]]:
    """(row, record) for each non-blank line; every problem names the file and the row."""
    records = []
    for row, line in enumerate(text.split("\n"), start=1):  # not splitlines: U+0085 etc. are text
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(path, row, f"not valid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(record, dict):
            raise DataError(path, row, f"expected a JSON object, got {type(record).__name__}")
        for column in required:
            if column not in record:
                raise DataError(path, row, f"missing column '{column}' (has: {', '.join(record) or 'none'})")
        if text_column is not None and not isinstance(record[text_column], str):
            raise DataError(path, row, f"column '{text_column}' must be text, got {record[text_column]!r}")
        records.append((row, record))
    if not records:
        raise DataError(path, 0, "empty: no rows")
    return records


def shards(path: str | Path) -> list[Path]:
    """The files of a sharded folder (its `*.jsonl`, in name order: the corpus order), or the one file `path`."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.jsonl") if p.is_file())
        if not files:
            raise StageError(f"{path}: no *.jsonl shard in the folder (run the stage that writes it: dvc repro)")
        return files
    if not path.is_file():
        raise StageError(f"{path}: no such file or folder (run the stage that writes it first: dvc repro)")
    return [path]


def read_jsonl(path: str | Path, required: Iterable[str] = ("text",), text_column: str | None = "text") -> list[dict]:
    """The records of a .jsonl file, or of every shard of a folder (data/prepared/<corpus>/<split>/) in order."""
    return [record for file in shards(path)
            for _, record in parse_jsonl(decode_utf8(file.read_bytes(), file), file, tuple(required), text_column)]
