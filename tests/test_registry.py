"""The model registry: GTO tags give dvc.yaml's artifacts versions and stages; a fresh clone fetches a stage's
version through the DVC remote; the server names the version it serves."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lifecycle import registry
from lifecycle.core import StageError
from tests.conftest import ROOT, default_params, dvc, git, stage_env, the_error

ARTIFACTS = {"compressed": {"path": "models/compressed", "type": "model"},
             "lm-a": {"path": "models/compressed/lm/a", "type": "model", "desc": "inside an output"}}
BYTES = {"v0.1.0": "one", "v0.2.0": "two", "v0.3.0": "three"}  # v0.3.0 is never pushed
AUTHOR = {"GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.org", "GIT_COMMITTER_NAME": "test",
          "GIT_COMMITTER_EMAIL": "test@example.org"}


@pytest.fixture(autouse=True)
def author(monkeypatch):
    for key, value in AUTHOR.items():
        monkeypatch.setenv(key, value)


def commit_version(repo: Path, version: str, push: bool) -> str:
    (repo / "models/compressed/lm/a/w.bin").write_text(BYTES[version])
    (repo / "reports").mkdir(exist_ok=True)
    (repo / "reports/MODEL_CARD.md").write_text(f"# Model card of {BYTES[version]}\n")  # git-tracked, as the report's
    dvc(repo, "add", "-q", "models/compressed")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", version)
    if push:
        dvc(repo, "push", "-q")
    for name in ARTIFACTS:
        registry.register(name, version, repo)
    return git(repo, "rev-parse", "HEAD").strip()


@pytest.fixture(scope="module")
def origin(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A git + DVC repository with a local remote: models/compressed (a `dvc add`ed folder) holding lm/a/w.bin,
    declared as two artifacts; v0.1.0, v0.2.0 (pushed) and v0.3.0 (not pushed) registered for both, no stage
    assigned. Returns it and each version's commit. Clone it (`clone`) before assigning stages."""
    base = tmp_path_factory.mktemp("registry")
    repo = base / "origin"
    (repo / "models/compressed/lm/a").mkdir(parents=True)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in AUTHOR.items():
            mp.setenv(key, value)
        git(repo, "init", "-q", "-b", "main")
        dvc(repo, "init", "-q")
        dvc(repo, "remote", "add", "-d", "local", str(base / "remote"))
        (repo / "dvc.yaml").write_text(yaml.safe_dump({"artifacts": ARTIFACTS}))
        commits = {v: commit_version(repo, v, push=v != "v0.3.0") for v in BYTES}
    return repo, commits


def clone(source: Path, destination: Path) -> Path:
    """A fresh `git clone`: the tags come along, the DVC cache does not."""
    git(source.parent, "clone", "-q", str(source), str(destination))
    return destination


def served_bytes(root: Path) -> str:
    return (root / "compressed/lm/a/w.bin").read_text()


def test_a_fresh_clone_fetches_the_prod_version_and_follows_each_promotion(origin, tmp_path):
    repo, commits = origin
    working = clone(repo, tmp_path / "working")
    assert registry.promote("compressed", "v0.1.0", "prod", working) == "v0.1.0"
    info = registry.fetch("compressed@prod", tmp_path / "first", repo=clone(working, tmp_path / "fresh1"))
    assert served_bytes(tmp_path / "first") == "one"
    assert info == {"name": "compressed", "version": "v0.1.0", "stage": "prod", "commit": commits["v0.1.0"],
                    "path": "models/compressed"}
    assert json.loads((tmp_path / "first" / registry.REGISTRY_FILE).read_text()) == info
    card = (tmp_path / "first" / "MODEL_CARD.md").read_text()  # the version's own card, headed by the version
    assert card.startswith("> Served from the model registry: **compressed v0.1.0** (stage prod)")
    assert card.endswith("# Model card of one\n")

    for version in ("v0.2.0", "v0.1.0"):  # a promotion, then a rollback: the newest assignment holds the stage
        assert registry.promote("compressed", version, "prod", working) == version
        fresh = clone(working, tmp_path / f"fresh-{version}")
        assert registry.resolve("compressed#prod", fresh) == ("compressed", version, commits[version], "prod")
        registry.fetch("compressed@prod", tmp_path / f"out-{version}", repo=fresh)
        assert served_bytes(tmp_path / f"out-{version}") == BYTES[version]


