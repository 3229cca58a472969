"""prepare as datatrove pipelines: the reference's steps (lifecycle.corpus.prepare_corpus) cut into tasks.

1. filter (tasks): data/raw/<corpus>/ shards -> normalise -> quality filters -> kept documents to
   <work>/filtered/<shard>.jsonl -> MinHash signatures (datatrove's stage 1), exact-key signatures and a sidecar
   per document (its corpus position, split hash, characters and source).
2. buckets: datatrove's MinhashDedupBuckets finds the pairs sharing a band (one task per band; one for exact keys).
3. plan (lifecycle.prepare_plan, this process): clusters keep their earliest document; split cut-offs by rank.
4. write (tasks): drop the removed, assign the split, scrub PII -> <out>/<split>/<shard>.jsonl.
Each task keeps its own counts in <work>/counts/<step>/<rank>.json; memory does not grow with the corpus.
"""
from __future__ import annotations

import json
import struct
from collections import Counter, defaultdict, deque
from pathlib import Path

import numpy as np
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.minhash import MinhashDedupSignature
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.word_tokenizers import WordTokenizer

from lifecycle.corpus import split_key
from lifecycle.dedup import exact_signature, minhash_config, shingle_hashes
from lifecycle.params.prepare import Filters, NearDedup, PrepareParams
from lifecycle.pii import scrub_pii
from lifecycle.text import FILTERS, normalize, quality_failure

SIDECAR = np.dtype([("position", "<u8"), ("split_key", "<u8"), ("characters", "<u4"), ("source", "<u2")])
EXAMPLES = 3
FILTER_INDEX = {name: k for k, name in enumerate(FILTERS)}


def position(shard: int, line: int) -> int:
    """A document's place in the corpus: shards in name order, lines in order."""
    return shard << 32 | line


def save_counts(work: Path, step: str, rank: int, counts: dict) -> None:
    folder = Path(work) / "counts" / step
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{rank:05d}.json").write_text(json.dumps(counts), encoding="utf-8")


class RawShards(JsonlReader):
    """data/raw/<corpus>/*.jsonl; each document knows its shard (file stem) and line. The steps count what they
    need, so datatrove's per-document length statistics are skipped (they cost more than reading here)."""

    def __init__(self, folder: str | Path, glob_pattern: str = "*.jsonl"):
        super().__init__(str(folder), glob_pattern=glob_pattern, compression=None, text_key="text", id_key="id",
                         add_file_path=False)

    def get_document_from_dict(self, data: dict, source_file: str, id_in_file: int):
        document = super().get_document_from_dict(data, source_file, id_in_file)
        document.metadata.setdefault("shard", source_file.removesuffix(".jsonl"))
        document.metadata.setdefault("line", id_in_file)
        return document

    def update_doc_stats(self, document) -> None:
        pass


class ShardWriter(JsonlWriter):
    """datatrove's JsonlWriter naming each file with `name(document)` (its shard, its split), without the template
    and per-document statistics, which cost more than the writing here. A shard belongs to one task."""

    def __init__(self, folder: str | Path, name, adapter):
        super().__init__(str(folder), output_filename="${rank}.jsonl", compression=None, adapter=adapter)
        self.name = name

    def write(self, document, rank: int = 0, **kwargs) -> None:
        self._write(self.adapter(document), self.output_mg.get_file(self.name(document)), "")


def filtered_name(document) -> str:
    return f"{document.metadata['shard']}.jsonl"


def prepared_name(document) -> str:
    return f"{document.metadata['split']}/{document.metadata['shard']}.jsonl"


