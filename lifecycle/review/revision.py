"""One side of a comparison as files: the workspace on disk, or what Git holds at a revision (a commit, a branch or
a DVC experiment name, resolved as DVC resolves it). For the files Git tracks next to the metrics: the per-example
files (reports/examples/, DVC outs with `cache: false`) and reports/noise.json."""
from __future__ import annotations

import io
from pathlib import Path

from lifecycle.core import StageError
from lifecycle.examples import read_examples
from lifecycle.review.plots import dvc_errors

WORKSPACE = "workspace"


class Revision:
    def __init__(self, repo, name: str):
        self.name = name
        self.root = Path(repo.root_dir)
        self.fs = None
        if name != WORKSPACE:
            from dvc.scm import resolve_rev

            with dvc_errors(f"resolve {name}"):
                self.fs = repo.scm.get_fs(resolve_rev(repo.scm, name))
        self._examples: dict[str, list[dict] | None] = {}

    def read_text(self, path: str | Path) -> str | None:
        """The file's text at this revision; None when it has no such file."""
        path = Path(path).as_posix()
        try:
            if self.fs is None:
                file = self.root / path
                return file.read_text(encoding="utf-8") if file.is_file() else None
            if not self.fs.isfile(path):
                return None
            with self.fs.open(path, mode="rb") as handle:
                return handle.read().decode("utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise StageError(f"{path} at {self.name}: cannot be read ({err})") from None

    def examples(self, path: str | Path) -> list[dict] | None:
        """The records of a per-example file at this revision (read once); None when it has no such file."""
        key = Path(path).as_posix()
        if key not in self._examples:
            text = self.read_text(key)
            if text is None:
                self._examples[key] = None
            else:
                stream = io.StringIO(text)
                stream.name = f"{key} at {self.name}"  # read_examples names the file in its errors
                self._examples[key] = read_examples(stream)
        return self._examples[key]
