"""A corpus through the prepare steps: normalise, filter, deduplicate, scrub PII and split by a stable hash.

Every step is counted per source (documents and characters in and out), so a reviewer sees what it did.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from lifecycle.core import stable_fraction
from lifecycle.dedup import exact_key, near_duplicates
from lifecycle.params.prepare import Filters, PrepareParams
from lifecycle.pii import scrub_pii
from lifecycle.text import FILTERS, normalize, quality_failure

SPLITS = ("train", "validation", "test")


def split_of(text: str, validation: float, test: float) -> str:
    """Fixed by the text alone, so a document never changes split when others are added or removed."""
    x = stable_fraction(text, salt="split")
    return "test" if x < test else "validation" if x < test + validation else "train"


# ---------------------------------------------------------------- the pipeline

@dataclass
class Tally:
    """Documents and characters in and out of each step, per source (every source at every step)."""
    sources: list[str]
    steps: dict

    @classmethod
    def new(cls, docs: list[dict]) -> Tally:
        sources = sorted({d["source"] for d in docs})
        return cls(sources, {s: {} for s in sources})

    def record(self, step: str, before: list[dict], after: list[dict]) -> None:
        for source in self.sources:
            b = [d for d in before if d["source"] == source]
            a = [d for d in after if d["source"] == source]
            self.steps[source][step] = {
                "documents_in": len(b), "documents_out": len(a),
                "characters_in": sum(len(d["text"]) for d in b), "characters_out": sum(len(d["text"]) for d in a)}


def prepare_corpus(docs: list[dict], filters: Filters, p: PrepareParams, seed: int) -> tuple[dict, dict]:
    """Returns ({split: docs}, report). Pure: the same input and params give the same output."""
    tally = Tally.new(docs)
    normalized = [dict(d, text=normalize(d["text"], p.normalization)) for d in docs]
    tally.record("normalize", docs, normalized)

    docs = normalized
    failures = [quality_failure(d["text"], filters) for d in docs]
    for name in FILTERS:
        kept = [(d, failure) for d, failure in zip(docs, failures) if failure != name]
        tally.record(f"filter_{name}", docs, [d for d, _ in kept])
        docs, failures = [d for d, _ in kept], [failure for _, failure in kept]

    if p.dedup.exact:
        seen, kept = set(), []
        for d in docs:
            key = exact_key(d["text"])
            if key not in seen:
                seen.add(key)
                kept.append(d)
        tally.record("dedup_exact", docs, kept)
        docs = kept
    if p.dedup.near.enabled:
        near = p.dedup.near
        dropped = set(near_duplicates([d["text"] for d in docs], near.threshold, near.num_perm, near.shingle_size,
                                      seed))
        kept = [d for i, d in enumerate(docs) if i not in dropped]
        tally.record("dedup_near", docs, kept)
        docs = kept

    pii: Counter = Counter()
    splits: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for d in docs:
        text, counts = scrub_pii(d["text"], p.pii)
        pii.update(counts)
        splits[split_of(d["text"], p.split.validation, p.split.test)].append(dict(d, text=text))
    report = {
        "documents_in": len(normalized), "documents_out": len(docs),
        "characters_in": sum(len(d["text"]) for d in normalized),
        "characters_out": sum(len(d["text"]) for ds in splits.values() for d in ds),
        "sources": tally.steps,
        "duplicates_removed": {kind: sum(s.get(f"dedup_{kind}", {}).get("documents_in", 0)
                                         - s.get(f"dedup_{kind}", {}).get("documents_out", 0)
                                         for s in tally.steps.values()) for kind in ("exact", "near")},
        "pii_replaced": {kind: pii.get(kind, 0) for kind in ("email", "phone", "ip", "credit_card")},
        "split": {s: {"documents": len(ds), "characters": sum(len(d["text"]) for d in ds)} for s, ds in splits.items()},
    }
    return splits, report


def length_histogram(splits: dict[str, list[dict]], edges: list[int]) -> list[dict]:
    """Documents per length bin (words); a last bin up to the longest document holds any beyond the edges."""
    lengths = [len(d["text"].split()) for docs in splits.values() for d in docs]
    edges = sorted(set(edges))
    if lengths and max(lengths) > edges[-1]:
        edges.append(max(lengths))
    counts = Counter(next(e for e in edges if n <= e) for n in lengths)
    return [{"max_words": e, "documents": counts.get(e, 0)} for e in edges]
