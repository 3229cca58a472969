"""tokenizer: train a byte-level BPE on the pretraining train split (or adopt an existing tokenizer).

data/prepared/pretrain/train.jsonl -> models/tokenizer/ (loads with AutoTokenizer.from_pretrained),
reports/tokenizer.json.
"""
from __future__ import annotations

import logging
from pathlib import Path

from stages import params as P
from stages.core import StageError, atomic_path, read_jsonl, write_json

log = logging.getLogger("llm-lifecycle.tokenizer")
TRAIN = Path("data/prepared/pretrain/train.jsonl")
OUT = Path("models/tokenizer")
MODEL_INPUTS = ["input_ids", "attention_mask"]  # no token_type_ids: they break GPT-2 generation and ONNX export


def train_bpe(texts: list[str], p: P.TokenizerParams):
    """A byte-level BPE as a transformers fast tokenizer: any UTF-8 text round-trips exactly."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = p.special_tokens
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=p.vocab_size, min_frequency=p.min_frequency,
                                  special_tokens=[special.eos, special.pad],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=True)
    bpe.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=special.eos, bos_token=special.eos,
                                   unk_token=special.eos, pad_token=special.pad, model_input_names=MODEL_INPUTS,
                                   clean_up_tokenization_spaces=False)


def load_pretrained(name: str):
    """An existing tokenizer (local directory; a hub name only when online), made fit for causal LM packing."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise StageError(f"params.yaml: tokenizer.pretrained = {name!r}: cannot load it ({str(err).splitlines()[0]})") from None
    if tokenizer.eos_token is None:
        raise StageError(f"params.yaml: tokenizer.pretrained = {name!r}: the tokenizer has no eos_token to separate documents")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.model_input_names = MODEL_INPUTS
    return tokenizer


def main() -> None:
    params = P.load()
    p = params.tokenizer
    if p.pretrained:
        tokenizer = load_pretrained(p.pretrained)
    else:
        texts = [d["text"] for d in read_jsonl(TRAIN)]
        log.info("training byte-level BPE (vocab %d) on %d documents", p.vocab_size, len(texts))
        tokenizer = train_bpe(texts, p)
    with atomic_path(OUT, directory=True) as tmp:
        tokenizer.save_pretrained(tmp)
    write_json("reports/tokenizer.json", {"vocab_size": len(tokenizer), "pretrained": p.pretrained or None,
                                          "eos_token": tokenizer.eos_token, "pad_token": tokenizer.pad_token})


if __name__ == "__main__":
    from stages.core import run
    run(main)
