"""tokenize: tokenize each pretraining split and pack it into fixed-length blocks, EOS between documents.

models/tokenizer + data/prepared/pretrain/<split>/*.jsonl (train: with tokenize.domain_text also the fine-tuning
corpus's train split, text only) -> data/tokens/ (a datasets DatasetDict on disk, one split
per split: no block mixes two splits), reports/tokens.json (tokens per split, bytes per token). Train and validation
must each fill a block: pretraining needs both. Tokenizing runs in tokenize.num_proc processes (null: every core);
the tokens are the same whatever that number.
"""
from __future__ import annotations

import logging
from pathlib import Path

from lifecycle.io import atomic_path, write_json
from lifecycle.params.base import load
from lifecycle.params.tokenizer import TokenizeParams
from lifecycle.tokens import blocks_to_dataset, encode_parallel, need_blocks, pack, pretraining_texts

log = logging.getLogger("llm-lifecycle.tokenize")
TOKENIZER, OUT = Path("models/tokenizer"), Path("data/tokens")
SPLITS = ("train", "validation", "test")


def main() -> None:
    from datasets import DatasetDict
    from transformers import AutoTokenizer

    p = load(tokenize=TokenizeParams).tokenize
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    splits, report = {}, {"block_size": p.block_size, "vocab_size": len(tokenizer)}
    log.info("tokenizing in %d process(es)", p.processes)
    for split in SPLITS:
        texts, domain = pretraining_texts(split, p.domain_text)
        stream = encode_parallel(tokenizer.backend_tokenizer, texts, tokenizer.eos_token_id, p.batch_size,
                                 p.processes, progress=split)
        if split != "test":  # test is read as text (evaluate), not as blocks
            need_blocks(split, len(texts), len(stream), p.block_size)
        blocks = pack(stream, p.block_size)
        splits[split] = blocks_to_dataset(blocks)
        n_bytes = sum(len(t.encode("utf-8")) for t in texts)
        report[split] = {"documents": len(texts), **({"domain_documents": domain} if domain else {}),
                         "tokens": int(len(stream)), "blocks": int(len(blocks)),
                         "tokens_dropped": int(len(stream) - blocks.size), "bytes": n_bytes,
                         "bytes_per_token": round(n_bytes / max(len(stream) - len(texts), 1), 4)}
        log.info("%s: %d tokens in %d blocks of %d", split, len(stream), len(blocks), p.block_size)
    with atomic_path(OUT, directory=True) as tmp:
        DatasetDict(splits).save_to_disk(str(tmp))
    write_json("reports/tokens.json", report)


if __name__ == "__main__":
    from lifecycle.core import run
    run(main)
