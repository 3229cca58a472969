"""lifecycle.gguf: the pure logic on constructed cases (bits per byte, llama-perplexity's windows, the pre-tokenizer
mapping, argument checks, agreement), and, where `make llama-cpp` has built llama.cpp, the real export."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from lifecycle import gguf
from lifecycle.core import StageError
from lifecycle.net import wait_up

REPO = Path(__file__).resolve().parents[1]
GPT2_LIKE = {"normalizer": None, "model": {"type": "BPE"},
             "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}}


# ---------------------------------------------------------------- perplexity -> bits per byte

def test_bits_per_byte_of_a_known_perplexity():
    # ppl 4 = 2 bits per token; 100 tokens over 400 bytes = 0.5 bits per byte
    assert gguf.bits_per_byte(4.0, 100, 400) == pytest.approx(0.5)


def test_bits_per_byte_equals_the_scorers_definition_from_summed_nll():
    total_nll, tokens, n_bytes = 1234.5, 700, 2900  # nats; lifecycle.scoring: total / ln 2 / bytes
    perplexity = math.exp(total_nll / tokens)
    assert gguf.bits_per_byte(perplexity, tokens, n_bytes) == pytest.approx(total_nll / math.log(2) / n_bytes)


def test_bits_per_byte_refuses_impossible_figures():
    with pytest.raises(ValueError, match="perplexity >= 1"):
        gguf.bits_per_byte(0.5, 10, 10)
    with pytest.raises(ValueError, match="positive counts"):
        gguf.bits_per_byte(2.0, 10, 0)


def test_perplexity_pieces_follow_llama_perplexity_windows():
    # BOS + 10 tokens, context 4: two whole windows (the tail dropped), each BOS first, only the last token scored
    pieces = gguf.perplexity_pieces(list(range(10, 20)), context=4, bos=0)
    assert pieces == [([0, 10, 11, 12], [-100, -100, -100, 12]),
                      ([0, 14, 15, 16], [-100, -100, -100, 16])]


def test_perplexity_pieces_score_context_minus_half_minus_one_tokens_per_window():
    pieces = gguf.perplexity_pieces(list(range(1, 1000)), context=128, bos=0)
    assert len(pieces) == 1000 // 128
    assert all(sum(label != -100 for label in labels) == 128 - 64 - 1 for _, labels in pieces)


def test_perplexity_is_read_from_the_final_estimate():
    out = "perplexity: 0.07 seconds per pass\n[1]47.0634,[2]74.5210,\nFinal estimate: PPL = 74.5211 +/- 3.3\n"
    assert gguf.parse_perplexity(out, "m.gguf", chunks=2) == 74.5211


def test_a_lost_final_line_falls_back_to_the_figure_after_the_last_window():
    assert gguf.parse_perplexity("[1]47.0634,[2]74.5210,[3]75.0641,\n", "m.gguf", chunks=3) == 75.0641


def test_output_cut_short_of_the_last_window_is_refused_not_read():
    # llama.cpp can lose its last log lines at exit: [2] is not the figure over 3 windows
    with pytest.raises(StageError, match=r"^llama-perplexity on m.gguf: no perplexity over 3 windows in its output "
                                         r"\(last line: \[1\]47.0634,\[2\]74.5210,\)$"):
        gguf.parse_perplexity("loading\n[1]47.0634,[2]74.5210,\n", "m.gguf", chunks=3)


# ---------------------------------------------------------------- the pre-tokenizer mapping

def test_gpt2_byte_level_tokenizer_is_recognised():
    assert gguf.gpt2_pre_tokenizer(GPT2_LIKE)


@pytest.mark.parametrize("change", [{"normalizer": {"type": "NFC"}}, {"model": {"type": "Unigram"}},
                                    {"pre_tokenizer": {"type": "Metaspace"}},
                                    {"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True}},
                                    {"pre_tokenizer": {"type": "ByteLevel", "use_regex": False}}])
def test_other_tokenizers_are_not_called_gpt2(change):
    assert not gguf.gpt2_pre_tokenizer(GPT2_LIKE | change)


def test_our_pretrained_tokenizer_is_gpt2_like():
    path = REPO / "models/pretrained/tokenizer.json"
    if not path.is_file():
        pytest.skip("no models/pretrained (run the pretrain stage)")
    assert gguf.gpt2_pre_tokenizer(json.loads(path.read_text(encoding="utf-8")))


class FakeWriter:
    def __init__(self):
        self.keys = {}

    def add_add_bos_token(self, value):
        self.keys["add_bos_token"] = value


def fake_converter_class(known: str | None):
    """A converter model class whose hash table knows `known` (None: it raises as the real one does)."""
    class Model:
        model_arch = "llama"

        def __init__(self, dir_model):
            self.dir_model, self.gguf_writer, self.vocab = dir_model, FakeWriter(), None

        def get_vocab_base_pre(self, tokenizer):
            if known is None:
                raise NotImplementedError("BPE pre-tokenizer was not recognized")
            return known

        def set_vocab(self):
            self.vocab = "sentencepiece"

        def _set_vocab_gpt2(self):
            self.vocab = "gpt2"
    return Model


def test_unknown_hash_of_a_gpt2_like_tokenizer_maps_to_gpt2(tmp_path):
    model = gguf.with_our_tokenizer(fake_converter_class(None), GPT2_LIKE)(tmp_path)
    assert model.get_vocab_base_pre(tokenizer=None) == "gpt-2"


def test_known_hash_keeps_the_converters_answer(tmp_path):
    model = gguf.with_our_tokenizer(fake_converter_class("llama-bpe"), GPT2_LIKE)(tmp_path)
    assert model.get_vocab_base_pre(tokenizer=None) == "llama-bpe"


def test_unknown_hash_of_another_tokenizer_is_one_clear_error(tmp_path):
    other = GPT2_LIKE | {"pre_tokenizer": {"type": "Metaspace"}}
    model = gguf.with_our_tokenizer(fake_converter_class(None), other)(tmp_path)
    with pytest.raises(StageError, match="not GPT-2's byte-level regex"):
        model.get_vocab_base_pre(tokenizer=None)


def test_vocab_is_gpt2_with_bos_added(tmp_path):
    model = gguf.with_our_tokenizer(fake_converter_class(None), GPT2_LIKE)(tmp_path)
    model.set_vocab()
    assert model.vocab == "gpt2" and model.gguf_writer.keys == {"add_bos_token": True}


def test_a_sentencepiece_model_keeps_the_converters_vocab(tmp_path):
    (tmp_path / "tokenizer.model").write_bytes(b"")
    model = gguf.with_our_tokenizer(fake_converter_class(None), GPT2_LIKE)(tmp_path)
    model.set_vocab()
    assert model.vocab == "sentencepiece" and model.gguf_writer.keys == {"add_bos_token": True}


def test_the_mapped_class_keeps_the_converters_name_and_architecture():
    base = fake_converter_class(None)
    mapped = gguf.with_our_tokenizer(base, GPT2_LIKE)
    assert issubclass(mapped, base) and mapped.__name__ == "Model" and mapped.model_arch == "llama"


# ---------------------------------------------------------------- arguments and a missing build

def test_types_put_f32_first():
    assert gguf.check_types(["q4_K_M", "f32", "q8_0"]) == ["f32", "q4_K_M", "q8_0"]


@pytest.mark.parametrize(("types", "message"), [(["f32", "q3_X"], "'q3_X' is not a GGUF type made here"),
                                                (["f32", "q8_0", "q8_0"], "'q8_0' is given twice"),
                                                (["q8_0"], "must include f32")])
def test_bad_types_are_one_clear_error(types, message):
    with pytest.raises(StageError, match=message):
        gguf.check_types(types)


def test_missing_binary_says_to_make_llama_cpp(tmp_path):
    with pytest.raises(StageError, match=r"llama.cpp is not built: no .*llama-quantize \(run `make llama-cpp` first\)"):
        gguf.binary("llama-quantize", tmp_path)


def test_missing_converter_says_to_make_llama_cpp(tmp_path):
    with pytest.raises(StageError, match="llama.cpp's converter is not there"):
        gguf.convert(tmp_path, tmp_path / "m.gguf", source=tmp_path / "src")


def test_model_dir_without_weights_is_one_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(StageError, match="no model.safetensors"):
        gguf.check_model(tmp_path)


def test_non_positive_counts_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        gguf.parse_args(["export", "m", "out", "--documents", "0"])
    assert exit_.value.code == 2 and "--documents 0: must be at least 1" in capsys.readouterr().err


def test_export_without_a_build_is_one_line_and_exit_2(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        (model / name).write_text("{}")
    done = subprocess.run([sys.executable, "-m", "lifecycle.gguf", "export", str(model), str(tmp_path / "out")],
                          cwd=tmp_path, capture_output=True, text=True, env={"PYTHONPATH": str(REPO)})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == ("error: llama.cpp is not built: no .llama.cpp/build/bin/"
                                                    "llama-quantize (run `make llama-cpp` first)")
    assert not (tmp_path / "out").exists()


def test_a_server_that_exits_is_one_line_with_its_last_log_line(tmp_path):
    with (tmp_path / "log").open("w+") as server_log:
        process = subprocess.Popen([sys.executable, "-c", "import sys; sys.stderr.write('loading\\nbad magic\\n'); "
                                    "sys.exit(3)"], stderr=server_log)
        with pytest.raises(StageError, match=r"^llama-server on m.gguf exited \(3\): bad magic$"):
            wait_up(process, "http://127.0.0.1:9/health", server_log, "llama-server on m.gguf", timeout=30)


# ---------------------------------------------------------------- agreement

def test_agreement_counts_identical_continuations_and_the_shared_prefix():
    got = [[1, 2, 3], [1, 2, 9], [5]]
    want = [[1, 2, 3], [1, 2, 3], [5, 0]]  # the third stopped early: one of two tokens shared
    assert gguf.agreement(got, want) == {"identical": pytest.approx(1 / 3), "token_prefix": pytest.approx(6 / 8)}


def test_agreement_needs_one_continuation_per_reference():
    with pytest.raises(ValueError, match="as many continuations as references"):
        gguf.agreement([[1]], [[1], [2]])


# ---------------------------------------------------------------- the real thing, where llama.cpp is built

BUILT = (REPO / gguf.BIN / "llama-quantize").is_file() and (REPO / gguf.BIN / "llama-perplexity").is_file()


@pytest.mark.skipif(not BUILT or not (REPO / "models/pretrained/model.safetensors").is_file(),
                    reason="needs `make llama-cpp` and models/pretrained")
def test_real_export_quantizes_and_matches_pytorch(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    files = gguf.export(Path("models/pretrained"), tmp_path, ["q8_0", "f32"])
    assert files["q8_0"].stat().st_size < 0.4 * files["f32"].stat().st_size
    sys.path.insert(0, str(REPO / gguf.SOURCE / "gguf-py"))
    from gguf import GGUFReader
    fields = GGUFReader(files["f32"]).fields
    assert fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    assert fields["tokenizer.ggml.add_bos_token"].contents() is True
    assert fields["llama.context_length"].contents() == 128
    # the f32 file scores the test text as PyTorch does by the same protocol
    from transformers import AutoModelForCausalLM

    from lifecycle.tokens import load_tokenizer
    text = "\n\n".join(f"Document {i}: the quick brown fox jumps over the lazy dog, {i * 7} times." for i in range(40))
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    tokenizer = load_tokenizer("models/pretrained")
    model = AutoModelForCausalLM.from_pretrained("models/pretrained", use_safetensors=True).eval()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    expected = gguf.pytorch_perplexity(model, ids, 128, tokenizer.eos_token_id)
    measured = gguf.llama_perplexity(files["f32"], tmp_path / "t.txt", 128, 1, (len(ids) + 1) // 128)
    assert measured == pytest.approx(expected, rel=2e-3)
