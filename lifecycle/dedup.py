"""Deduplication rules shared by the reference (lifecycle.corpus) and the datatrove pipeline (lifecycle.prepare_flow).

- exact: texts equal up to case and whitespace;
- near: documents sharing a whole LSH band of their MinHash signatures (datatrove's rule and its signatures, over
  word shingles); the bands and rows per band are those datasketch picks for `threshold` and `num_perm`.
Duplicates group transitively into clusters and each cluster keeps its earliest document in corpus order, so the
result does not depend on how the corpus was cut into tasks.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

import numpy as np

from lifecycle.params.prepare import NearDedup

_WORDS = re.compile(r"\w+")
_EXACT_TOP = (1 << 60) - 1  # datatrove's bucket reader stops at 2**61 - 1: exact keys stay below


def exact_key(text: str) -> str:
    """Texts equal up to case and whitespace share a key."""
    return hashlib.sha256(" ".join(text.lower().split()).encode("utf-8")).hexdigest()


def exact_signature(text: str) -> tuple[int, int]:
    """The exact key as two 64-bit numbers (the first below 2**60), a one-band 'signature' for datatrove."""
    digest = bytes.fromhex(exact_key(text))
    return int.from_bytes(digest[:8], "big") & _EXACT_TOP, int.from_bytes(digest[8:16], "big")


def shingles(text: str, size: int) -> set[str]:
    words = _WORDS.findall(text.lower())
    if len(words) <= size:
        return {" ".join(words)}
    return {" ".join(words[i:i + size]) for i in range(len(words) - size + 1)}


def bands(near: NearDedup) -> tuple[int, int]:
    """(bands, rows per band) of the LSH: datasketch's choice for the threshold (false positives and negatives
    weighed alike)."""
    from datasketch.lsh import _optimal_param

    return _optimal_param(near.threshold, near.num_perm, 0.5, 0.5)


def minhash_config(near: NearDedup, seed: int, exact: bool = False):
    """datatrove's MinHash settings: a bucket per LSH band when near dedup is on, and with `exact` one more bucket
    (the last) holding the exact-key signatures, so one bucket pass finds both kinds of pairs."""
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.utils.hashing import HashConfig

    n_bands, rows = bands(near) if near.enabled else (0, 2)
    return MinhashConfig(n_grams=near.shingle_size, num_buckets=n_bands + exact, hashes_per_bucket=rows, seed=seed,
                         hash_config=HashConfig(precision=64, hash_fc="xxhash"))


_MIX = [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5, 0x85EBCA77C2B2AE63]


def shingle_hashes(text: str, size: int) -> np.ndarray:
    """A 64-bit hash of each distinct shingle (`size` consecutive words), shaped (n, 1) as datatrove's signature
    wants: each word hashed once (xxhash), a shingle's hash mixed from its words' by position (uint64 wraps)."""
    from xxhash import xxh64_intdigest

    words = _WORDS.findall(text.lower()) or [""]
    hashes = np.array([xxh64_intdigest(w.encode("utf-8")) for w in words], dtype=np.uint64)
    width = min(size, len(words))
    count = len(words) - width + 1
    combined = hashes[:count] * np.uint64(_MIX[0])
    for k in range(1, width):
        combined = combined * np.uint64(31) + hashes[k:count + k] * np.uint64(_MIX[k % len(_MIX)])
    return np.unique(combined).reshape((-1, 1))


class UnionFind:
    """Clusters of duplicates over hashable nodes; `keeper` of a cluster is its smallest node."""

    def __init__(self):
        self.parent: dict = {}

    def find(self, x):
        root = x
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while x != root:  # path compression
            self.parent[x], x = root, self.parent.get(x, x)
        return root

    def union(self, a, b) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            low, high = (ra, rb) if ra < rb else (rb, ra)
            self.parent[high] = low  # the root is always the cluster's smallest node

    def removed(self) -> set:
        """Every node but its cluster's smallest."""
        return {x for x in self.parent if self.find(x) != x}


def clusters_removed(pairs: Iterable[tuple]) -> set:
    """The nodes to drop: all but the smallest of each cluster the pairs connect."""
    union = UnionFind()
    for a, b in pairs:
        union.union(a, b)
    return union.removed()


def band_pairs(signatures: list[list[tuple]]) -> list[tuple[int, int]]:
    """(i, j) for documents whose signatures agree on a whole band (i < j, each i the band's first holder)."""
    pairs = []
    for band in zip(*signatures):
        first: dict = {}
        for i, sig in enumerate(band):
            if sig in first:
                pairs.append((first[sig], i))
            else:
                first[sig] = i
    return pairs


def near_duplicates(texts: list[str], near: NearDedup, seed: int = 1) -> list[int]:
    """Indices of the texts that near-duplicate an earlier one (in memory: the reference of the pipeline)."""
    from lifecycle.prepare_flow import Signatures

    signer = Signatures.for_reference(near, seed)
    signatures = [[tuple(b) for b in signer.get_signature(shingle_hashes(t, near.shingle_size))] for t in texts]
    return sorted(clusters_removed(band_pairs(signatures)))


def exact_duplicates(texts: list[str]) -> list[int]:
    """Indices of the texts equal (up to case and whitespace) to an earlier one."""
    first: dict = {}
    return [i for i, t in enumerate(texts) if first.setdefault(exact_key(t), i) != i]