def test_the_stage_resolves_to_the_commit_dvc_artifacts_get_picks(origin, tmp_path):
    from dvc.repo import Repo
    working = clone(origin[0], tmp_path / "working")
    for version in ("v0.1.0", "v0.2.0", "v0.1.0"):  # likely in one second: the tag counter orders them then
        registry.promote("compressed", version, "staging", working)
    with Repo(str(working)) as repo:
        assert repo.artifacts.get_rev("compressed", stage="staging") == registry.resolve("compressed@staging",
                                                                                           working).commit
    assert registry.resolve("compressed@staging", working).version == "v0.1.0"


def test_promoting_the_version_a_stage_holds_adds_no_tag(origin, tmp_path):
    working = clone(origin[0], tmp_path / "working")
    registry.promote("lm-a", "v0.2.0", "dev", working)
    before = git(working, "tag", "-l")
    assert registry.promote("lm-a", "v0.2.0", "dev", working) == "v0.2.0"
    assert git(working, "tag", "-l") == before


def test_versions_and_the_latest_resolve_to_their_commits(origin):
    repo, commits = origin
    assert registry.resolve("lm-a@v0.1.0", repo) == ("lm-a", "v0.1.0", commits["v0.1.0"], None)
    assert registry.resolve("lm-a", repo).version == registry.resolve("lm-a@latest", repo).version == "v0.3.0"


def test_an_artifact_inside_an_output_lands_at_its_models_relative_path(origin, tmp_path):
    info = registry.fetch("lm-a@v0.2.0", tmp_path / "out", repo=clone(origin[0], tmp_path / "fresh"))
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file()) \
        == ["MODEL_CARD.md", "REGISTRY.json", "compressed/lm/a/w.bin"]
    assert served_bytes(tmp_path / "out") == "two" and info["path"] == "models/compressed/lm/a"


def test_a_failed_download_leaves_no_folder_behind(origin, tmp_path):
    fresh = clone(origin[0], tmp_path / "fresh")
    with pytest.raises(StageError, match=r"^dvc artifacts get compressed@v0\.3\.0: .*") as err:
        registry.fetch("compressed@v0.3.0", tmp_path / "out", repo=fresh)  # its bytes never reached the remote
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh"]


@pytest.mark.parametrize("call, message", [
    (lambda repo: registry.resolve("compressed@production", repo),
     "stage 'production': not one of dev, staging, prod"),
    (lambda repo: registry.promote("compressed", "v0.1.0", "live", repo),
     "stage 'live': not one of dev, staging, prod"),
    (lambda repo: registry.resolve("nope@prod", repo),
     "artifact 'nope': no version registered in {repo} (registered: compressed, lm-a); see python -m "
     "lifecycle.registry register"),
    (lambda repo: registry.resolve("compressed@v9.0.0", repo),
     "artifact 'compressed': no version v9.0.0 (registered: v0.3.0, v0.2.0, v0.1.0)"),
    (lambda repo: registry.resolve("compressed@prod", repo),
     "artifact 'compressed': no version in stage 'prod'; see python -m lifecycle.registry promote"),
    (lambda repo: registry.resolve("compressed@v1", repo),
     "version 'v1': expected v<major>.<minor>.<patch>, e.g. v1.0.0"),
    (lambda repo: registry.resolve("two words", repo),
     "registry reference 'two words': expected NAME, NAME@vX.Y.Z, NAME@STAGE or NAME#STAGE"),
    (lambda repo: registry.register("nope", "v1.0.0", repo), "artifact 'nope': not declared in the artifacts of "
     "dvc.yaml (compressed, lm-a)"),
])
def test_a_bad_reference_stage_or_name_is_one_line(origin, call, message):
    with pytest.raises(StageError) as err:
        call(origin[0])
    assert str(err.value) == message.format(repo=origin[0])


def test_a_second_version_of_one_commit_is_gtos_error_on_one_line(origin):
    repo, commits = origin
    with pytest.raises(StageError) as err:
        registry.register("compressed", "v0.4.0", repo, rev=commits["v0.1.0"])
    assert str(err.value) == "gto: 'compressed' is already registered in this commit with version 'v0.1.0'"


