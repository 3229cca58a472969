"""Nothing lost: a stage that fails under `dvc repro` or `dvc exp run` (bad params, bad data, kill -9) leaves every
previous output in place, byte for byte: the DVC-cached ones (data/, models/) and the git-tracked ones (reports/)."""
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, copy_repo, dvc, stage_env

# the user's inputs, the trainer's resumable scratch space, the data stages' work files (datatrove's logs stay there
# after a failure, for reading)
SCRATCH = ("data/own", "models/checkpoints", "data/.work")


def snapshot(project: Path, *also: str) -> dict[str, str]:
    """sha256 of every file under data/, models/ and reports/ (and `also`), scratch space excluded."""
    files = [p for top in ("data", "models", "reports") for p in (project / top).rglob("*") if p.is_file()]
    files += [project / name for name in also]
    return {str(p.relative_to(project)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files
            if not str(p.relative_to(project)).startswith(SCRATCH)}


def edit_params(project: Path, change) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    change(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture
def repo(tiny_repo, tmp_path) -> Path:
    project = copy_repo(tiny_repo, tmp_path / "project")
    assert (project / "models/pretrained/model.safetensors").exists() and (project / "reports/pretrain.json").exists()
    return project


def test_every_output_is_persistent():
    """DVC deletes a stage's outputs before it runs it unless they are `persist: true`; the stages replace them
    atomically themselves (lifecycle.io.atomic_path)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    loose = [f"{name}: {out}" for name, stage in stages.items() for kind in ("outs", "metrics", "plots")
             for out in stage.get(kind, []) if not (isinstance(out, dict) and next(iter(out.values())).get("persist"))]
    assert not loose, loose


def test_bad_params_keep_every_output(repo):
    before = snapshot(repo, "dvc.lock")
    edit_params(repo, lambda p: p["pretrain"].update(max_steps=-5))
    result = dvc(repo, "repro", "pretrain", check=False)
    assert result.returncode != 0 and "pretrain.max_steps" in result.stdout + result.stderr
    assert snapshot(repo, "dvc.lock") == before


def test_bad_data_keeps_every_output(repo):
    before = snapshot(repo, "dvc.lock")
    (repo / "data/own/notes.txt").write_bytes(b"a line of the user's notes\n\xff\xfe not UTF-8\n")
    edit_params(repo, lambda p: p["collect"]["pretrain"].append(
        {"name": "notes", "kind": "path", "path": "data/own/notes.txt", "format": "text"}))
    result = dvc(repo, "repro", "collect", check=False)
    assert result.returncode != 0 and "data/own/notes.txt" in result.stdout + result.stderr
    assert snapshot(repo, "dvc.lock") == before


def test_failed_experiment_keeps_every_output_and_params(repo):
    before = snapshot(repo, "dvc.lock", "params.yaml")
    result = subprocess.run([sys.executable, "-m", "lifecycle.experiments", "-S", "pretrain.max_steps=-5"], cwd=repo,
                            env=stage_env(), capture_output=True, text=True)
    assert result.returncode != 0 and "params.yaml: restored" in result.stderr, result.stderr
    assert snapshot(repo, "dvc.lock", "params.yaml") == before
    before.pop("params.yaml")
    dvc(repo, "exp", "run", "-S", "pretrain.max_steps=-5", check=False)  # DVC's own leaves params.yaml edited
    assert snapshot(repo, "dvc.lock") == before


def test_killed_training_keeps_every_output(repo):
    """kill -9 in the middle of `dvc repro pretrain`: the model, its reports and its curves are the previous run's."""
    checkpoints = repo / "models/checkpoints/pretrain"
    shutil.rmtree(checkpoints)  # the finished run's: a changed run starts afresh and writes new ones
    before = snapshot(repo, "dvc.lock")
    edit_params(repo, lambda p: p["pretrain"].update(learning_rate=p["pretrain"]["learning_rate"] / 2))
    process = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "pretrain"], cwd=repo, env=stage_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not any(checkpoints.glob("checkpoint-*/trainer_state.json")) and time.monotonic() < deadline:
        assert process.poll() is None, "the stage ended before it was killed"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert snapshot(repo, "dvc.lock") == before


def test_failed_evaluation_keeps_the_previous_compressed_models(repo):
    """compress writes its variants, then evaluates them: a failure there (here a test shard that is not UTF-8)
    puts the previous variants back, which the previous reports describe."""
    before = snapshot(repo, "dvc.lock")
    shard = next(iter(sorted((repo / "data/prepared/pretrain/test").glob("*.jsonl"))))
    shard.write_bytes(shard.read_bytes() + b'{"id": "x", "text": "\xff\xfe not UTF-8"}\n')
    # other int8 variants than the previous ones: were the new ones left in place, the snapshot would tell
    edit_params(repo, lambda p: p["compress"]["quantization"].update(per_channel=True))
    result = dvc(repo, "repro", "-s", "compress", check=False)
    assert result.returncode != 0 and shard.name in result.stdout + result.stderr
    after = snapshot(repo, "dvc.lock")
    assert {k: v for k, v in after.items() if not k.startswith("data/prepared/pretrain/test")} == \
        {k: v for k, v in before.items() if not k.startswith("data/prepared/pretrain/test")}
    assert not list((repo / "models").glob(".compressed.*"))  # no copy left behind


def test_restored_on_failure_puts_back_the_previous_output_or_none(tmp_path):
    from lifecycle.io import atomic_path, restored_on_failure
    out = tmp_path / "out"
    for content in ("new", "newer"):
        with pytest.raises(RuntimeError), restored_on_failure(out):
            with atomic_path(out, directory=True) as tmp:
                (tmp / "f").write_text(content)
            assert (out / "f").read_text() == content
            raise RuntimeError("the check failed")
        assert not out.exists()  # there was none before
    with restored_on_failure(out), atomic_path(out, directory=True) as tmp:
        (tmp / "f").write_text("checked")
    with pytest.raises(RuntimeError), restored_on_failure(out):
        with atomic_path(out, directory=True) as tmp:
            (tmp / "f").write_text("unchecked")
        raise RuntimeError("the check failed")
    assert (out / "f").read_text() == "checked" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_restored_on_failure_makes_the_parent_and_removes_a_killed_runs_copy(tmp_path):
    from lifecycle.io import atomic_path, restored_on_failure
    out = tmp_path / "models" / "out"  # models/ does not exist yet
    with restored_on_failure(out), atomic_path(out, directory=True) as tmp:
        (tmp / "f").write_text("checked")
    killed = out.parent / ".out.abc123.kept.tmp"  # what a kill -9 during the block leaves
    (killed / "out").mkdir(parents=True)
    other = out.parent / ".other.abc123.kept.tmp"  # another output's copy is not this one's to remove
    other.mkdir()
    with restored_on_failure(out):
        assert not killed.exists() and other.exists()
    assert (out / "f").read_text() == "checked"


KILLED_DURING_A_CHECK = """
import sys, time
from pathlib import Path
from lifecycle.core import run
from lifecycle.io import atomic_path, restored_on_failure

def main():
    out = Path(sys.argv[1])
    with restored_on_failure(out):
        with atomic_path(out, directory=True) as tmp:
            (tmp / "f").write_text("unchecked")
        with atomic_path(out.parent / "report.json") as tmp:
            print("checking", flush=True)
            time.sleep(60)

run(main)
"""


def test_a_stage_stopped_by_sigterm_puts_back_what_it_was_checking(tmp_path):
    """kill, timeout or a scheduler's cancel: the output is the previous one and no temporary file stays."""
    out = tmp_path / "models" / "compressed"
    out.mkdir(parents=True)
    (out / "f").write_text("checked")
    process = subprocess.Popen([sys.executable, "-c", KILLED_DURING_A_CHECK, str(out)], cwd=ROOT, env=stage_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "checking\n"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM and "stopped by SIGTERM" in stderr
    assert (out / "f").read_text() == "checked"
    assert sorted(p.name for p in out.parent.iterdir()) == ["compressed"]  # no .tmp, no report written


FORKED_CHILD_STOPPED = """
import multiprocessing, os, signal, time
from lifecycle.core import run

def work(running):
    running.set()
    time.sleep(60)

def main():
    fork = multiprocessing.get_context("fork")
    running = fork.Event()
    child = fork.Process(target=work, args=(running,))
    child.start()
    running.wait(30)  # first: CPython drops a signal its handler gets while a fork()ed child is being set up
    os.kill(child.pid, signal.SIGTERM)  # what multiprocessing's pools and managers do to stop their processes
    child.join(10)
    print(child.exitcode)

run(main)
"""


def test_a_process_forked_from_a_stage_still_dies_of_sigterm():
    """datatrove's local executor stops its manager process with SIGTERM: an unwinding child hung collect."""
    result = subprocess.run([sys.executable, "-c", FORKED_CHILD_STOPPED], cwd=ROOT, env=stage_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == str(-signal.SIGTERM) and "stopped by" not in result.stderr


def test_the_server_dies_of_sigterm_after_uvicorns_own_graceful_shutdown():
    """`python -m lifecycle.serving` opts out: uvicorn shuts down on SIGTERM and raises it again to end the process."""
    source = (ROOT / "lifecycle/serving/__main__.py").read_text()
    assert "run(main, sigterm_unwinds=False)" in source
    script = "import time\nfrom lifecycle.core import run\nrun(lambda: (print('up', flush=True), time.sleep(60)), " \
             "sigterm_unwinds=False)\n"
    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=stage_env(), stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline() == "up\n"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == -signal.SIGTERM