class FilterStep(PipelineStep):
    """Normalise and apply the quality filters, counting documents and characters per source and step, with the
    first dropped documents of each (source, filter) kept as examples."""
    name = "normalise + quality filters"

    def __init__(self, filters: Filters, p: PrepareParams, work: Path, shards: list[str]):
        super().__init__()
        self.filters, self.p, self.work, self.shards = filters, p, str(work), {s: i for i, s in enumerate(shards)}

    def run(self, data, rank: int = 0, world_size: int = 1):
        raw: Counter = Counter()  # (source, 'raw' | 'normalized') -> characters
        stops: Counter = Counter()  # (source, index of the failing filter, or len(FILTERS) if none) -> documents
        stop_chars: Counter = Counter()
        examples: dict = defaultdict(list)
        for doc in data:
            source = doc.metadata["source"]
            raw[source, "raw"] += len(doc.text)
            doc.text = normalize(doc.text, self.p.normalization)
            raw[source, "normalized"] += len(doc.text)
            failure = quality_failure(doc.text, self.filters)
            k = len(FILTERS) if failure is None else FILTER_INDEX[failure]
            stops[source, k] += 1
            stop_chars[source, k] += len(doc.text)
            if failure is None:
                yield doc
            elif len(examples[f"{source}\t{failure}"]) < EXAMPLES:  # a task reads its documents in corpus order
                at = position(self.shards[doc.metadata["shard"]], doc.metadata["line"])
                examples[f"{source}\t{failure}"].append((at, doc.text[:2000]))
        save_counts(Path(self.work), "filter", rank, {"steps": filter_cells(raw, stops, stop_chars),
                                                      "examples": examples})


def filter_cells(raw: Counter, stops: Counter, stop_chars: Counter) -> dict:
    """source -> step -> [documents in, documents out, characters in, characters out] from where each document
    stopped: a filter's input is every document no earlier filter dropped."""
    cells: dict = {}
    for source in sorted({s for s, _ in raw}):
        documents = sum(stops[source, k] for k in range(len(FILTERS) + 1))
        chars = raw[source, "normalized"]
        cells[source] = {"normalize": [documents, documents, raw[source, "raw"], chars]}
        for k, name in enumerate(FILTERS):
            out, out_chars = documents - stops[source, k], chars - stop_chars[source, k]
            cells[source][f"filter_{name}"] = [documents, out, chars, out_chars]
            documents, chars = out, out_chars
    return cells


class WordSplitter(WordTokenizer):
    """Words as the reference splits them (no spaCy): runs of word characters, lower-cased by the caller."""

    def word_tokenize(self, text: str) -> list[str]:
        return text.split()

    def sent_tokenize(self, text: str) -> list[str]:
        return [text]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [(0, len(text))]


