"""The `collect` section: the sources of the pretraining and fine-tuning corpora."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from lifecycle.params.base import Section, at_least, positive


class Source(Section):
    """One input of a corpus. Which fields are needed depends on `kind`."""
    name: str = Field(description="names the source in reports and in each document's `source`")
    kind: Literal["package", "path", "hf", "url"]
    package: Optional[str] = Field(None, description="kind package: the installed, pinned package holding the file")
    path: Optional[str] = Field(None, description="package: glob inside the package; path: local file or glob")
    dataset: Optional[str] = Field(None, description="kind hf: the datasets hub name")
    hf_split: str = Field("train", description="kind hf: which split to read")
    url: Optional[str] = None
    sha256: Optional[str] = Field(None, description="kind url: required checksum of the download")
    format: Literal["auto", "text", "jsonl", "csv", "parquet", "shakespeare_md", "mediawiki_xml"] = "auto"
    text_column: str = "text"
    label_column: Optional[str] = Field(None, description="labelled corpora: the column holding the label")
    label_map: dict[str, str] = Field(default_factory=dict, description="raw label -> class name")
    drop_labels: list[str] = Field(default_factory=list, description="raw labels whose rows are skipped")
    weight: positive() = Field(1.0, description="share of the mixture's characters (pretraining)")
    limit: Optional[at_least(1)] = Field(None, description="keep at most this many documents (smoke tests)")

    @model_validator(mode="after")
    def _fields_for_kind(self):
        needs = {"package": ("package", "path"), "path": ("path",), "hf": ("dataset",), "url": ("url", "sha256")}
        for field in needs[self.kind]:
            if getattr(self, field) is None:
                raise ValueError(f"kind '{self.kind}' needs '{field}'")
        if self.sha256 is not None and not (len(self.sha256) == 64 and all(c in "0123456789abcdef" for c in self.sha256)):
            raise ValueError(f"sha256 = {self.sha256!r}: must be 64 lowercase hex digits")
        return self


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
        for source in self.finetune:
            if source.label_column is None:
                raise ValueError(f"finetune source '{source.name}' needs 'label_column'")
        return self
