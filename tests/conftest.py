"""Shared helpers: run a stage as a user would, in a scratch project directory."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "DVC_NO_ANALYTICS"):
    os.environ[var] = "1"


def stage_env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", DVC_NO_ANALYTICS="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


# The commands beside the DAG live in the library; every other name is a DVC stage.
COMMANDS = {"serve": "lifecycle.serving", "compare": "lifecycle.review.compare", "params": "lifecycle.params"}


def run_stage(name: str, cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    module = COMMANDS.get(name, f"stages.{name}")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=stage_env(),
                          capture_output=True, text=True, timeout=timeout)


def default_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def write_params(directory: Path, params: dict) -> Path:
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def tiny_params() -> dict:
    """Real data, cut down: the whole DAG runs in well under a minute."""
    params = default_params()
    limits = {"shakespeare": 30, "wikipedia": 6, "rotten_tomatoes": 400}
    for corpus in ("pretrain", "finetune"):
        for source in params["collect"][corpus]:
            source["limit"] = limits[source["name"]]
    params["tokenizer"]["vocab_size"] = 512
    params["tokenize"]["block_size"] = 64
    params["model"].update(n_layers=1, d_model=32, n_heads=2, d_ff=64, context_length=64)
    params["pretrain"].update(max_steps=30, batch_size=4, warmup_steps=3, eval_steps=10, save_steps=10,
                              eval_max_blocks=16, logging_steps=5)
    params["pretrain"]["samples"]["max_new_tokens"] = 8
    params["finetune"].update(epochs=1, batch_size=16, eval_steps=10)
    params["audit"]["classifier"]["names"]["per_group"] = 2
    params["audit"]["bootstrap"]["n_boot"] = 20
    params["compress"]["quantization"]["calibration_examples"] = 8
    params["compress"]["quantization"]["calibration_length"] = 16
    params["compress"]["evaluation"].update(examples=48, documents=3, document_chars=500)
    params["distill"].update(epochs=1, batch_size=16, max_train_examples=64)
    params["distill"]["student"].update(n_layers=1, d_model=16, n_heads=2, d_ff=32)
    params["benchmark"].update(batch_sizes=[1, 2], sequence_lengths=[8, 16], warmup=1, repetitions=3)
    params["benchmark"]["generation"].update(new_tokens=4, prompt_tokens=[4, 8], repetitions=1, num_beams=2)
    params["benchmark"]["small"].update(n_layers=1, d_model=32, n_heads=2, d_ff=64, sequence_length=16)
    return params


STAGES_TO_TOKENS = ("collect", "prepare", "tokenizer", "tokenize")


@pytest.fixture(scope="session")
def tiny_tokens(tmp_path_factory) -> Path:
    """A scratch project on the tiny config with the data stages run (collect -> tokenize)."""
    directory = tmp_path_factory.mktemp("tiny-tokens")
    write_params(directory, tiny_params())
    for name in STAGES_TO_TOKENS:
        result = run_stage(name, directory)
        assert result.returncode == 0, result.stderr
    return directory


def run_in_copy(source: Path, directory: Path, stage: str) -> Path:
    """Copy a scratch project to `directory` and run one stage there, which must succeed."""
    import shutil
    shutil.copytree(source, directory)
    result = run_stage(stage, directory)
    assert result.returncode == 0, result.stderr
    return directory


@pytest.fixture(scope="session")
def tiny_models(tiny_tokens, tmp_path_factory) -> Path:
    """A scratch project on the tiny config with pretrain and finetune run too: models/pretrained (causal LM),
    models/finetuned (classifier), data/prepared. Copy it before writing into it."""
    import shutil
    directory = tmp_path_factory.mktemp("tiny-models") / "project"
    shutil.copytree(tiny_tokens, directory)
    for name in ("pretrain", "finetune"):
        result = run_stage(name, directory)
        assert result.returncode == 0, result.stderr
    return directory


@pytest.fixture(scope="session")
def tiny_compressed(tiny_models, tmp_path_factory) -> Path:
    """tiny_models with the distill and compress stages run (every variant, the student's too, pruning at 0.5):
    models/distilled, models/compressed, reports/distill.json and reports/compress.json. Copy it before writing
    into it."""
    import shutil
    directory = tmp_path_factory.mktemp("tiny-compressed") / "project"
    shutil.copytree(tiny_models, directory)
    params = tiny_params()
    params["compress"]["pruning"]["amount"] = 0.5
    write_params(directory, params)
    for name in ("distill", "compress"):
        result = run_stage(name, directory)
        assert result.returncode == 0, result.stderr
    return directory
PROJECT_FILES = ("dvc.yaml", "stages", "lifecycle", "requirements-data.txt", "Makefile", ".gitignore", "data/audit",
                 "data/requests", "data/own")


def git(directory: Path, *args: str) -> str:
    result = subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.org", *args], cwd=directory,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def dvc(directory: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=directory, env=stage_env(),
                            capture_output=True, text=True)
    assert not check or result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory) -> Path:
    """A git + DVC copy of the project on the tiny config after one `dvc repro`, committed with its results
    (the state a pull request's base has). Copy it (`copy_repo`) before changing anything in it."""
    import shutil
    project = tmp_path_factory.mktemp("tiny-repo") / "project"
    project.mkdir()
    for item in PROJECT_FILES:
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, project / item)
    write_params(project, tiny_params())
    git(project, "init", "-q", "-b", "main")
    dvc(project, "init", "-q")
    shutil.copytree(ROOT / ".dvc/plots", project / ".dvc/plots")  # the project's own plot templates
    shutil.copy(ROOT / ".dvcignore", project / ".dvcignore")  # byte-code is no part of a code dependency
    git(project, "add", "-A")
    git(project, "commit", "-qm", "tiny project")
    dvc(project, "repro")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "tiny run")
    return project


def copy_repo(source: Path, destination: Path) -> Path:
    import shutil
    shutil.copytree(source, destination, symlinks=True)
    return destination


@pytest.fixture
def project(tmp_path) -> Path:
    """An empty scratch project directory holding the default params.yaml."""
    write_params(tmp_path, default_params())
    return tmp_path


def the_error(result: subprocess.CompletedProcess) -> str:
    """The single error line of a failed stage (progress logs may precede it), asserting there is only one."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0], result.stderr
    return errors[0]
