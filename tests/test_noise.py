"""The measured noise band: known answers for the band, DVC-style flattening, and `python -m lifecycle.review.noise`
on a one-stage project whose metric depends on the seed."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import copy_repo, dvc, git, stage_env, the_error

from lifecycle.core import StageError
from lifecycle.review.noise import band, experiments, noise_table, numeric_metrics

T_975_2 = 4.302652729911275  # scipy.stats.t.ppf(0.975, 2)


def test_band_of_one_two_three_is_t_times_root_two_times_sd():
    result = band([1.0, 2.0, 3.0], 0.95)
    assert result["mean"] == 2.0 and result["sd"] == 1.0
    assert result["band"] == pytest.approx(T_975_2 * math.sqrt(2), rel=1e-5)  # 6.0849


def test_band_widens_with_confidence():
    values = [1.0, 2.0, 3.0]
    assert band(values, 0.99)["band"] > band(values, 0.95)["band"] > band(values, 0.5)["band"]


def test_band_of_equal_values_is_exactly_zero():
    assert band([0.1, 0.1, 0.1]) == {"mean": 0.1, "sd": 0.0, "band": 0.0}


def test_band_needs_two_runs_and_a_confidence_below_one():
    with pytest.raises(StageError, match="at least 2 runs"):
        band([1.0])
    with pytest.raises(StageError, match="--confidence 1.0"):
        band([1.0, 2.0], 1.0)


def test_numeric_metrics_are_flattened_as_dvc_does_without_environment_or_non_numbers():
    metrics = {"reports/eval.json": {"data": {"classifier": {"accuracy": 0.8, "name": "tiny", "ok": True,
                                                             "curve": [1, 2]},
                                              "environment": {"cores": 2}, "loss": float("nan"), "steps": 30}},
               "reports/broken.json": {"error": "unreadable"}}
    assert numeric_metrics(metrics) == {"reports/eval.json:classifier.accuracy": 0.8, "reports/eval.json:steps": 30}


def test_noise_table_skips_and_counts_metrics_a_run_lacks_and_flags_gated_ones():
    runs = [{"a:x": 1.0, "a:y": 5.0, "a:z": 1.0}, {"a:x": 2.0, "a:y": 5.0}, {"a:x": 3.0, "a:y": 5.0}]
    table, missing = noise_table(runs, gated={"a:x"})
    assert missing == 1 and set(table) == {"a:x", "a:y"}
    assert table["a:x"]["values"] == [1.0, 2.0, 3.0] and table["a:x"]["gated"] is True
    assert table["a:y"]["sd"] == 0.0 and table["a:y"]["gated"] is False


def test_experiments_of_a_baseline_are_read_by_name():
    entry = {"rev": "abc1234def", "experiments": [
        {"name": "noise-seed-2",
         "revs": [{"name": "noise-seed-2", "data": {"metrics": {"m.json": {"data": {"a": 1}}}}}]},
        {"name": None, "revs": [{"name": "exp-1f2e3", "data": {}}]}]}
    found = experiments(entry)
    assert set(found) == {"noise-seed-2", "exp-1f2e3"}
    assert found["noise-seed-2"]["metrics"]["m.json"]["data"] == {"a": 1}


# ---------------------------------------------------------------- end to end, in a one-stage project

SCORE = ("python -c \"import json, yaml; s = yaml.safe_load(open('params.yaml'))['seed']; "
         "json.dump({'model': {'accuracy': s / 10, 'name': 'tiny'}, 'size_mb': 3.5, 'environment': {'cores': 2}}, "
         "open('metrics.json', 'w'))\"")
GATE = "metrics.json:model.accuracy"


def noise(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lifecycle.review.noise", *args], cwd=project, env=stage_env(),
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A committed one-stage project (seed 1) after `--seeds 2 3`: accuracy = seed / 10, size_mb constant."""
    project = tmp_path_factory.mktemp("noise") / "project"
    project.mkdir()
    stage = {"cmd": SCORE, "params": ["seed"], "metrics": [{"metrics.json": {"cache": False}}]}
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"score": stage}}, sort_keys=False))
    (project / "params.yaml").write_text(yaml.safe_dump({"seed": 1, "gates": [{"metric": GATE, "min": 0.0}]}))
    git(project, "init", "-q", "-b", "main")
    dvc(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "one stage")
    dvc(project, "repro")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "run")
    result = noise(project, "--seeds", "2", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    return project, result


def test_noise_measures_the_baseline_and_one_experiment_per_seed(measured):
    project, result = measured
    data = json.loads((project / "reports/noise.json").read_text())
    head = git(project, "rev-parse", "--short=7", "HEAD").strip()
    assert data["seeds"] == [1, 2, 3] and data["runs"] == [head, "noise-seed-2", "noise-seed-3"]
    assert set(data["metrics"]) == {GATE, "metrics.json:size_mb"} and data["skipped_missing_in_some_runs"] == 0
    accuracy, size = data["metrics"][GATE], data["metrics"]["metrics.json:size_mb"]
    assert accuracy["values"] == [0.1, 0.2, 0.3] and accuracy["sd"] == pytest.approx(0.1)
    assert accuracy["band"] == pytest.approx(0.1 * T_975_2 * math.sqrt(2), rel=1e-5) and accuracy["gated"] is True
    assert size["values"] == [3.5] * 3 and size["sd"] == 0.0 and size["gated"] is False
    assert GATE in result.stdout and "2 metrics measured (1 gated)" in result.stdout


def test_noise_leaves_the_workspace_alone(measured):
    project, _ = measured
    assert yaml.safe_load((project / "params.yaml").read_text())["seed"] == 1
    assert json.loads((project / "metrics.json").read_text())["model"]["accuracy"] == 0.1
    assert git(project, "status", "--porcelain", "--untracked-files=no") == ""


def test_noise_reuses_the_experiments_of_the_same_baseline(measured, tmp_path):
    project = copy_repo(measured[0], tmp_path / "project")
    result = noise(project, "--seeds", "2", "3")
    assert result.returncode == 0, result.stderr
    assert "reusing experiment noise-seed-2" in result.stdout and "dvc exp run" not in result.stdout
    assert json.loads((project / "reports/noise.json").read_text())["metrics"][GATE]["values"] == [0.1, 0.2, 0.3]


def test_noise_refuses_the_baseline_seed_in_one_line(measured):
    assert "not the baseline's (1)" in the_error(noise(measured[0], "--seeds", "1", "2"))


def test_noise_refuses_a_workspace_that_differs_from_head(measured, tmp_path):
    project = copy_repo(measured[0], tmp_path / "project")
    (project / "params.yaml").write_text((project / "params.yaml").read_text().replace("seed: 1", "seed: 7"))
    assert "differs from HEAD (params.yaml)" in the_error(noise(project, "--seeds", "2"))
