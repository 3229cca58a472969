"""tokenizer and tokenize: exact round trips, and packing with EOS between documents."""
import numpy as np
import pytest

from lifecycle.core import StageError
from lifecycle.params import schema as P
from lifecycle.tokens import blocks_to_dataset, encode, load_tokenizer, need_blocks, pack, train_bpe

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Café naïve façade — déjà vu!",
         "東京は日本の首都です。", "Emoji 🙂🚀 and math ∑∞ ≠ ≈.", "the the the quick quick fox"] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe(TEXTS, P.TokenizerParams(vocab_size=300, min_frequency=2))


@pytest.mark.parametrize("text", ["Café naïve façade — déjà vu!", "東京は日本の首都です。", "Emoji 🙂🚀 and math ∑∞",
                                  "  leading and trailing spaces  ", "Ωμέγα ünïcödé never seen in training: ĳ ǅ 𝔘"])
def test_tokenizer_round_trips_non_ascii_text(tokenizer, text):
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_saved_tokenizer_loads_with_autotokenizer_without_token_type_ids(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    encoded = loaded("hello world")
    assert set(encoded) == {"input_ids", "attention_mask"}
    assert loaded.eos_token == "<|endoftext|>" and loaded.pad_token == "<|pad|>"
    assert loaded.decode(encoded["input_ids"]) == "hello world"


def test_training_is_deterministic(tokenizer):
    again = train_bpe(TEXTS, P.TokenizerParams(vocab_size=300, min_frequency=2))
    assert again.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()


def test_vocab_size_is_honoured(tokenizer):
    assert len(tokenizer) <= 300 and len(tokenizer) > 256


def test_pretrained_tokenizer_directory_is_adopted(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    adopted = load_tokenizer(str(tmp_path))
    assert adopted.model_input_names == ["input_ids", "attention_mask"]
    assert adopted("abc")["input_ids"] == tokenizer("abc")["input_ids"]


def test_unloadable_pretrained_tokenizer_is_one_clear_error(tmp_path):
    with pytest.raises(StageError, match=r"tokenizer.pretrained = .*cannot load a tokenizer"):
        load_tokenizer(str(tmp_path / "missing"), "tokenizer.pretrained")


def test_encode_puts_eos_after_every_document(tokenizer):
    backend, eos = tokenizer.backend_tokenizer, tokenizer.eos_token_id
    docs = ["first doc", "second", "déjà"]
    stream = encode(backend, docs, eos, batch_size=2)
    expected = []
    for d in docs:
        expected += tokenizer(d)["input_ids"] + [eos]
    assert stream.tolist() == expected
    assert (stream == eos).sum() == len(docs)


def test_pack_cuts_fixed_blocks_and_drops_the_remainder():
    blocks = pack(np.arange(10, dtype=np.int32), 4)
    assert blocks.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert pack(np.arange(3, dtype=np.int32), 4).shape == (0, 4)


def test_packed_blocks_decode_back_to_documents_separated_by_eos(tokenizer):
    docs = ["alpha beta gamma", "delta epsilon", "zeta eta theta iota"]
    stream = encode(tokenizer.backend_tokenizer, docs, tokenizer.eos_token_id)
    blocks = pack(stream, 4)
    text = tokenizer.decode(blocks.reshape(-1).tolist())
    whole = tokenizer.decode(stream.tolist())
    assert whole == "<|endoftext|>".join(docs) + "<|endoftext|>"
    assert whole.startswith(text)


def test_blocks_become_a_datasets_column(tokenizer):
    blocks = pack(np.arange(12, dtype=np.int32), 4)
    dataset = blocks_to_dataset(blocks)
    assert dataset.column_names == ["input_ids"] and len(dataset) == 3
    assert dataset[1]["input_ids"] == [4, 5, 6, 7]



def test_a_validation_split_shorter_than_a_block_is_one_clear_error(tokenizer):
    """Prepare may leave validation one short document: tokenize says so, not pretrain's IndexError on no blocks."""
    stream = encode(tokenizer.backend_tokenizer, ["A short one."], tokenizer.eos_token_id)
    with pytest.raises(StageError) as err:
        need_blocks("validation", 1, len(stream), 128)
    assert str(err.value) == (
        f"tokenize: validation: {len(stream)} tokens (1 document), fewer than one block of tokenize.block_size = "
        "128; give the validation split more text (add text, or raise prepare.split.validation or "
        "prepare.split.min_documents) or lower tokenize.block_size (a multiple of model.context_length)")
    need_blocks("validation", 1, 128, 128)  # one whole block is enough
