"""Labelled splits read from a folder of shards: corpus order across shards, errors naming the shard and its row."""
import json

import pytest

from lifecycle.core import DataError, StageError
from lifecycle.labels import labelled

CLASSES = ["negative", "positive"]


def write_shards(directory, split: str, shards: list[list[dict]]) -> None:
    (directory / split).mkdir(parents=True)
    for i, rows in enumerate(shards):
        (directory / split / f"{i:05d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_shards_are_read_in_name_order_as_one_split(tmp_path):
    write_shards(tmp_path, "train", [[{"text": "a", "label": "positive"}], [{"text": "b", "label": "negative"},
                                                                           {"text": "c", "label": "positive"}]])
    (tmp_path / "train/notes.txt").write_text("not a shard")
    assert labelled("train", CLASSES, tmp_path) == (["a", "b", "c"], [1, 0, 1])


def test_label_outside_the_classes_names_the_shard_and_its_row(tmp_path):
    write_shards(tmp_path, "test", [[{"text": "a", "label": "positive"}],
                                    [{"text": "b", "label": "negative"}, {"text": "c", "label": "neutral"}]])
    with pytest.raises(DataError) as err:
        labelled("test", CLASSES, tmp_path)
    assert str(err.value) == (f"{tmp_path}/test/00001.jsonl: row 2: label 'neutral' is not one of finetune.classes "
                              "(negative, positive)")


def test_missing_column_names_the_shard_and_its_row(tmp_path):
    write_shards(tmp_path, "train", [[{"text": "a", "label": "positive"}], [{"text": "b"}]])
    with pytest.raises(DataError, match=r"train/00001\.jsonl: row 1: missing column 'label'"):
        labelled("train", CLASSES, tmp_path)


def test_a_split_without_shards_is_one_clear_error(tmp_path):
    (tmp_path / "validation").mkdir()
    with pytest.raises(StageError, match=r"validation: no \*\.jsonl shard in the folder"):
        labelled("validation", CLASSES, tmp_path)
