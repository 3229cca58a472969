"""tokenizer: train a byte-level BPE on the pretraining train split (or adopt an existing tokenizer).

data/prepared/pretrain/train/ (its shards, in order; with tokenize.domain_text also the fine-tuning train split's
text) -> models/tokenizer/ (loads with AutoTokenizer.from_pretrained), reports/tokenizer.json.
"""
from __future__ import annotations

import logging
from pathlib import Path

from lifecycle.io import atomic_path, write_json
from lifecycle.params.base import load
from lifecycle.params.tokenizer import TokenizeParams, TokenizerParams
from lifecycle.tokens import load_tokenizer, pretraining_texts, train_bpe

log = logging.getLogger("llm-lifecycle.tokenizer")
OUT = Path("models/tokenizer")


def main() -> None:
    params = load(tokenizer=TokenizerParams, tokenize=TokenizeParams)
    p = params.tokenizer
    if p.pretrained:
        tokenizer = load_tokenizer(p.pretrained, "tokenizer.pretrained")
    else:
        texts, domain = pretraining_texts("train", params.tokenize.domain_text)
        log.info("training byte-level BPE (vocab %d) on %d documents (%d of them the task's text)", p.vocab_size,
                 len(texts), domain)
        tokenizer = train_bpe(texts, p)
    with atomic_path(OUT, directory=True) as tmp:
        tokenizer.save_pretrained(tmp)
    write_json("reports/tokenizer.json", {"vocab_size": len(tokenizer), "pretrained": p.pretrained or None,
                                          "eos_token": tokenizer.eos_token, "pad_token": tokenizer.pad_token})


if __name__ == "__main__":
    from lifecycle.core import run
    run(main)
