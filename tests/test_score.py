"""Score any text with any model: `python -m lifecycle.score` gives the figures the scoring code gives, for a text
file or a folder of .jsonl shards, PyTorch or ONNX; bits per character; the evaluate stage's named texts
(params validation, the DVC dep check, bad data in one line, their place in eval.json)."""
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lifecycle.core import DataError, StageError
from lifecycle.params import schema as P
from lifecycle.params.finetune import NamedText
from lifecycle.score import main as score_main
from lifecycle.scoring import language_model_scores
from lifecycle.texts import check_tracked, named_texts, read_texts
from tests.conftest import ROOT, default_params, run_stage, stage_env, the_error, tiny_params, write_params

CONTEXT = 32  # short, so that the longer texts are scored through the sliding window
PROSE = ("The quick brown fox jumps over the lazy dog. " * 6 + "Pack my box with five dozen liquor jugs.\n")
ROWS = [[{"id": "a", "text": "To be, or not to be, that is the question."},
         {"id": "b", "text": "Whether tis nobler in the mind to suffer the slings and arrows. " * 3}],
        [{"id": "c", "text": "Or to take arms against a sea of troubles."}]]
NON_ASCII = "Naïve café owners in Zürich say: «déjà vu» — 東京の天気は晴れ。 Ünïcödé ßtraße ★"


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    """A random-weight GPT-2 (one layer, context 32) with a tiny byte-level BPE, saved as safetensors."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from lifecycle.params.tokenizer import TokenizerParams
    from lifecycle.tokens import train_bpe

    directory = tmp_path_factory.mktemp("tiny-lm")
    texts = [PROSE, NON_ASCII] + [r["text"] for shard in ROWS for r in shard]
    tokenizer = train_bpe(texts * 5, TokenizerParams(vocab_size=300, min_frequency=1))
    tokenizer.save_pretrained(directory)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=CONTEXT, n_embd=16, n_layer=1, n_head=2,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(directory, safe_serialization=True)
    return directory


@pytest.fixture
def texts(tmp_path) -> dict[str, Path]:
    """A .txt file, a folder of two .jsonl shards and a non-ASCII .md file."""
    (tmp_path / "prose.txt").write_text(PROSE, encoding="utf-8")
    (tmp_path / "rows").mkdir()
    for i, shard in enumerate(ROWS):
        (tmp_path / "rows" / f"{i:05d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in shard))
    (tmp_path / "accents.md").write_text(NON_ASCII, encoding="utf-8")
    return {"txt": tmp_path / "prose.txt", "folder": tmp_path / "rows", "md": tmp_path / "accents.md"}


def loaded(directory: Path):
    from transformers import AutoModelForCausalLM

    from lifecycle.tokens import load_tokenizer
    return AutoModelForCausalLM.from_pretrained(directory, use_safetensors=True).eval(), load_tokenizer(directory)


def score_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lifecycle.score", *args], cwd=cwd, env=stage_env(),
                          capture_output=True, text=True, timeout=600)


# ---------------------------------------------------------------- the command

def test_the_command_gives_the_figures_of_the_scoring_code_on_a_file_and_a_folder(tiny_lm, texts, tmp_path):
    out = tmp_path / "out" / "scores.json"
    score_main([str(tiny_lm), str(texts["txt"]), str(texts["folder"]), "--batch-size", "3", "--json", str(out)])
    report = json.loads(out.read_text())
    model, tokenizer = loaded(tiny_lm)
    expected = {"txt": [PROSE], "folder": [r["text"] for shard in ROWS for r in shard]}
    for key, documents in expected.items():
        want, _ = language_model_scores(model, tokenizer, documents, None, 3, "test")
        got = report["texts"][str(texts[key])]
        assert got == {"documents": len(documents)} | want
        assert got["bytes"] == sum(len(d.encode()) for d in documents)
    assert want["tokens"] > CONTEXT  # the folder's text needed the sliding window
    assert (report["context"], report["stride"]) == (CONTEXT, CONTEXT // 2)
    assert [p.name for p in out.parent.iterdir()] == ["scores.json"]  # written atomically: no temporary left


def test_the_table_has_one_row_per_text_with_every_figure(tiny_lm, texts, tmp_path):
    result = score_cli(str(tiny_lm), str(texts["txt"]), str(texts["md"]), "--stride", "8", "--json",
                       str(tmp_path / "s.json"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].split() == ["text", "documents", "tokens", "bytes", "characters", "perplexity", "bits/byte",
                                "bits/char"]
    report = json.loads((tmp_path / "s.json").read_text())["texts"]
    for line, name in zip(lines[1:], (str(texts["txt"]), str(texts["md"]))):
        m = report[name]
        assert line.split() == [name, str(m["documents"]), str(m["tokens"]), str(m["bytes"]), str(m["characters"]),
                                f"{m['perplexity']:.4f}", f"{m['bits_per_byte']:.5f}",
                                f"{m['bits_per_character']:.5f}"]
    assert len(lines) == 3


def test_bits_per_character_is_bits_per_byte_times_bytes_over_characters(tiny_lm):
    model, tokenizer = loaded(tiny_lm)
    metrics, per_document = language_model_scores(model, tokenizer, ["héllo 東京", "plain"], None, 4, "test")
    assert (metrics["characters"], metrics["bytes"]) == (8 + 5, 13 + 5)  # é takes 2 bytes, 東 and 京 3 each
    nats = float(per_document["nll"].sum())
    assert metrics["bits_per_character"] == round(nats / math.log(2) / 13, 5)
    assert metrics["bits_per_character"] == pytest.approx(metrics["bits_per_byte"] * 18 / 13, rel=1e-4)
    assert metrics["bits_per_character"] > metrics["bits_per_byte"]


@pytest.mark.parametrize("files,expected", [
    ([], "not a model directory (looked for model.onnx, or config.json with model.safetensors or "
         "model.safetensors.index.json)"),
    (["config.json", "pytorch_model.bin"], "no model.safetensors or model.safetensors.index.json beside config.json "
                                           "(only safetensors weights are loaded, never pickled ones)"),
])
def test_a_directory_without_a_model_is_named_with_what_was_looked_for(tmp_path, texts, files, expected):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    for name in files:
        (folder / name).write_text("{}")
    assert the_error(score_cli(str(folder), str(texts["txt"]))) == f"error: MODEL '{folder}': {expected}"


def test_a_missing_model_directory_is_named(tmp_path, texts):
    assert the_error(score_cli(str(tmp_path / "nowhere"), str(texts["txt"]))) == (
        f"error: MODEL '{tmp_path / 'nowhere'}': no such directory (give a model directory such as "
        "models/pretrained, or a variant name such as lm:int8_dynamic)")


def test_a_classifier_directory_is_refused_as_no_causal_lm(tiny_lm, texts, tmp_path):
    from transformers import GPT2Config, GPT2ForSequenceClassification
    directory = tmp_path / "classifier"
    shutil.copytree(tiny_lm, directory)
    config = GPT2Config.from_pretrained(tiny_lm, num_labels=2)
    GPT2ForSequenceClassification(config).save_pretrained(directory, safe_serialization=True)
    assert the_error(score_cli(str(directory), str(texts["txt"]))) == (
        f"error: MODEL '{directory}': a GPT2ForSequenceClassification, not a causal language model "
        "(models/finetuned is one only after finetune.task: causal_lm)")


def test_an_unknown_variant_names_the_available_ones(tmp_path, texts):
    (tmp_path / "models/compressed/lm/int8_dynamic").mkdir(parents=True)
    (tmp_path / "models/compressed/lm/int8_dynamic/model.onnx").write_bytes(b"")
    assert the_error(score_cli("lm:int9", str(texts["txt"]), cwd=tmp_path)) == \
        "error: lm variant 'int9': not found at models/compressed/lm/int9 (available: pytorch, int8_dynamic)"


def test_bad_text_stops_the_command_in_one_line_before_the_model_loads(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"body": "no text column"}\n')
    assert the_error(score_cli(str(tmp_path / "no-model-here"), str(bad))) == \
        f"error: {bad}: row 2: missing column 'text' (has: body)"


ONNX_LM = ROOT / "models/compressed/lm/int8_dynamic"


@pytest.mark.skipif(not (ONNX_LM / "model.onnx").is_file(),
                    reason="no ONNX LM variant in this tree (the compress stage writes models/compressed/lm)")
def test_the_command_scores_an_onnx_variant_as_the_compress_stage_does(tmp_path, monkeypatch):
    from lifecycle.variants import load_lm
    monkeypatch.chdir(ROOT)  # variant names are found under ./models
    text = tmp_path / "hamlet.txt"
    text.write_text("To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n")
    score_main(["lm:int8_dynamic", str(text), "--json", str(tmp_path / "s.json")])
    got = json.loads((tmp_path / "s.json").read_text())["texts"][str(text)]
    model, tokenizer = load_lm("int8_dynamic", ROOT / "models")
    want, _ = language_model_scores(model, tokenizer, [text.read_text()], None, 32, "test")
    assert got == {"documents": 1} | want and math.isfinite(got["bits_per_byte"])


# ---------------------------------------------------------------- reading texts

def test_a_text_file_is_one_document_and_jsonl_rows_are_one_each(texts, tmp_path):
    assert read_texts(texts["txt"]) == (["prose.txt"], [PROSE])
    ids, documents = read_texts(texts["folder"])
    assert ids == ["a", "b", "c"] and documents == [r["text"] for shard in ROWS for r in shard]
    (tmp_path / "bodies.jsonl").write_text('{"body": "one"}\n\n{"body": "two"}\n')
    assert read_texts(tmp_path / "bodies.jsonl", "body") == (["bodies.jsonl:1", "bodies.jsonl:3"], ["one", "two"])


@pytest.mark.parametrize("name,content,expected", [
    ("empty.txt", b"", "empty.txt: empty: no text"),
    ("blank.md", b"  \n\n", "blank.md: empty: no text"),
    ("latin1.txt", "caf\u00e9\n".encode("latin-1"), "latin1.txt: row 1: not valid UTF-8 (byte 0xe9 at offset 3)"),
    ("empty.jsonl", b"", "empty.jsonl: empty: no rows"),
    ("column.jsonl", b'{"text": "ok"}\n{"txt": "typo"}\n', "column.jsonl: row 2: missing column 'text' (has: txt)"),
    ("blank.jsonl", b'{"text": "ok"}\n{"text": " "}\n', "blank.jsonl: row 2: column 'text' is empty"),
    ("twice.jsonl", b'{"id": 1, "text": "a"}\n{"id": "1", "text": "b"}\n',
     "twice.jsonl: row 2: id '1' appears twice (first at twice.jsonl row 1)"),
    ("table.csv", b"text\nhello\n", "table.csv: not a .txt, .md or .jsonl file, nor a folder of .jsonl shards"),
])
def test_bad_text_is_one_line_naming_the_file_and_row(tmp_path, name, content, expected):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(StageError) as err:
        read_texts(tmp_path / name)
    assert str(err.value) == f"{tmp_path}/{expected}"
    assert isinstance(err.value, DataError) or name == "table.csv"


def test_a_folder_without_shards_is_named(tmp_path):
    (tmp_path / "notes.txt").write_text("a text file, but the folder wants .jsonl shards")
    with pytest.raises(StageError, match=r"a folder without \.jsonl files"):
        read_texts(tmp_path)


# ---------------------------------------------------------------- evaluate.texts in params

def with_texts(texts: list[dict]) -> dict:
    params = default_params()
    params["evaluate"]["texts"] = texts
    return params


@pytest.mark.parametrize("texts,expected", [
    ([{"name": "general", "path": "data/own/a.txt"}],
     "evaluate.texts[0].name = 'general': is reserved for the evaluate stage's own text (general, domain)"),
    ([{"name": "domain", "path": "data/own/a.txt"}], "evaluate.texts[0].name = 'domain': is reserved"),
    ([{"name": "mine", "path": "data/own/a.txt"}, {"name": "my.text", "path": "data/own/b.txt"}],
     "evaluate.texts[1].name = 'my.text': must be 1 to 64 letters, digits, _ or - (it becomes a metric key)"),
    ([{"name": "mine", "path": "data/own/a.txt"}, {"name": "mine", "path": "data/own/b.txt"}],
     "evaluate: texts[1].name = 'mine': repeats texts[0].name (names must be unique)"),
    ([{"name": "mine", "path": " "}], "evaluate.texts[0].path = ' ': must not be empty"),
    ([{"name": "mine"}], "evaluate.texts[0].path: is required"),
    ([{"name": "mine", "path": "a.txt", "column": "body"}], "evaluate.texts[0].column = 'body': unknown key "
                                                            "(allowed: name, path, text_column)"),
])
def test_bad_named_texts_are_one_line_naming_the_key(texts, expected):
    _, problems = P.validate(with_texts(texts))
    assert problems and problems[0].startswith(f"params.yaml: {expected}"), problems


def test_named_texts_default_to_none_and_valid_ones_load():
    params, problems = P.validate(default_params())
    assert problems == [] and params.evaluate.texts == []
    params, problems = P.validate(with_texts([{"name": "legal-2024_v1", "path": "data/own/legal",
                                               "text_column": "body"}]))
    assert problems == [] and params.evaluate.texts[0].text_column == "body"


# ---------------------------------------------------------------- the DVC dep check

def project_with_deps(directory: Path, deps: list[str]) -> Path:
    (directory / "dvc.yaml").write_text(yaml.safe_dump(
        {"stages": {"evaluate": {"cmd": "python -m stages.evaluate", "deps": deps}}}))
    (directory / "data/own/folder").mkdir(parents=True)
    for name in ("listed.txt", "unlisted.txt", "folder/inside.txt"):
        (directory / "data/own" / name).write_text(f"the text of {name}")
    return directory


def test_a_text_that_is_not_a_dep_of_evaluate_is_named_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.chdir(project_with_deps(tmp_path, ["stages/evaluate.py", "data/own/listed.txt", "data/own/folder"]))
    texts = [NamedText(name="a", path="data/own/listed.txt"), NamedText(name="b", path="data/own/unlisted.txt")]
    with pytest.raises(StageError) as err:
        check_tracked(texts)
    assert str(err.value) == (
        "params.yaml: evaluate.texts[1].path = 'data/own/unlisted.txt' is not a dep of the evaluate stage in "
        "dvc.yaml: add it to its deps so DVC re-runs evaluate when the text changes")


def test_a_text_inside_a_folder_dep_is_tracked_and_read(tmp_path, monkeypatch):
    monkeypatch.chdir(project_with_deps(tmp_path, ["data/own/listed.txt", "data/own/folder/"]))
    texts = [NamedText(name="a", path="./data/own/listed.txt"), NamedText(name="b", path="data/own/folder/inside.txt")]
    assert named_texts(texts) == {"a": (["listed.txt"], ["the text of listed.txt"]),
                                  "b": (["inside.txt"], ["the text of folder/inside.txt"])}


def test_a_listed_text_that_is_missing_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(project_with_deps(tmp_path, ["data/own/gone.txt"]))
    with pytest.raises(StageError) as err:
        check_tracked([NamedText(name="gone", path="data/own/gone.txt")])
    assert str(err.value) == "params.yaml: evaluate.texts[0].path = 'data/own/gone.txt': no such file or folder"


def test_no_named_texts_need_no_dvc_yaml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert named_texts([]) == {}


def test_evaluate_checks_the_dep_before_any_work(project):
    project_with_deps(project, ["data/own/listed.txt"])
    write_params(project, with_texts([{"name": "mine", "path": "data/own/unlisted.txt"}]))
    assert the_error(run_stage("evaluate", project)) == (
        "error: params.yaml: evaluate.texts[0].path = 'data/own/unlisted.txt' is not a dep of the evaluate stage in "
        "dvc.yaml: add it to its deps so DVC re-runs evaluate when the text changes")
    assert not (project / "reports").exists()


def test_the_projects_dvc_yaml_tracks_what_evaluate_reads():
    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["evaluate"]["deps"]
    assert "lifecycle/texts.py" in deps


# ---------------------------------------------------------------- in eval.json (the tiny DAG: minutes)

@pytest.fixture(scope="module")
def evaluated_with_text(tiny_models, tmp_path_factory) -> tuple[Path, dict]:
    """The evaluate stage on a copy of tiny_models with one named .jsonl text (a DVC dep)."""
    directory = tmp_path_factory.mktemp("evaluated-text") / "project"
    shutil.copytree(tiny_models, directory)
    (directory / "data/own").mkdir(parents=True, exist_ok=True)
    (directory / "data/own/mine.jsonl").write_text("".join(json.dumps(r) + "\n" for shard in ROWS for r in shard))
    (directory / "dvc.yaml").write_text(yaml.safe_dump(
        {"stages": {"evaluate": {"cmd": "python -m stages.evaluate", "deps": ["data/own/mine.jsonl"]}}}))
    params = tiny_params()
    params["evaluate"]["texts"] = [{"name": "mine", "path": "data/own/mine.jsonl"}]
    write_params(directory, params)
    result = run_stage("evaluate", directory)
    assert result.returncode == 0, result.stderr
    return directory, json.loads((directory / "reports/eval.json").read_text())


def test_a_named_text_is_reported_beside_general_with_the_same_figures(evaluated_with_text):
    project, report = evaluated_with_text
    lm = report["lm_pretrained"]
    assert list(lm) == ["general", "domain", "mine"]
    assert set(lm["mine"]) == set(lm["general"]) >= {"bits_per_character", "characters", "unigram_bits_per_byte"}
    texts = [r["text"] for shard in ROWS for r in shard]
    assert (lm["mine"]["bytes"], lm["mine"]["characters"]) == (sum(len(t.encode()) for t in texts),
                                                               sum(len(t) for t in texts))
    records = {r["id"]: r for r in map(json.loads, (project / "reports/examples/eval/lm_pretrained.mine.jsonl")
                                       .read_text().splitlines())}
    assert sorted(records) == ["a", "b", "c"]
    nll = sum(r["nll"] for r in records.values())
    assert round(nll / math.log(2) / lm["mine"]["bytes"], 5) == pytest.approx(lm["mine"]["bits_per_byte"], abs=1.01e-5)


def test_the_command_agrees_with_the_evaluate_stage(evaluated_with_text, tmp_path):
    project, report = evaluated_with_text
    result = score_cli("models/pretrained", "data/own/mine.jsonl", "--json", str(tmp_path / "s.json"), cwd=project)
    assert result.returncode == 0, result.stderr
    got = json.loads((tmp_path / "s.json").read_text())["texts"]["data/own/mine.jsonl"]
    want = report["lm_pretrained"]["mine"]
    assert {k: got[k] for k in ("perplexity", "bits_per_byte", "bits_per_character", "tokens", "bytes")} == \
        {k: want[k] for k in ("perplexity", "bits_per_byte", "bits_per_character", "tokens", "bytes")}
