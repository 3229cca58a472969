"""The data benchmark's synthetic corpus: planted duplicates are what the benchmark says they are."""
from __future__ import annotations

import json

from benchmarks.data_throughput import synthetic_corpus


def test_planted_copies_follow_their_originals_and_are_exact_or_near(tmp_path):
    planted, documents, megabytes = synthetic_corpus(tmp_path / "raw", 0.5, seed=3, shard_mb=0.1)
    rows = [json.loads(line) for f in sorted((tmp_path / "raw").glob("*.jsonl")) for line in f.read_text().split("\n")
            if line]
    assert len(rows) == documents and len(list((tmp_path / "raw").glob("*.jsonl"))) >= 4
    assert 0.45 < megabytes < 0.6
    order = {r["id"]: i for i, r in enumerate(rows)}
    text = {r["id"]: r["text"] for r in rows}
    kinds = {"exact": 0, "near": 0}
    for copy, original in planted.items():
        assert order[original] < order[copy]
        a, b = text[original].split(), text[copy].split()
        if text[copy] == "  ".join(a).upper():
            kinds["exact"] += 1
        else:
            assert len(a) == len(b) and 1 <= sum(x != y for x, y in zip(a, b)) <= max(1, len(a) // 200)
            kinds["near"] += 1
    assert kinds["exact"] > 0 and kinds["near"] > 0
    assert 0.04 < len(planted) / documents < 0.12
