"""A corpus through the prepare steps: normalise, filter, deduplicate, scrub PII and split by rank of a stable hash.

Every step is counted per source (documents and characters in and out), so a reviewer sees what it did.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass

from lifecycle.core import StageError
from lifecycle.dedup import exact_duplicates, near_duplicates
from lifecycle.params.prepare import Dedup, Filters, Pii, PrepareParams, Split
from lifecycle.pii import scrub_pii
from lifecycle.text import FILTERS, normalize, quality_failure

SPLITS = ("train", "validation", "test")


def split_key(text: str) -> int:
    """The split hash: the first 8 bytes of sha256('split' + text) as an integer (stable on every machine)."""
    return int.from_bytes(hashlib.sha256(("split" + text).encode("utf-8")).digest()[:8], "big")


def split_sizes(n: int, split: Split) -> tuple[int, int]:
    """(test, validation) documents of a corpus of n: n_x = max(min_documents, round(x * n)), train keeping its
    minimum."""
    least = split.min_documents
    n_test, n_validation = (max(least, round(share * n)) for share in (split.test, split.validation))
    while n - n_test - n_validation < least and max(n_test, n_validation) > least:  # train keeps its minimum
        n_test, n_validation = (n_test - 1, n_validation) if n_test >= n_validation else (n_test, n_validation - 1)
    return n_test, n_validation


def assign_splits(docs: list[dict], split: Split) -> dict[str, list[dict]]:
    """By the rank of a stable hash of the text (ties: the earlier document first): the lowest n_test documents go
    to test, the next n_validation to validation, the rest to train, each in input order. Adding a document moves
    at most the documents at a boundary; tiny corpora still get every split."""
    n_test, n_validation = split_sizes(len(docs), split)
    order = sorted(range(len(docs)), key=lambda i: (split_key(docs[i]["text"]), i))
    rank = {i: r for r, i in enumerate(order)}
    splits: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for i, d in enumerate(docs):
        r = rank[i]
        splits["test" if r < n_test else "validation" if r < n_test + n_validation else "train"].append(d)
    return splits


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


def quality_filter(docs: list[dict], filters: Filters, tally: Tally) -> tuple[list[dict], dict[str, list[dict]]]:
    """The documents passing every filter, and those each filter dropped (a document counts for its first failure)."""
    failures = [quality_failure(d["text"], filters) for d in docs]
    dropped = {}
    for name in FILTERS:
        dropped[name] = [d for d, failure in zip(docs, failures) if failure == name]
        kept = [(d, failure) for d, failure in zip(docs, failures) if failure != name]
        tally.record(f"filter_{name}", docs, [d for d, _ in kept])
        docs, failures = [d for d, _ in kept], [failure for _, failure in kept]
    return docs, dropped


def deduplicate(docs: list[dict], dedup: Dedup, seed: int, tally: Tally) -> list[dict]:
    """Exact, then near duplicates (lifecycle.dedup's rules): each cluster keeps its earliest document."""
    if dedup.exact:
        dropped = set(exact_duplicates([d["text"] for d in docs]))
        kept = [d for i, d in enumerate(docs) if i not in dropped]
        tally.record("dedup_exact", docs, kept)
        docs = kept
    if dedup.near.enabled:
        dropped = set(near_duplicates([d["text"] for d in docs], dedup.near, seed))
        kept = [d for i, d in enumerate(docs) if i not in dropped]
        tally.record("dedup_near", docs, kept)
        docs = kept
    return docs


def too_few_documents(corpus: str | None, read: int, left: int, steps: dict, least: int) -> str:
    """The error line of a corpus too small to split: how many survived, the step that dropped the most, the fixes."""
    dropped: Counter = Counter()
    for source_steps in steps.values():
        for step, counts in source_steps.items():
            dropped[step] += counts["documents_in"] - counts["documents_out"]
    step, most = max(dropped.items(), key=lambda item: item[1], default=("", 0))  # the earliest of equals
    name = corpus or "<corpus>"
    fixes = ["add text", f"split long files with collect.{name}[].split: chunks"]
    if most and step.startswith("filter_"):
        fixes.append(f"relax prepare.filters.{name}.{step.removeprefix('filter_')}")
    elif most:
        fixes.append("turn off prepare.dedup.exact" if step == "dedup_exact" else "raise prepare.dedup.near.threshold")
    if least > 1:
        fixes.append("lower prepare.split.min_documents")
    plural = "document" if left == 1 else "documents"
    why = f"; {step} dropped {most}" if most else ""
    return (f"prepare: {name}: {left} {plural} left after filters and dedup (of {read} read{why}): too few for "
            f"train, validation and test with at least {least} each (prepare.split.min_documents); "
            f"{', '.join(fixes[:-1])}, or {fixes[-1]}")


def drop_warnings(steps: dict, examples: dict[tuple[str, str], list[str]], share: float, pii: Pii) -> list[dict]:
    """Each (source, filter) dropping more than `share` of the source's documents, with up to 3 of them (scrubbed,
    cut to 120 characters). `examples[(source, filter)]` holds the first dropped texts in corpus order."""
    warnings = []
    for source in sorted(steps):
        read = steps[source]["normalize"]["documents_in"]
        for name in FILTERS:
            cell = steps[source][f"filter_{name}"]
            gone = cell["documents_in"] - cell["documents_out"]
            if read and gone / read > share:
                warnings.append({"source": source, "filter": name, "dropped": gone, "of": read,
                                 "share": round(gone / read, 4),
                                 "examples": [scrub_pii(t, pii)[0][:120] for t in examples[source, name][:3]]})
    return warnings


def drop_warning_line(corpus: str, warning: dict) -> str:
    """`prepare: finetune source 'reviews': filter_min_words dropped 4.1% (123 of 3000 documents), e.g. "..."; ...`"""
    example = f", e.g. {json.dumps(warning['examples'][0], ensure_ascii=False)}" if warning["examples"] else ""
    return (f"prepare: {corpus} source '{warning['source']}': filter_{warning['filter']} dropped "
            f"{warning['share']:.1%} ({warning['dropped']} of {warning['of']} documents){example}; "
            "see reports/data.json")


def prepare_corpus(docs: list[dict], filters: Filters, p: PrepareParams, seed: int,
                   corpus: str | None = None) -> tuple[dict, dict]:
    """Returns ({split: docs}, report). Pure: the same input and params give the same output. A corpus too small
    for every split raises StageError (naming `corpus`)."""
    tally = Tally.new(docs)
    normalized = [dict(d, text=normalize(d["text"], p.normalization)) for d in docs]
    tally.record("normalize", docs, normalized)
    docs, dropped = quality_filter(normalized, filters, tally)
    docs = deduplicate(docs, p.dedup, seed, tally)
    if len(docs) < 3 * p.split.min_documents:  # the fewest that assign_splits can give each split its minimum
        raise StageError(too_few_documents(corpus, len(normalized), len(docs), tally.steps, p.split.min_documents))

    pii: Counter = Counter()
    splits: dict[str, list[dict]] = {}
    for split, split_docs in assign_splits(docs, p.split).items():
        splits[split] = []
        for d in split_docs:
            text, counts = scrub_pii(d["text"], p.pii)
            pii.update(counts)
            splits[split].append(dict(d, text=text))
    examples = {(d["source"], name): [x["text"] for x in gone if x["source"] == d["source"]]
                for name, gone in dropped.items() for d in gone}
    written = [d for ds in splits.values() for d in ds]
    kept = {source: (sum(d["source"] == source for d in written),
                     sum(len(d["text"]) for d in written if d["source"] == source)) for source in tally.sources}
    report = build_report(tally.steps, {s: (len(ds), sum(len(d["text"]) for d in ds)) for s, ds in splits.items()},
                          kept, pii, drop_warnings(tally.steps, examples, p.warn_drop_share, p.pii))
    return splits, report


def build_report(steps: dict, split: dict[str, tuple[int, int]], kept: dict[str, tuple[int, int]], pii: Counter,
                 warnings: list[dict]) -> dict:
    """reports/data.json's section of a corpus, from the per-source step counts and what was written."""
    return {
        "documents_in": sum(s["normalize"]["documents_in"] for s in steps.values()),
        "documents_out": sum(n for n, _ in split.values()),
        "characters_in": sum(s["normalize"]["characters_out"] for s in steps.values()),
        "characters_out": sum(c for _, c in split.values()),
        "sources": steps,
        "duplicates_removed": {kind: sum(s.get(f"dedup_{kind}", {}).get("documents_in", 0)
                                         - s.get(f"dedup_{kind}", {}).get("documents_out", 0)
                                         for s in steps.values()) for kind in ("exact", "near")},
        "pii_replaced": {kind: pii.get(kind, 0) for kind in ("email", "phone", "ip", "credit_card")},
        "split": {s: {"documents": n, "characters": c} for s, (n, c) in split.items()},
        "kept": {source: {"documents": n, "characters": c} for source, (n, c) in sorted(kept.items())},
        "drop_warnings": warnings,
    }


def length_histogram(splits: dict[str, list[dict]], edges: list[int]) -> list[dict]:
    """Documents per length bin (words); a last bin up to the longest document holds any beyond the edges."""
    return length_rows(Counter(len(d["text"].split()) for docs in splits.values() for d in docs), edges)


def length_rows(lengths: Counter, edges: list[int]) -> list[dict]:
    """Documents per length bin from {words: documents}."""
    edges = sorted(set(edges))
    if lengths and max(lengths) > edges[-1]:
        edges.append(max(lengths))
    counts: Counter = Counter()
    for n, documents in lengths.items():
        counts[next(e for e in edges if n <= e)] += documents
    return [{"max_words": e, "documents": counts.get(e, 0)} for e in edges]
