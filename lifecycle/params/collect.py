"""The `collect` section: the sources of the pretraining and fine-tuning corpora."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lifecycle.params.base import Section, at_least, between, cross_check, positive


class Source(Section):
    """One input of a corpus. Which fields are needed depends on `kind`."""
    name: str = Field(description="names the source in reports and in each document's `source`")
    kind: Literal["package", "path", "hf", "url"]
    package: str | None = Field(None, description="kind package: the installed, pinned package holding the file")
    path: str | None = Field(None, description="package: glob inside the package; path: local file or glob")
    dataset: str | None = Field(None, description="kind hf: the datasets hub name")
    hf_split: str = Field("train", description="kind hf: which split to read")
    url: str | None = None
    sha256: str | None = Field(None, description="kind url: required checksum of the download")
    format: Literal["auto", "text", "jsonl", "csv", "parquet", "shakespeare_md", "mediawiki_xml"] = "auto"
    text_column: str = "text"
    label_column: str | None = Field(None, description="labelled corpora: the column holding the label")
    label_map: dict[str, str] = Field(default_factory=dict, description="raw label -> class name")
    drop_labels: list[str] = Field(default_factory=list, description="raw labels whose rows are skipped")
    weight: positive() = Field(1.0, description="share of the mixture's characters (pretraining)")
    limit: at_least(1) | None = Field(None, description="keep at most this many documents (smoke tests)")
    licence: str | None = Field(None, description="the data's licence, shown with the source in the report and model "
                                                  "card (a source without one is listed as a limitation)")
    split: Literal["auto", "none", "paragraphs", "chunks"] = Field(
        "auto", description="none: a document per file, row, scene or article; paragraphs: per blank-line-separated "
                            "paragraph; chunks: longer documents cut into pieces of about chunk_chars, whole "
                            "paragraphs packed; auto: chunks without label_column, none with it")
    chunk_chars: between(100, 1_000_000, int) = Field(
        2000, description="split paragraphs and chunks: the most characters of a piece")

    @property
    def split_mode(self) -> str:
        """The `split` in effect: `auto` chunks pretraining text and keeps labelled rows whole."""
        if self.split != "auto":
            return self.split
        return "none" if self.label_column else "chunks"

    @model_validator(mode="after")
    def _fields_for_kind(self):
        needs = {"package": ("package", "path"), "path": ("path",), "hf": ("dataset",), "url": ("url", "sha256")}
        for field in needs[self.kind]:
            if getattr(self, field) is None:
                raise ValueError(f"kind '{self.kind}' needs '{field}'")
        if self.sha256 is not None and not (len(self.sha256) == 64
                                            and all(c in "0123456789abcdef" for c in self.sha256)):
            raise ValueError(f"sha256 = {self.sha256!r}: must be 64 lowercase hex digits")
        return self


# The folder of the user's own files: a DVC dependency of the collect stage, so that editing them re-runs it.
OWN_DATA = "data/own"


def _inside_own_data(path: str) -> bool:
    from pathlib import PurePosixPath
    parts = PurePosixPath(path).parts
    return not PurePosixPath(path).is_absolute() and ".." not in parts and parts[:2] == tuple(OWN_DATA.split("/")) \
        and len(parts) > 2


class CollectParams(Section):
    pretrain: list[Source] = Field(min_length=1)
    finetune: list[Source] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self):
        for corpus in ("pretrain", "finetune"):
            names = [s.name for s in getattr(self, corpus)]
            duplicated = sorted({n for n in names if names.count(n) > 1})
            if duplicated:
                raise ValueError(f"{corpus}: source names must be unique, repeated: {', '.join(duplicated)}")
        for corpus in ("pretrain", "finetune"):
            for i, source in enumerate(getattr(self, corpus)):
                if source.kind == "path" and not _inside_own_data(source.path):
                    raise ValueError(f"{corpus}[{i}].path = {source.path!r}: a path source must lie under {OWN_DATA}/ "
                                     "(the collect stage's DVC dependency: editing your files there re-runs it); "
                                     f"copy your files into {OWN_DATA}/ (commit them, or `dvc add` large ones)")
        for source in self.finetune:
            if source.label_column is None:
                raise ValueError(f"finetune source '{source.name}' needs 'label_column'")
        return self


@cross_check("collect", "finetune")
def label_map_gives_classes(collect, finetune) -> None:
    """A label_map names classes: checked before collect reads any row (the rows' own labels are checked there)."""
    for i, source in enumerate(collect.finetune):
        for raw, label in source.label_map.items():
            if label not in finetune.classes:
                raise ValueError(f"collect.finetune[{i}].label_map.{raw} = {label!r}: is not one of finetune.classes "
                                 f"({', '.join(finetune.classes)})")


@cross_check("collect", "prepare")
def chunks_fit_the_filters(collect, prepare) -> None:
    """A piece longer than prepare's max_chars would be cut by collect only to be dropped by prepare."""
    for corpus in ("pretrain", "finetune"):
        max_chars = prepare.filters[corpus].max_chars
        for i, source in enumerate(getattr(collect, corpus)):
            if source.split_mode != "none" and source.chunk_chars > max_chars:
                raise ValueError(f"collect.{corpus}[{i}].chunk_chars = {source.chunk_chars}: is above "
                                 f"prepare.filters.{corpus}.max_chars = {max_chars}, so prepare would drop its "
                                 f"pieces; lower chunk_chars or raise max_chars")
