"""DVC remote: the run's artifacts pushed to a local-directory remote come back intact on a fresh checkout."""
import hashlib
import shutil

from lifecycle.io import shards
from tests.conftest import copy_repo, dvc

ARTIFACTS = ("models/finetuned/model.safetensors", "models/pretrained/model.safetensors",
             "data/prepared/finetune/test", "models/tokenizer/tokenizer.json")


def digest(path) -> str:
    """Of a file, or of every shard of a folder (names and bytes)."""
    h = hashlib.sha256()
    for file in shards(path):
        h.update(file.name.encode() + b"\0" + file.read_bytes())
    return h.hexdigest()


def test_push_then_pull_round_trips_the_artifacts(tiny_repo, tmp_path):
    repo = copy_repo(tiny_repo, tmp_path / "project")
    before = {a: digest(repo / a) for a in ARTIFACTS}
    dvc(repo, "remote", "add", "--default", "local", str(tmp_path / "remote"))  # as in the README
    dvc(repo, "push")
    shutil.rmtree(repo / ".dvc/cache")
    for output in ("data/raw", "data/prepared", "data/tokens", "models"):  # every DVC output (data/audit is in git)
        shutil.rmtree(repo / output)
    dvc(repo, "pull")
    assert {a: digest(repo / a) for a in ARTIFACTS} == before
    assert "Data and pipelines are up to date" in dvc(repo, "status").stdout
