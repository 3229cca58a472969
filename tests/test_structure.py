"""The layout's promises: one library, thin stages that never import each other, short functions, and each
stage's DVC dependencies exactly the code its imports reach (`python -m lifecycle.deps`)."""
import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lifecycle import deps
from tests.conftest import ROOT, stage_env

PYTHON_FILES = sorted(p for folder in ("lifecycle", "stages", "benchmarks", "tests")
                      for p in (ROOT / folder).rglob("*.py"))
STAGE_FILES = sorted(p for p in (ROOT / "stages").glob("*.py") if p.name != "__init__.py")


def imported_roots(path: Path) -> set[str]:
    return {m for m in deps.imported_modules(ast.parse(path.read_text())) if m.split(".")[0] == "stages"} - {"stages"}


def test_code_deps_in_dvc_yaml_equal_the_imports():
    assert deps.problems(ROOT) == []


def deps_command(directory: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lifecycle.deps", *args], cwd=directory, env=stage_env(),
                          capture_output=True, text=True)


@pytest.fixture
def code_copy(tmp_path) -> Path:
    for item in ("lifecycle", "stages"):
        shutil.copytree(ROOT / item, tmp_path / item, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    return tmp_path


def drop_dep(dvc_yaml: Path, stage: str, dep: str) -> None:
    text = dvc_yaml.read_text()
    start = text.index(f"\n  {stage}:\n")
    line = f"      - {dep}\n"
    at = text.index(line, start)
    dvc_yaml.write_text(text[:at] + text[at + len(line):])


def test_a_deleted_code_dep_fails_with_one_line_naming_the_stage_and_the_file(code_copy):
    drop_dep(code_copy / "dvc.yaml", "finetune", "lifecycle/labels.py")
    result = deps_command(code_copy)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: dvc.yaml: stage 'finetune' misses code dep lifecycle/labels.py (its imports reach it)"]


def test_an_unneeded_code_dep_is_named(code_copy):
    text = (code_copy / "dvc.yaml").read_text()
    (code_copy / "dvc.yaml").write_text(text.replace("      - stages/tokenize.py\n",
                                                     "      - stages/tokenize.py\n      - lifecycle/pii.py\n", 1))
    assert deps_command(code_copy).stderr.splitlines() == [
        "error: dvc.yaml: stage 'tokenize' lists code dep lifecycle/pii.py, which its imports do not reach"]


def test_write_restores_the_code_deps_and_keeps_the_rest(code_copy):
    drop_dep(code_copy / "dvc.yaml", "evaluate", "lifecycle/scoring.py")
    result = deps_command(code_copy, "--write")
    assert result.returncode == 0, result.stderr
    assert (code_copy / "dvc.yaml").read_text() == (ROOT / "dvc.yaml").read_text()


def test_a_new_import_inside_a_function_becomes_a_dep(code_copy):
    stage = code_copy / "stages/tokenizer.py"
    stage.write_text(stage.read_text().replace("def main() -> None:\n",
                                               "def main() -> None:\n"
                                               "    from lifecycle.pii import scrub_pii  # noqa\n"))
    assert "error: dvc.yaml: stage 'tokenizer' misses code dep lifecycle/pii.py (its imports reach it)" in \
        deps_command(code_copy).stderr.splitlines()


def test_every_loaded_params_section_is_listed_under_the_stage_params(code_copy):
    text = (code_copy / "dvc.yaml").read_text()
    (code_copy / "dvc.yaml").write_text(text.replace("      - pretrain.ddp_timeout_s\n", "", 1))
    assert deps_command(code_copy).stderr.splitlines() == [
        "error: dvc.yaml: stage 'finetune' loads params section 'pretrain' but lists none of its keys under params"]


@pytest.mark.parametrize("path", STAGE_FILES, ids=lambda p: p.name)
def test_no_stage_imports_another_stage(path):
    assert imported_roots(path) == set(), f"{path.name} imports another stage; move the shared code to lifecycle/"


def test_the_library_never_imports_a_stage():
    offenders = [p.relative_to(ROOT).as_posix() for p in (ROOT / "lifecycle").rglob("*.py") if imported_roots(p)]
    assert offenders == []


def test_stages_holds_only_the_dvc_stages_of_dvc_yaml():
    commands = {stage["cmd"] for stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values()}
    assert {f"python -m stages.{p.stem}" for p in STAGE_FILES} == commands


@pytest.mark.parametrize("path", STAGE_FILES, ids=lambda p: p.name)
def test_stages_are_thin_entry_points(path):
    assert len(path.read_text().splitlines()) <= 120


def test_no_function_is_longer_than_60_lines():
    long = []
    for path in PYTHON_FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} "
                            f"({node.end_lineno - node.lineno + 1} lines)")
    assert long == []


def module_attributes_used(tree: ast.Module) -> list[tuple[str, str, int]]:
    """(module, attribute, line) for each `alias.attr` where `alias` is a project module imported whole
    (`from lifecycle import pretraining as pretrain`, `import lifecycle.io`)."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("lifecycle", "stages"):
            aliases |= {a.asname or a.name: f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            aliases |= {a.asname: a.name for a in node.names if a.asname and a.name.startswith("lifecycle")}
    return [(aliases[n.value.id], n.attr, n.lineno) for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in aliases]


@pytest.mark.parametrize("path", PYTHON_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_attribute_read_from_a_project_module_exists(path):
    """What ruff cannot see: benchmarks ran no test, and one read a constant a refactor had moved away."""
    import importlib
    import types
    missing = []
    for module, attribute, line in module_attributes_used(ast.parse(path.read_text())):
        try:
            target = importlib.import_module(module)
        except ModuleNotFoundError:
            continue  # `from lifecycle.x import name`: a function or class, not a module
        if isinstance(target, types.ModuleType) and not hasattr(target, attribute):
            missing.append(f"{path.name}:{line}: {module}.{attribute}")
    assert not missing
