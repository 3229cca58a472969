"""Tokenizers and token streams: train a byte-level BPE (or adopt one), load it, encode and pack documents.

`encode` tokenizes in this process; `encode_parallel` gives the same stream from several processes
(datasets.map over contiguous shards, rejoined in order), for the tokenize stage's whole corpus.
"""
from __future__ import annotations

from itertools import chain
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lifecycle.core import StageError
from lifecycle.io import read_jsonl
from lifecycle.params.tokenizer import TokenizerParams

MODEL_INPUTS = ["input_ids", "attention_mask"]  # no token_type_ids: they break GPT-2 generation and ONNX export
PRETRAIN_DATA, DOMAIN_TRAIN = Path("data/prepared/pretrain"), Path("data/prepared/finetune/train")


def pretraining_texts(split: str, domain_text: bool) -> tuple[list[str], int]:
    """A pretraining split's documents: the pretraining corpus's, then for train with `tokenize.domain_text` the
    fine-tuning corpus's train split (text only, labels dropped; its validation and test stay unseen). Returns the
    texts and how many of them are domain text."""
    texts = [d["text"] for d in read_jsonl(PRETRAIN_DATA / split)]
    domain = [d["text"] for d in read_jsonl(DOMAIN_TRAIN)] if domain_text and split == "train" else []
    return texts + domain, len(domain)


def train_bpe(texts: list[str], p: TokenizerParams):
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


def load_tokenizer(source: str | Path, key: str | None = None):
    """A tokenizer directory (a hub name only when online), made fit for packing, padding and ONNX export: an EOS
    between documents, padding with EOS when it has no pad token, no token_type_ids. `key` names the params key
    that chose `source`, for the error line."""
    from transformers import AutoTokenizer

    where = f"params.yaml: {key} = {str(source)!r}" if key else str(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise StageError(f"{where}: cannot load a tokenizer from it ({str(err).splitlines()[0]})") from None
    if tokenizer.eos_token is None:
        raise StageError(f"{where}: the tokenizer has no eos_token to separate documents")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.model_input_names = MODEL_INPUTS
    return tokenizer


def encode(backend, texts: list[str], eos_id: int, batch_size: int = 1000, progress: str | None = None) -> np.ndarray:
    """All texts as one token stream, each document followed by EOS (the 'no separator' pitfall of group_texts)."""
    chunks = []
    for start in tqdm(range(0, len(texts), batch_size), desc=progress, disable=progress is None, unit="batch"):
        encodings = backend.encode_batch_fast(texts[start:start + batch_size], add_special_tokens=False)
        chunks.append(np.fromiter(chain.from_iterable(e.ids + [eos_id] for e in encodings), dtype=np.int32))
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int32)


def encode_with_eos(batch: dict, backend, eos_id: int) -> dict:
    """A datasets.map batch function: each text's ids followed by EOS (a module-level function, so it pickles)."""
    encodings = backend.encode_batch_fast(batch["text"], add_special_tokens=False)
    return {"input_ids": [e.ids + [eos_id] for e in encodings]}


def encode_parallel(backend, texts: list[str], eos_id: int, batch_size: int = 1000, num_proc: int = 1,
                    progress: str | None = None) -> np.ndarray:
    """`encode`'s stream, tokenized by up to num_proc processes, never more than there are batches (a process costs
    more than a short split). Shards are contiguous and rejoined in order, so the bytes do not depend on num_proc."""
    from uuid import uuid4

    from datasets import Dataset, Features, List, Value

    if not texts:
        return np.zeros(0, np.int32)
    num_proc = min(num_proc, -(-len(texts) // batch_size))
    # In memory, never cached: no stale map results in ~/.cache; the given fingerprint spares hashing the tokenizer.
    encoded = Dataset.from_dict({"text": texts}).map(
        encode_with_eos, batched=True, batch_size=batch_size, num_proc=num_proc if num_proc > 1 else None,
        fn_kwargs={"backend": backend, "eos_id": eos_id}, remove_columns=["text"],
        features=Features({"input_ids": List(Value("int32"))}), keep_in_memory=True, load_from_cache_file=False,
        new_fingerprint=uuid4().hex, desc=f"tokenize {progress}" if progress else None)
    chunks = [chunk.flatten().to_numpy() for chunk in encoded.data.column("input_ids").chunks]
    return np.concatenate(chunks).astype(np.int32, copy=False) if chunks else np.zeros(0, np.int32)


def pack(stream: np.ndarray, block_size: int) -> np.ndarray:
    """Consecutive blocks of block_size tokens; the remainder shorter than a block is dropped."""
    n = len(stream) // block_size
    return stream[: n * block_size].reshape(n, block_size)


def need_blocks(split: str, documents: int, tokens: int, block_size: int) -> None:
    """Pretraining trains on train's blocks and evaluates on validation's: each needs at least one whole block."""
    if tokens < block_size:
        raise StageError(f"tokenize: {split}: {tokens} tokens ({documents} document{'' if documents == 1 else 's'}), "
                         f"fewer than one block of tokenize.block_size = {block_size}; give the {split} split "
                         f"more text (add text, or raise prepare.split.{split} or prepare.split.min_documents) or "
                         "lower tokenize.block_size (a multiple of model.context_length)")


def blocks_to_dataset(blocks):
    """A (n, block_size) token array as a `datasets` Dataset with one fixed-size `input_ids` column."""
    import pyarrow as pa
    from datasets import Dataset

    column = pa.FixedSizeListArray.from_arrays(pa.array(blocks.reshape(-1), type=pa.int32()), blocks.shape[1])
    return Dataset(pa.table({"input_ids": column}))