def test_the_command_line_reports_a_bad_stage_in_one_line(origin):
    result = subprocess.run([sys.executable, "-m", "lifecycle.registry", "promote", "compressed", "--version",
                             "v0.1.0", "--stage", "production", "--repo", str(origin[0])], env=stage_env(),
                            cwd=origin[0], capture_output=True, text=True)
    assert the_error(result) == "error: stage 'production': not one of dev, staging, prod"


# ---------------------------------------------------------------- serving a registry version

def test_serve_fetches_a_reference_once_into_its_cache(origin, tmp_path, monkeypatch):
    from lifecycle.serving.cli import models_root, parse_args
    working = clone(origin[0], tmp_path / "working")
    registry.promote("compressed", "v0.2.0", "prod", working)
    args = parse_args(["--model-ref", "compressed@prod", "--registry-repo", str(working),
                       "--registry-cache", str(tmp_path / "cache")])
    root, version = models_root(args)
    assert root == tmp_path / "cache/compressed/v0.2.0" and served_bytes(root) == "two"
    assert version == {"name": "compressed", "version": "v0.2.0", "stage": "prod", "commit": origin[1]["v0.2.0"]}
    monkeypatch.setattr(registry, "download", None)  # the cached copy of that commit is served again
    assert models_root(args) == (root, version)


def test_without_a_reference_serve_reads_models_root_unversioned():
    from lifecycle.serving.cli import models_root, parse_args
    assert models_root(parse_args(["--models-root", "elsewhere"])) == (Path("elsewhere"), None)


def test_a_models_root_fetched_beforehand_names_its_version(origin, tmp_path):
    from lifecycle.serving.cli import models_root, parse_args
    info = registry.fetch("compressed@v0.1.0", tmp_path / "image", repo=clone(origin[0], tmp_path / "fresh"))
    root, version = models_root(parse_args(["--models-root", str(tmp_path / "image")]))
    assert root == tmp_path / "image" and version == {k: info[k] for k in ("name", "version", "stage", "commit")}


def test_the_request_log_and_model_listing_name_the_registry_version():
    from fastapi.testclient import TestClient

    from lifecycle.params.serve import ServeParams
    from lifecycle.serving.app import create_app
    from lifecycle.serving.engine import Served
    version = {"name": "compressed", "version": "v1.2.0", "stage": "prod", "commit": "ab" * 20}
    served = Served("int8_dynamic", None, None, None, None, {"lm": "f00"}, registry=version)
    assert served.model("lm") == {"variant": "int8_dynamic", "sha256": "f00", "registry": version}
    assert Served("int8_dynamic", None, None, None, None, {"lm": "f00"}).model("lm") == \
        {"variant": "int8_dynamic", "sha256": "f00"}
    settings = ServeParams.model_validate({"variant": "int8_dynamic", "api_key_env": None, "request_log": None})
    listing = TestClient(create_app(settings, {"int8_dynamic": served})).get("/v1/models").json()["data"]
    assert [m["registry"] for m in listing] == [version, version] and len({m["id"] for m in listing}) == 2


# ---------------------------------------------------------------- the project's own registry

def test_every_artifact_lies_inside_a_stage_output():
    dvc_yaml = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    outs = {next(iter(o)) if isinstance(o, dict) else o for s in dvc_yaml["stages"].values() for o in s.get("outs", [])}
    for name, artifact in dvc_yaml["artifacts"].items():
        assert artifact["type"] == "model" and artifact["desc"], name
        assert any(artifact["path"] == o or artifact["path"].startswith(f"{o}/") for o in outs), name


def test_every_compressed_variant_is_an_artifact():
    compress = default_params()["compress"]
    expected = {f"{kind}-{v}": f"models/compressed/{kind}/{v}" for kind in ("lm", "classifier")
                for v in compress["variants"]}
    expected |= {f"classifier-distilled_{v}": f"models/compressed/classifier/distilled_{v}"
                 for v in compress["distilled"]}
    artifacts = yaml.safe_load((ROOT / "dvc.yaml").read_text())["artifacts"]
    assert {n: a["path"] for n, a in artifacts.items() if a["path"].startswith("models/compressed/")} == expected


def test_gto_config_allows_exactly_the_registry_stages():
    assert tuple(yaml.safe_load((ROOT / ".gto").read_text())["stages"]) == registry.STAGES
