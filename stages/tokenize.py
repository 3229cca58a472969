"""tokenize: tokenize each pretraining split and pack it into fixed-length blocks, EOS between documents.

models/tokenizer + data/prepared/pretrain/*.jsonl -> data/tokens/ (a datasets DatasetDict on disk, one split
per split: no block mixes two splits), reports/tokens.json (tokens per split, bytes per token).
"""
from __future__ import annotations

import logging
from itertools import chain
from pathlib import Path

import numpy as np
from tqdm import tqdm

from stages import params as P
from stages.core import atomic_path, blocks_to_dataset, read_jsonl, write_json

log = logging.getLogger("llm-lifecycle.tokenize")
PREPARED, TOKENIZER, OUT = Path("data/prepared/pretrain"), Path("models/tokenizer"), Path("data/tokens")
SPLITS = ("train", "validation", "test")


def encode(backend, texts: list[str], eos_id: int, batch_size: int = 1000, progress: str | None = None) -> np.ndarray:
    """All texts as one token stream, each document followed by EOS (the 'no separator' pitfall of group_texts)."""
    chunks = []
    for start in tqdm(range(0, len(texts), batch_size), desc=progress, disable=progress is None, unit="batch"):
        encodings = backend.encode_batch_fast(texts[start:start + batch_size], add_special_tokens=False)
        chunks.append(np.fromiter(chain.from_iterable(e.ids + [eos_id] for e in encodings), dtype=np.int32))
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int32)


def pack(stream: np.ndarray, block_size: int) -> np.ndarray:
    """Consecutive blocks of block_size tokens; the remainder shorter than a block is dropped."""
    n = len(stream) // block_size
    return stream[: n * block_size].reshape(n, block_size)


def main() -> None:
    from datasets import DatasetDict
    from transformers import AutoTokenizer

    params = P.load()
    p = params.tokenize
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    splits, report = {}, {"block_size": p.block_size, "vocab_size": len(tokenizer)}
    for split in SPLITS:
        texts = [d["text"] for d in read_jsonl(PREPARED / f"{split}.jsonl")]
        stream = encode(tokenizer.backend_tokenizer, texts, tokenizer.eos_token_id, p.batch_size, progress=split)
        blocks = pack(stream, p.block_size)
        splits[split] = blocks_to_dataset(blocks)
        n_bytes = sum(len(t.encode("utf-8")) for t in texts)
        report[split] = {"documents": len(texts), "tokens": int(len(stream)), "blocks": int(len(blocks)),
                         "tokens_dropped": int(len(stream) - blocks.size), "bytes": n_bytes,
                         "bytes_per_token": round(n_bytes / max(len(stream) - len(texts), 1), 4)}
        log.info("%s: %d tokens in %d blocks of %d", split, len(stream), len(blocks), p.block_size)
    with atomic_path(OUT, directory=True) as tmp:
        DatasetDict(splits).save_to_disk(str(tmp))
    write_json("reports/tokens.json", report)


if __name__ == "__main__":
    from stages.core import run
    run(main)
