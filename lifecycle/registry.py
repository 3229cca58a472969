"""The model registry in DVC's own terms: the `artifacts:` of dvc.yaml name the models, GTO git tags give them
versions (`NAME@v1.2.0`) and stages (`NAME#prod#3`), and `dvc artifacts get` downloads a version's bytes through
the DVC remote, from any clone.

    python -m lifecycle.registry register compressed --version v1.0.0 [--rev HEAD]
    python -m lifecycle.registry promote compressed --version v1.0.0 --stage prod
    python -m lifecycle.registry resolve compressed@prod        # or compressed#prod, compressed@v1.0.0, compressed
    python -m lifecycle.registry fetch compressed@prod .registry/compressed [--repo URL] [--remote NAME]

A stage holds the version assigned to it last (the newest `NAME#STAGE#N` tag), which is what
`dvc artifacts get --stage` downloads; GTO's own `gto show` lists every version ever assigned to a stage and not
since unassigned, and names the highest. Promoting an older version again is how a rollback reads here.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from lifecycle.core import StageError
from lifecycle.io import atomic_path

STAGES = ("dev", "staging", "prod")
REGISTRY_FILE = "REGISTRY.json"  # beside a fetched artifact: which version it is
MODEL_CARD = "reports/MODEL_CARD.md"  # the card committed with a version; fetch puts it beside the artifact
REF = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_/:-]*?)(?:(?P<sep>[@#])(?P<what>[^@#]+))?$")
REF_FORMS = "NAME, NAME@vX.Y.Z, NAME@STAGE or NAME#STAGE"


class Resolved(NamedTuple):
    """What a reference names: the artifact, its version, the commit holding its bytes (the version's tag target)
    and the stage the reference went through (None for a version or the latest)."""
    name: str
    version: str
    commit: str
    stage: str | None = None


def check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise StageError(f"stage {stage!r}: not one of {', '.join(STAGES)}")
    return stage


def check_version(version: str) -> str:
    from gto.versions import SemVer
    if not (version.startswith("v") and SemVer.is_valid(version)):
        raise StageError(f"version {version!r}: expected v<major>.<minor>.<patch>, e.g. v1.0.0")
    return version


def parse_ref(ref: str) -> tuple[str, str | None, str | None]:
    """(name, version, stage) of `ref`: NAME (its latest version), NAME@vX.Y.Z, NAME@STAGE or NAME#STAGE."""
    match = REF.match(ref)
    if not match:
        raise StageError(f"registry reference {ref!r}: expected {REF_FORMS}")
    name, sep, what = match["name"], match["sep"], match["what"]
    if sep is None or (sep == "@" and what == "latest"):
        return name, None, None
    if sep == "@" and re.match(r"^v\d", what):
        return name, check_version(what), None
    return name, None, check_stage(what)


def declared(repo: str | Path = ".") -> list[str]:
    """The artifact names the working tree's dvc.yaml files declare (`dir:name` for one in a subdirectory)."""
    from dvc.repo import Repo
    with Repo(str(repo)) as project:
        found = project.artifacts.read()
    return sorted(name if Path(dvcyaml).parent == Path(".") else f"{Path(dvcyaml).parent.as_posix()}:{name}"
                  for dvcyaml, artifacts in found.items() for name in artifacts)


def gto_call(function, *args, **kwargs):
    """A GTO API call whose failures (unknown version, existing tag, no git repo) read as one line."""
    from gto.exceptions import GTOException
    from scmrepo.exceptions import SCMError
    try:
        return function(*args, **kwargs)
    except (GTOException, SCMError) as err:
        raise StageError(f"gto: {' '.join(str(err).split())}") from None


def register(name: str, version: str, repo: str | Path = ".", rev: str = "HEAD") -> str:
    """Tag `rev` as `name`'s `version` (the commit whose dvc.lock holds the bytes); returns the tag."""
    from gto import api
    check_version(version)
    names = declared(repo)
    if name not in names:
        raise StageError(f"artifact {name!r}: not declared in the artifacts of dvc.yaml ({', '.join(names)})")
    gto_call(api.register, str(repo), name, rev, version=version)
    return f"{name}@{version}"


def promote(name: str, version: str, stage: str, repo: str | Path = ".") -> str:
    """Assign `stage` to `name`'s `version` with a new `NAME#STAGE#N` tag, unless it already holds that stage;
    returns the stage's version as `resolve` now reads it."""
    from gto import api
    check_stage(stage)
    check_version(version)
    current = stage_version(name, stage, repo, missing_ok=True)
    if current is None or current.version != version:  # force: GTO refuses a version it saw in the stage before
        gto_call(api.assign, str(repo), name, stage, version=version, force=True)
    return stage_version(name, stage, repo).version


def registry_state(repo: str | Path):
    """GTO's reading of the repository's tags: artifacts, their versions, and each version's stage events."""
    from gto.registry import GitRegistry
    with GitRegistry.from_url(str(repo)) as registry:
        return registry.get_state()


def versions_of(name: str, repo: str | Path = "."):
    """`name`'s registered, not deregistered GTO versions, highest first; one line when there are none."""
    state = gto_call(registry_state, repo)
    if name not in state.artifacts or not state.artifacts[name].get_versions():
        known = sorted(n for n, a in state.artifacts.items() if a.get_versions())
        raise StageError(f"artifact {name!r}: no version registered in {repo} "
                         f"(registered: {', '.join(known) or 'none'}); see python -m lifecycle.registry register")
    return state.artifacts[name].get_versions()


def stage_version(name: str, stage: str, repo: str | Path = ".", missing_ok: bool = False) -> Resolved | None:
    """The version `stage` holds: the one its newest assignment tag names (as `dvc artifacts get --stage` picks),
    none when that newest event is an unassignment."""
    from gto.base import Unassignment
    events = [event for version in versions_of(name, repo) if stage in version.stages
              for event in version.stages[stage].get_events()]
    newest = max(events, key=lambda e: (e.created_at, tag_counter(e.tag)), default=None)
    if newest is None or isinstance(newest, Unassignment):
        if missing_ok:
            return None
        raise StageError(f"artifact {name!r}: no version in stage {stage!r}; see python -m lifecycle.registry "
                         "promote")
    return Resolved(name, newest.version, newest.commit_hexsha, stage)


def tag_counter(tag: str) -> int:
    """The N of a GTO `NAME#STAGE#N` tag (0 for a tag without one): orders two tags of the same second."""
    counter = re.search(r"#(\d+)$", tag or "")
    return int(counter[1]) if counter else 0


def resolve(ref: str, repo: str | Path = ".") -> Resolved:
    """(name, version, commit, stage) of a reference: NAME@vX.Y.Z, NAME@STAGE / NAME#STAGE, or NAME (latest)."""
    name, version, stage = parse_ref(ref)
    if stage:
        return stage_version(name, stage, repo)
    versions = versions_of(name, repo)
    if version is None:
        return Resolved(name, versions[0].version, versions[0].commit_hexsha)
    for found in versions:
        if found.version == version:
            return Resolved(name, version, found.commit_hexsha)
    raise StageError(f"artifact {name!r}: no version {version} (registered: {', '.join(v.version for v in versions)})")


def artifact_path(found: Resolved, repo: str | Path = ".") -> str:
    """The artifact's path in the repository, as dvc.yaml declared it at the version's commit."""
    from dvc.api import artifacts_show
    from dvc.exceptions import DvcException
    try:
        return PurePosixPath(artifacts_show(found.name, version=found.version, repo=str(repo))["path"]).as_posix()
    except DvcException as err:
        raise StageError(f"{found.name}@{found.version}: {err} (is it in the artifacts of dvc.yaml at "
                         f"{found.commit[:8]}?)") from None


def models_relative(path: str) -> PurePosixPath:
    """Where an artifact lands under a fetch's folder: its path without the leading models/, so that the folder
    is a models root (`compressed/lm/int8_dynamic`, `finetuned`) the server and variants.py read as they are."""
    parts = PurePosixPath(path).parts
    return PurePosixPath(*parts[1:]) if len(parts) > 1 and parts[0] == "models" else PurePosixPath(path)


def download(found: Resolved, repo: str | Path, remote: str | None, out: Path) -> None:
    """`dvc artifacts get REPO NAME --rev VERSION -o OUT [--remote REMOTE]`, through DVC's Python API."""
    from dvc.exceptions import DvcException
    from dvc.repo.artifacts import Artifacts
    try:
        Artifacts.get(str(repo), found.name, version=found.version, remote=remote, out=str(out))
    except DvcException as err:
        cause = f": {' '.join(str(err.__cause__).split())}" if err.__cause__ else ""
        raise StageError(f"dvc artifacts get {found.name}@{found.version}: {err}{cause}") from None


def record(found: Resolved, path: str) -> dict:
    """What REGISTRY.json and the request log say about a fetched artifact."""
    return {"name": found.name, "version": found.version, "stage": found.stage, "commit": found.commit, "path": path}


def model_card(found: Resolved, repo: str | Path) -> str | None:
    """The model card committed with the version (reports/MODEL_CARD.md at its commit), headed by the version;
    None when that commit has none."""
    import dvc.api
    try:
        card = dvc.api.read(MODEL_CARD, repo=str(repo), rev=found.commit, encoding="utf-8")
    except Exception:  # noqa: BLE001 - an older commit without a card, or one DVC cannot read: the card is optional
        return None
    return (f"> Served from the model registry: **{found.name} {found.version}** (stage {found.stage or 'none'}), "
            f"commit {found.commit}.\n\n{card}")


def fetch(ref: str | Resolved, out_dir: str | Path, repo: str | Path = ".", remote: str | None = None) -> dict:
    """Download the artifact `ref` names into `out_dir` (at `out_dir`/<its path without models/>), with
    `out_dir`/REGISTRY.json naming it and `out_dir`/MODEL_CARD.md (the version's card, headed by the version);
    atomically: a failed download leaves no `out_dir`. Returns the record."""
    found = ref if isinstance(ref, Resolved) else resolve(ref, repo)
    path = artifact_path(found, repo)
    info = record(found, path)
    with atomic_path(out_dir, directory=True) as tmp:
        download(found, repo, remote, tmp / models_relative(path))
        (tmp / REGISTRY_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if (card := model_card(found, repo)) is not None:
            (tmp / "MODEL_CARD.md").write_text(card, encoding="utf-8")
    return info


def cached(ref: str, cache: str | Path = ".registry", repo: str | Path = ".", remote: str | None = None
           ) -> tuple[Path, dict]:
    """A models root holding `ref`'s version: `cache`/NAME/VERSION, fetched unless a fetch of the same commit is
    there already; and its record (the stage as `ref` reached it now)."""
    found = resolve(ref, repo)
    root = Path(cache) / found.name.replace(":", "/") / found.version
    marker = root / REGISTRY_FILE
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")).get("commit") == found.commit:
        return root, {**json.loads(marker.read_text(encoding="utf-8")), "stage": found.stage}
    return root, fetch(found, root, repo, remote)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lifecycle.registry", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for command in ("register", "promote"):
        sub = commands.add_parser(command)
        sub.add_argument("name", help="an artifact of dvc.yaml")
        sub.add_argument("--version", required=True, help="vX.Y.Z")
        if command == "register":
            sub.add_argument("--rev", default="HEAD", help="the commit whose dvc.lock holds the bytes (HEAD)")
        else:
            sub.add_argument("--stage", required=True, help=" | ".join(STAGES))
    commands.add_parser("resolve").add_argument("ref", help=REF_FORMS)
    get = commands.add_parser("fetch")
    get.add_argument("ref", help=REF_FORMS)
    get.add_argument("out", type=Path, help="folder to create (REGISTRY.json beside the artifact)")
    get.add_argument("--remote", help="DVC remote to download from (the repository's default)")
    for sub in commands.choices.values():
        sub.add_argument("--repo", default=".", help="git repository: a path or URL (.)")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.command == "register":
        print(register(args.name, args.version, args.repo, args.rev))
    elif args.command == "promote":
        print(f"{args.name}#{args.stage}: {promote(args.name, args.version, args.stage, args.repo)}")
    elif args.command == "resolve":
        print(json.dumps(resolve(args.ref, args.repo)._asdict()))
    else:
        print(json.dumps(fetch(args.ref, args.out, args.repo, args.remote)))


if __name__ == "__main__":
    from lifecycle.core import run
    run(main)
