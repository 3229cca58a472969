"""tokenizer and tokenize: exact round trips, EOS between packed documents, the same tokens in any process count."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from lifecycle.core import StageError
from lifecycle.params import schema as P
from lifecycle.params.base import load
from lifecycle.tokens import blocks_to_dataset, encode, encode_parallel, load_tokenizer, need_blocks, pack, train_bpe
from tests.conftest import ROOT, stage_env

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


# ---- tokenizing in several processes (datasets.map) ----

CORPUS = [f"Document {i}: " + " ".join(TEXTS[i % len(TEXTS)].split()[: 2 + i % 7]) for i in range(41)]


def reference_stream(tokenizer, docs):
    """The stream by hand: each document's ids, then EOS."""
    return [i for d in docs for i in tokenizer(d)["input_ids"] + [tokenizer.eos_token_id]]


@pytest.mark.parametrize("num_proc", [1, 2, 3])
def test_parallel_encoding_gives_each_document_then_eos_in_order(tokenizer, num_proc):
    stream = encode_parallel(tokenizer.backend_tokenizer, CORPUS, tokenizer.eos_token_id, batch_size=4,
                             num_proc=num_proc)
    assert stream.dtype == np.int32
    assert stream.tolist() == reference_stream(tokenizer, CORPUS)


def test_parallel_encoding_is_byte_identical_to_the_single_process_encoder(tokenizer):
    backend, eos = tokenizer.backend_tokenizer, tokenizer.eos_token_id
    one = encode_parallel(backend, CORPUS, eos, batch_size=5, num_proc=1)
    two = encode_parallel(backend, CORPUS, eos, batch_size=5, num_proc=2)
    assert one.tobytes() == two.tobytes() == encode(backend, CORPUS, eos).tobytes()


def test_parallel_encoding_of_few_documents_or_none(tokenizer):
    backend, eos = tokenizer.backend_tokenizer, tokenizer.eos_token_id
    assert encode_parallel(backend, [], eos, num_proc=4).shape == (0,)
    # more processes than batches: one process does it, same tokens
    assert encode_parallel(backend, ["a b", "c"], eos, batch_size=1000, num_proc=8).tolist() == \
        reference_stream(tokenizer, ["a b", "c"])


def write_tokenize_params(directory, tokenize: dict):
    (directory / "params.yaml").write_text(yaml.safe_dump({"seed": 0, "tokenize": tokenize}))
    return directory / "params.yaml"


@pytest.mark.parametrize(("value", "message"), [(0, "must be at least 1"), ("2", "must be an integer")])
def test_a_bad_num_proc_is_one_line_naming_the_key(tmp_path, value, message):
    path = write_tokenize_params(tmp_path, {"num_proc": value})
    with pytest.raises(StageError) as err:
        load(path, tokenize=P.TokenizeParams)
    assert str(err.value) == f"{path}: tokenize.num_proc = {value!r}: {message}"


def test_num_proc_null_means_every_core():
    assert P.TokenizeParams().num_proc is None
    assert P.TokenizeParams().processes == (os.cpu_count() or 1)
    assert P.TokenizeParams(num_proc=3).processes == 3


SPLIT_DOCS = {"train": (CORPUS[:20], CORPUS[20:33]), "validation": (CORPUS[33:38],), "test": (CORPUS[38:],)}


@pytest.fixture(scope="module")
def tokenize_project(tokenizer, tmp_path_factory):
    """A scratch project holding the tokenize stage's inputs: the tiny tokenizer, each split a folder of shards."""
    project = tmp_path_factory.mktemp("tokenize")
    tokenizer.save_pretrained(project / "models/tokenizer")
    for split, shards in SPLIT_DOCS.items():
        folder = project / "data/prepared/pretrain" / split
        folder.mkdir(parents=True)
        for n, docs in enumerate(shards):
            (folder / f"{n:05d}.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return project


def run_tokenize(project, num_proc, domain_text=False):
    """The stage as a user runs it, offline, with a private HF cache; its tokens per split and its report."""
    from datasets import load_from_disk

    write_tokenize_params(project, {"block_size": 8, "batch_size": 3, "num_proc": num_proc,
                                    "domain_text": domain_text})
    env = dict(stage_env(), HF_HOME=str(project / "hf-home"), PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "stages.tokenize"], cwd=project, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    tokens = load_from_disk(str(project / "data/tokens"))
    arrays = {split: np.asarray(tokens[split]["input_ids"], dtype=np.int32) for split in tokens}
    return arrays, json.loads((project / "reports/tokens.json").read_text())


def test_the_stage_writes_the_same_tokens_with_one_or_two_processes(tokenize_project, tokenizer):
    one, report_one = run_tokenize(tokenize_project, 1)
    two, report_two = run_tokenize(tokenize_project, 2)
    assert sorted(one) == ["test", "train", "validation"]
    assert all(one[split].tobytes() == two[split].tobytes() for split in one)
    assert report_one == report_two
    for split, shards in SPLIT_DOCS.items():  # shards read in name order; no split mixes with another
        docs = [d for shard in shards for d in shard]
        stream = reference_stream(tokenizer, docs)
        assert one[split].reshape(-1).tolist() == stream[: len(stream) // 8 * 8]
        assert report_one[split]["documents"] == len(docs) and report_one[split]["tokens"] == len(stream)
    assert not list((tokenize_project / "hf-home").rglob("*.arrow"))  # map results stay in memory


def test_domain_text_adds_the_task_train_text_to_train_only(tokenize_project, tokenizer):
    """tokenize.domain_text: the fine-tuning train split's texts (labels dropped) after the pretraining train
    documents; validation and test stay the pretraining corpus's."""
    domain = ["A gripping, funny film.", "Dull and far too long.", "Les acteurs sont très bons."]
    folder = tokenize_project / "data/prepared/finetune/train"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "00000.jsonl").write_text("".join(json.dumps({"text": d, "label": "x"}) + "\n" for d in domain))
    plain, _ = run_tokenize(tokenize_project, 1)
    mixed, report = run_tokenize(tokenize_project, 1, domain_text=True)
    general = [d for shard in SPLIT_DOCS["train"] for d in shard]
    stream = reference_stream(tokenizer, general + domain)
    assert mixed["train"].reshape(-1).tolist() == stream[: len(stream) // 8 * 8]
    assert report["train"]["documents"] == len(general) + 3 and report["train"]["domain_documents"] == 3
    assert all(mixed[s].tobytes() == plain[s].tobytes() for s in ("validation", "test"))
