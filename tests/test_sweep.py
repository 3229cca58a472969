"""The pretraining sweep's planning and report (lifecycle.sweep) and the DAG timer (benchmarks.repro_time)."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.repro_time import STAGE_LINE, stage_seconds, table
from lifecycle.core import StageError
from lifecycle.params.base import read_yaml
from lifecycle.sweep import finished, markdown, read_grid, row, set_args, steps_for, validated, with_overrides

ROOT = Path(__file__).resolve().parent.parent


def test_overrides_set_dotted_keys_without_touching_the_original():
    data = {"model": {"family": "gpt2", "d_model": 384}, "seed": 1}
    out = with_overrides(data, {"model.family": "llama", "seed": 7})
    assert out == {"model": {"family": "llama", "d_model": 384}, "seed": 7}
    assert data["model"]["family"] == "gpt2"


@pytest.mark.parametrize("key, message", [("model.nope", "no key 'nope'"), ("nope.x", "no section 'nope'")])
def test_unknown_override_keys_are_one_line(key, message):
    with pytest.raises(StageError, match=message):
        with_overrides({"model": {"family": "gpt2"}}, {key: 1})


def test_a_bad_value_names_the_variant_and_the_key():
    data = read_yaml(ROOT / "params.yaml")
    with pytest.raises(StageError, match=r"variant wide: model\.family = 'gpt3'"):
        validated(data, "wide", {"model.family": "gpt3"})
    assert validated(data, "ok", {"model.family": "llama"}).model.family == "llama"


def test_the_committed_grid_is_valid():
    grid = read_grid(ROOT / "benchmarks" / "sweep.yaml")
    data = read_yaml(ROOT / "params.yaml")
    for variant in grid["variants"]:
        validated(data, variant["name"], {**(grid.get("set") or {}), **(variant.get("set") or {})})


def test_grid_needs_unique_names(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("variants:\n  - {name: a}\n  - {name: a}\n")
    with pytest.raises(StageError, match="unique `name`"):
        read_grid(path)


def test_steps_fill_the_budget_at_the_probed_speed():
    params = validated(read_yaml(ROOT / "params.yaml"), "x", {"pretrain.batch_size": 8, "model.context_length": 128})
    steps = steps_for(params, speed=2048.0, budget=100, warmup_share=0.1)  # 1024 tokens a step: 2 steps a second
    assert steps == {"pretrain.max_steps": 200, "pretrain.warmup_steps": 20}


def test_set_args_write_values_as_dvc_parses_them():
    assert set_args({"a.b": "llama", "c": 3e-3, "d": None, "e": True}) == [
        "-S", "a.b=llama", "-S", "c=0.003", "-S", "d=null", "-S", "e=true"]


def exp_show_entry():
    metrics = {"reports/pretrain.json": {"data": {"steps": 100, "tokens_seen": 204800, "train_seconds": 60.0,
                                                  "tokens_per_second": 3413.3, "mfu": 0.41,
                                                  "validation_bits_per_byte": 2.5,
                                                  "greedy_repeated_4gram_share": 0.25}},
               "reports/model.json": {"data": {"parameters": {"total": 2_500_000}}}}
    return {"rev": "b" * 40, "experiments": [
        {"revs": [{"rev": "a" * 40, "name": "sweep-small", "data": {"metrics": metrics}}]},
        {"revs": [{"rev": "c" * 40, "name": "noise-seed-1", "data": {"metrics": metrics}}]},
        {"revs": [{"rev": "d" * 40, "name": "sweep-failed", "data": {"metrics": None}}]},
        {"executor": {"state": "running"}, "revs": [{"rev": "e" * 40, "name": "sweep-running",
                                                     "data": {"metrics": metrics}}]}]}


def test_only_finished_sweep_experiments_are_read():
    found = finished(exp_show_entry())
    assert list(found) == ["small"] and found["small"]["rev"] == "a" * 40


def test_rows_and_table_sort_by_test_bits_per_byte():
    result = finished(exp_show_entry())["small"]
    worse = row({"name": "big", "set": {"model.d_model": 512}}, result, {"bits_per_byte": 2.4, "perplexity": 200.0})
    better = row({"name": "small", "set": {}}, result, {"bits_per_byte": 2.2, "perplexity": 150.0})
    assert better["bits_per_byte_per_minute"] == 2.2 and better["parameters"] == 2_500_000
    text = markdown([worse, better], {"budget_seconds": 60}, {"cpu": "X", "cpu_flags": "avx2 amx_bf16"}, "make sweep")
    lines = [line for line in text.splitlines() if line.startswith("| small") or line.startswith("| big")]
    assert lines[0].startswith("| small") and "**2.2000**" in lines[0] and "model.d_model=512" in lines[1]
    assert "AMX yes" in text and "25%" in lines[0]


def test_stage_seconds_from_dvc_output():
    assert STAGE_LINE.match("Running stage 'prepare':").group(1) == "prepare"
    assert stage_seconds([(10.0, "a"), (12.5, "b")], start=0.0, end=20.0) == {"setup": 10.0, "a": 2.5, "b": 7.5}
    assert "| **total** | **20** | 100% |" in table({"a": 5.0, "b": 15.0}, 20.0)
