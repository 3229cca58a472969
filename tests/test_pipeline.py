"""End to end: the real DAG on a tiny config, run by DVC as a user would."""
import json
import subprocess
import sys

import pytest

from lifecycle.io import shards
from tests.conftest import copy_repo, run_stage, stage_env, tiny_params, write_params


@pytest.fixture(scope="module")
def tiny_project(tiny_repo, tmp_path_factory):
    """A copy of the project with a tiny config, after one `dvc repro` (shared with the other DAG tests)."""
    return copy_repo(tiny_repo, tmp_path_factory.mktemp("pipeline") / "project")


def dvc(project, *args) -> str:
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=project, env=stage_env(),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_repro_writes_every_declared_output(tiny_project):
    for folder in ("data/raw/pretrain", "data/raw/finetune", "data/prepared/pretrain/train",
                   "data/prepared/finetune/test"):  # sharded: folders of *.jsonl
        assert shards(tiny_project / folder), folder
    for path in ("models/tokenizer/tokenizer.json",
                 "data/tokens/dataset_dict.json",
                 "reports/data.json", "reports/tokens.json", "reports/plots/lengths_pretrain.json",
                 "models/pretrained/model.safetensors", "reports/pretrain.json", "models/finetuned/model.safetensors",
                 "reports/eval.json", "reports/plots/confusion.json", "reports/plots/calibration.json",
                 "reports/monitor.json", "reports/bias.json", "reports/plots/bias_by_group.json",
                 "models/compressed/classifier/int8_dynamic/model.onnx", "models/compressed/lm/onnx_fp32/model.onnx",
                 "reports/compress.json", "models/distilled/model.safetensors", "reports/distill.json",
                 "reports/bench.json", "reports/plots/speedup.json",
                 "reports/report.md", "reports/MODEL_CARD.md", "reports/figures/pretraining-loss.png"):
        assert (tiny_project / path).exists(), path


def test_second_repro_does_nothing(tiny_project):
    out = dvc(tiny_project, "repro")
    assert "Data and pipelines are up to date" in out
    assert "Running stage" not in out


def test_dag_runs_from_collect_to_evaluate(tiny_project):
    out = dvc(tiny_project, "dag", "--dot")
    for edge in ('"collect" -> "prepare"', '"prepare" -> "tokenizer"', '"tokenizer" -> "tokenize"',
                 '"tokenize" -> "pretrain"', '"pretrain" -> "finetune"', '"finetune" -> "evaluate"',
                 '"finetune" -> "compress"', '"finetune" -> "distill"', '"compress" -> "benchmark"',
                 '"evaluate" -> "report"'):
        assert edge in out, out


def test_data_report_counts_every_step_and_split(tiny_project):
    report = json.loads((tiny_project / "reports/data.json").read_text())
    pretrain = report["pretrain"]
    assert set(pretrain["sources"]) == {"shakespeare", "wikipedia"}
    assert sum(s["documents"] for s in pretrain["split"].values()) == pretrain["documents_out"]
    steps = pretrain["sources"]["shakespeare"]
    names = list(steps)
    for before, after in zip(names, names[1:]):
        assert steps[before]["documents_out"] == steps[after]["documents_in"], (before, after)
    assert set(report["finetune"]["pii_replaced"]) == {"email", "phone", "ip", "credit_card"}


def test_tokens_dataset_has_fixed_blocks_per_split(tiny_project):
    from datasets import load_from_disk

    tokens = load_from_disk(str(tiny_project / "data/tokens"))
    assert set(tokens) == {"train", "validation", "test"}
    assert all(len(row) == 64 for row in tokens["train"]["input_ids"][:20])
    report = json.loads((tiny_project / "reports/tokens.json").read_text())
    assert report["train"]["blocks"] == len(tokens["train"])
    assert 1.0 < report["train"]["bytes_per_token"] < 8.0


def test_prepare_twice_gives_byte_identical_outputs(tiny_project):
    def outputs() -> dict:  # every shard, so a different number of shards shows too
        paths = sorted((tiny_project / "data/prepared").rglob("*.jsonl")) + [tiny_project / "reports/data.json"]
        return {p: p.read_bytes() for p in paths}
    first = outputs()
    result = run_stage("prepare", tiny_project)
    assert result.returncode == 0, result.stderr
    assert outputs() == first


def test_params_change_reruns_only_what_depends_on_it(tiny_project):
    params = tiny_params()
    params["evaluate"]["calibration_bins"] = 5
    write_params(tiny_project, params)
    try:
        out = dvc(tiny_project, "repro")
        assert "Running stage 'evaluate'" in out
        for upstream in ("collect", "prepare", "tokenize", "pretrain", "finetune"):
            assert f"Running stage '{upstream}'" not in out
        assert len(json.loads((tiny_project / "reports/plots/calibration.json").read_text())) <= 5
    finally:
        write_params(tiny_project, tiny_params())
        dvc(tiny_project, "repro")


def changed_stages(project) -> set[str]:
    """The stages `dvc status` lists, each as the `name:` line that starts its entry."""
    return {line[:-1] for line in dvc(project, "status").splitlines() if line.endswith(":") and not line[0].isspace()}


def stages_reaching(module: str) -> set[str]:
    import yaml

    from lifecycle.deps import closure, entry_module
    from tests.conftest import ROOT

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name for name, stage in stages.items() if module in closure(ROOT, entry_module(stage["cmd"]))}


@pytest.mark.parametrize("module", ["lifecycle/pii.py", "lifecycle/scoring.py", "lifecycle/params/pretrain.py"])
def test_editing_a_library_module_changes_exactly_the_stages_its_imports_reach(tiny_repo, tmp_path, module):
    project = copy_repo(tiny_repo, tmp_path / "project")
    with open(project / module, "a") as f:
        f.write("# a comment appended by the test\n")
    assert changed_stages(project) == stages_reaching(module)
