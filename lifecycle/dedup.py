"""Deduplication: exact (up to case and whitespace) and near (MinHash LSH over word shingles)."""
from __future__ import annotations

import hashlib
import re


def exact_key(text: str) -> str:
    """Texts equal up to case and whitespace share a key."""
    return hashlib.sha256(" ".join(text.lower().split()).encode("utf-8")).hexdigest()


def shingles(text: str, size: int) -> set[bytes]:
    words = re.findall(r"\w+", text.lower())
    if len(words) <= size:
        return {" ".join(words).encode("utf-8")}
    return {" ".join(words[i:i + size]).encode("utf-8") for i in range(len(words) - size + 1)}


def near_duplicates(texts: list[str], threshold: float, num_perm: int, shingle_size: int, seed: int = 1) -> list[int]:
    """Indices of texts whose MinHash Jaccard with an earlier kept text reaches the threshold."""
    from datasketch import MinHash, MinHashLSH
    from xxhash import xxh32_intdigest  # 5x faster than datasketch's default sha1, as good for MinHash

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    template = MinHash(num_perm=num_perm, seed=seed)  # its permutations are drawn once, not once per document
    kept: dict[int, MinHash] = {}
    duplicates = []
    for i, text in enumerate(texts):
        signature = MinHash(num_perm=num_perm, seed=seed, hashfunc=xxh32_intdigest, permutations=template.permutations,
                            scheme=template.scheme)
        signature.update_batch(list(shingles(text, shingle_size)))
        # LSH returns candidates; confirm with the estimated Jaccard to drop banding false positives.
        if any(kept[j].jaccard(signature) >= threshold for j in lsh.query(signature)):
            duplicates.append(i)
            continue
        kept[i] = signature
        lsh.insert(i, signature)
    return duplicates