class Signatures(MinhashDedupSignature):
    """datatrove's MinHash stage 1 over our shingles (when near dedup is on), plus, per document in task order: an
    exact-key record in the last bucket (when exact dedup is on) and a sidecar record (position, split key,
    characters, source) for the plan."""
    name = "MinHash + exact signatures"

    def __init__(self, work: Path, near: NearDedup, seed: int, shards: list[str], exact: bool = True):
        super().__init__(output_folder=str(Path(work) / "signatures"), config=minhash_config(near, seed),
                         language=WordSplitter())
        self.work, self.shingle_size, self.exact, self.near = str(work), near.shingle_size, exact, near.enabled
        self.exact_bucket = self.config.num_buckets  # after the bands (minhash_config(..., exact=True))
        self.shards = {s: i for i, s in enumerate(shards)}

    @classmethod
    def for_reference(cls, near: NearDedup, seed: int) -> Signatures:
        signer = cls.__new__(cls)
        signer.config, signer._parameters, signer.shingle_size = minhash_config(near, seed), None, near.shingle_size
        signer.num_hashes = signer.config.num_buckets * signer.config.hashes_per_bucket
        return signer

    def get_shingles(self, text: str) -> np.ndarray:
        return shingle_hashes(text, self.shingle_size)

    def get_signature(self, shingles: np.ndarray) -> list[list[int]]:
        """datatrove's random (a, b) per hash, applied as multiply-shift hashing (a * x + b mod 2**64, a odd; the
        top 60 bits kept) instead of mod 2**61 - 1: the same Jaccard estimates (bias within 0.003 at 0.5, 0.8
        and 0.9 on 400 pairs each, as datatrove's), without a 64-bit division per shingle and hash (2.7x faster)."""
        a, b = self.parameters
        lowest = np.min(shingles * (a | np.uint64(1)) + b, axis=0) >> np.uint64(4)
        return lowest.reshape(-1, self.config.hashes_per_bucket).tolist()

    def run(self, data, rank: int = 0, world_size: int = 1):
        work = Path(self.work)
        for sub in ("sidecar", "sources"):
            (work / sub).mkdir(parents=True, exist_ok=True)
        sources: dict[str, int] = {}
        exact: list = []
        with open(work / "sidecar" / f"{rank:05d}.bin", "wb") as sidecar:
            def tap(docs):
                for i, doc in enumerate(docs):
                    at = position(self.shards[doc.metadata["shard"]], doc.metadata["line"])
                    source = sources.setdefault(doc.metadata["source"], len(sources))
                    sidecar.write(struct.pack("<QQIH", at, split_key(doc.text), len(doc.text), source))
                    if self.exact:
                        exact.append((*exact_signature(doc.text), *[0] * (self.config.hashes_per_bucket - 2), i))
                    yield doc
            if self.near:
                super().run(tap(data), rank, world_size)
            else:
                deque(tap(data), maxlen=0)
        if self.exact:
            self.write_exact(exact, rank)
        (work / "sources" / f"{rank:05d}.json").write_text(json.dumps(list(sources)), encoding="utf-8")

    def write_exact(self, exact: list, rank: int) -> None:
        """The exact keys as the last bucket's signature file, sorted as datatrove's bucket stage needs."""
        rows = self.config.hashes_per_bucket
        dtype = np.dtype([(f"h{k}", "<u8") for k in range(rows)] + [("doc", "<u4")])
        records = np.array([tuple(r) for r in exact], dtype=dtype)
        records.sort(order=list(dtype.names))
        folder = Path(self.work) / "signatures" / f"bucket_{self.exact_bucket:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{rank:05d}.minhash.sig").write_bytes(records.tobytes())


class FinalStep(PipelineStep):
    """Drop the documents the plan removed, assign each survivor its split, scrub PII; count what is written."""
    name = "dedup + split + PII"

    def __init__(self, p: PrepareParams, work: Path, shards: list[str], cutoffs: tuple):
        super().__init__()
        self.p, self.work, self.shards, self.cutoffs = p, str(work), {s: i for i, s in enumerate(shards)}, cutoffs

    def removed(self, shard: str) -> set[int]:
        path = Path(self.work) / "remove" / f"{shard}.npy"
        return set(np.load(path).tolist()) if path.exists() else set()

    def run(self, data, rank: int = 0, world_size: int = 1):
        counts = {"split": defaultdict(lambda: [0, 0]), "kept": defaultdict(lambda: [0, 0]), "pii": Counter(),
                  "words": Counter()}
        current, removed = None, set()
        for doc in data:
            if doc.metadata["shard"] != current:
                current = doc.metadata["shard"]
                removed = self.removed(current)
            if doc.metadata["line"] in removed:
                continue
            at = (split_key(doc.text), position(self.shards[current], doc.metadata["line"]))
            split = "test" if at < self.cutoffs[0] else "validation" if at < self.cutoffs[1] else "train"
            doc.text, found = scrub_pii(doc.text, self.p.pii)
            counts["pii"].update(found)
            for cell, key in ((counts["split"], split), (counts["kept"], doc.metadata["source"])):
                cell[key][0] += 1
                cell[key][1] += len(doc.text)
            counts["words"][len(doc.text.split())] += 1
            doc.metadata["split"] = split
            yield doc
        save_counts(Path(self.work), "final", rank, counts)


def intermediate(self, document) -> dict:
    """The filtered documents between the passes: text, id and metadata."""
    return {"id": document.id, "text": document.text, "metadata": document.metadata}


def prepared(self, document) -> dict:
    """A prepared document as the downstream stages read it: id, text, source[, label]."""
    record = {"id": document.id, "text": document.text, "source": document.metadata["source"]}
    if "label" in document.metadata:
        record["label"] = document.metadata["label"]
    return record
