"""Per-example result files: the path of each metric's examples, records sorted by id and rounded, read back from a
path or a text stream, whole folders replaced at once; bad input fails in one line."""
import io
import json
from pathlib import Path

import numpy as np
import pytest

from lifecycle.core import DataError, StageError
from lifecycle.examples import (
    EXAMPLES,
    example_file,
    examples_path,
    ids_and_texts,
    metric_examples_path,
    read_examples,
    replaced_folder,
    write_classifier_examples,
    write_lm_examples,
)


@pytest.mark.parametrize("report,key,path", [
    ("reports/eval.json", "classifier.accuracy", "reports/examples/eval/classifier.jsonl"),
    ("reports/eval.json", "lm_pretrained.general.perplexity", "reports/examples/eval/lm_pretrained.general.jsonl"),
    ("reports/compress.json", "classifier.int8_dynamic.accuracy",
     "reports/examples/compress/classifier.int8_dynamic.jsonl"),
    ("reports/compress.json", "lm.int8_dynamic.bits_per_byte", "reports/examples/compress/lm.int8_dynamic.jsonl"),
])
def test_a_metric_names_its_examples_file(report, key, path):
    assert metric_examples_path(report, key) == Path(path)
    stem, prefix = Path(report).stem, key.rpartition(".")[0]
    assert examples_path(stem, prefix) == Path(path) == EXAMPLES / stem / f"{prefix}.jsonl"


def test_a_metric_key_without_a_prefix_is_one_clear_line():
    with pytest.raises(StageError, match=r"reports/eval.json:accuracy: a metric key needs a prefix"):
        metric_examples_path("reports/eval.json", "accuracy")


def test_classifier_examples_round_trip_sorted_by_id_and_rounded(tmp_path):
    path = tmp_path / "classifier.jsonl"
    probabilities = np.array([[0.1234567891, 0.8765432109], [0.5, 0.5], [0.9, 0.1]])
    assert write_classifier_examples(path, ["c", "a", "b"], [1, 0, np.int64(0)], probabilities) == 3
    assert read_examples(path) == [
        {"id": "a", "label": 0, "probabilities": [0.5, 0.5]},
        {"id": "b", "label": 0, "probabilities": [0.9, 0.1]},
        {"id": "c", "label": 1, "probabilities": [0.123457, 0.876543]}]
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["a", "b", "c"]


def test_lm_examples_round_trip_from_a_text_stream(tmp_path):
    path = tmp_path / "lm.jsonl"
    write_lm_examples(path, ["doc:2", "doc:10"], np.array([3.14159265, 2.5]), np.array([4, 3]), [12, 9])
    records = read_examples(io.StringIO(path.read_text()))
    assert records == [{"id": "doc:10", "nll": 2.5, "tokens": 3, "bytes": 9},
                       {"id": "doc:2", "nll": 3.141593, "tokens": 4, "bytes": 12}]
    assert all(type(r["tokens"]) is int and type(r["bytes"]) is int for r in records)


def test_duplicate_ids_are_refused_with_the_row(tmp_path):
    with pytest.raises(DataError) as err:
        write_lm_examples(tmp_path / "lm.jsonl", ["a", "b", "a"], [1.0] * 3, [1] * 3, [1] * 3)
    assert str(err.value) == f"{tmp_path / 'lm.jsonl'}: row 3: id 'a' appears twice: per-example results need " \
                             "unique ids"
    assert not (tmp_path / "lm.jsonl").exists()


def test_ids_and_values_of_different_lengths_are_refused(tmp_path):
    with pytest.raises(StageError, match=r"2 ids but 3 values of 'label'"):
        write_classifier_examples(tmp_path / "c.jsonl", ["a", "b"], [0, 1, 1], [[1.0, 0.0]] * 2)


def test_a_bad_line_names_the_file_and_row(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "a", "label": 0}\n{"label": 1}\n')
    with pytest.raises(DataError, match=r"c.jsonl: row 2: missing column 'id'"):
        read_examples(path)
    with pytest.raises(StageError, match=r"no such examples file"):
        read_examples(tmp_path / "missing.jsonl")


def test_replaced_folder_swaps_the_whole_folder_or_nothing(tmp_path):
    old = examples_path("eval", "stale", tmp_path)
    old.parent.mkdir(parents=True)
    old.write_text("{}\n")
    with pytest.raises(RuntimeError), replaced_folder("eval", tmp_path) as folder:
        write_lm_examples(example_file(folder, "lm_pretrained.general"), ["a"], [1.0], [1], [1])
        raise RuntimeError("killed half way")
    assert sorted(p.name for p in old.parent.iterdir()) == ["stale.jsonl"]
    with replaced_folder("eval", tmp_path) as folder:
        write_lm_examples(example_file(folder, "lm_pretrained.general"), ["a"], [1.0], [1], [1])
    assert sorted(p.name for p in old.parent.iterdir()) == ["lm_pretrained.general.jsonl"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"]  # no temporary left beside it


def test_ids_and_texts_keep_the_file_order(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text('{"id": "z", "text": "last"}\n{"id": 7, "text": "first"}\n')
    assert ids_and_texts(path) == (["z", "7"], ["last", "first"])
    path.write_text('{"text": "no id"}\n')
    with pytest.raises(DataError, match=r"row 1: missing column 'id'"):
        ids_and_texts(path)
