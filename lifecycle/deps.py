"""Code dependencies that follow the imports: each stage's deps in dvc.yaml are exactly the project files that
its entry module's imports reach (at module level or inside functions), plus files a module declares it loads by
path (`RUNTIME_FILES`, e.g. the local `evaluate` metric modules).

`python -m lifecycle.deps` prints one line per missing or unneeded code dep and exits 1 if there is any;
`python -m lifecycle.deps --write` rewrites the code deps of every stage in dvc.yaml (data deps are kept).
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

import yaml

PACKAGES = ("lifecycle", "stages")  # the project's own code; everything else is a third-party import
DVC_YAML = Path("dvc.yaml")


def module_path(root: Path, name: str) -> Path | None:
    """The file of a project module (`lifecycle.io` -> lifecycle/io.py), or None when it is not one."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = root / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(tree: ast.Module) -> set[str]:
    """Every module an import statement anywhere in the tree names (`from a import b` names a and a.b)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def runtime_files(tree: ast.Module) -> list[str]:
    """A module-level `RUNTIME_FILES = ("path", ...)`: project files the module reads by path."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "RUNTIME_FILES" for t in node.targets):
            return list(ast.literal_eval(node.value))
    return []


def with_packages(root: Path, name: str) -> list[str]:
    """A module and the packages above it (importing a.b.c runs a/__init__.py and a/b/__init__.py)."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def closure(root: Path, entry: str) -> set[str]:
    """Repository-relative paths of every project file the entry module's imports reach."""
    seen: set[str] = set()
    files: set[str] = set()
    todo = with_packages(root, entry)
    while todo:
        name = todo.pop()
        path = module_path(root, name)
        if name in seen or path is None:
            continue
        seen.add(name)
        files.add(path.relative_to(root).as_posix())
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        files.update(runtime_files(tree))
        todo.extend(m for imported in imported_modules(tree) for m in with_packages(root, imported))
    return collapse(files)


def collapse(files: set[str]) -> set[str]:
    """Files inside a declared directory dep are covered by it."""
    directories = {f for f in files if not f.endswith(".py")}
    return {f for f in files if f in directories or not any(f.startswith(d.rstrip("/") + "/") for d in directories)}


def entry_module(cmd: str) -> str | None:
    match = re.search(r"python -m (stages\.\w+)", cmd)
    return match.group(1) if match else None


def is_code(dep: str) -> bool:
    return dep.split("/")[0] in PACKAGES


def loaded_sections(path: Path) -> set[str]:
    """The params sections a stage module loads: the keywords of its `load(section=Type, ...)` calls."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {k.arg for node in ast.walk(tree) if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "load"
            for k in node.keywords if k.arg}


def stage_problems(root: Path, name: str, stage: dict, entry: str) -> list[str]:
    listed = {d for d in stage.get("deps", []) if is_code(d)}
    needed = closure(root, entry)
    lines = [f"{DVC_YAML}: stage '{name}' misses code dep {f} (its imports reach it)" for f in sorted(needed - listed)]
    lines += [f"{DVC_YAML}: stage '{name}' lists code dep {f}, which its imports do not reach"
              for f in sorted(listed - needed)]
    params = {p.split(".")[0] for p in stage.get("params", []) if isinstance(p, str)}
    lines += [f"{DVC_YAML}: stage '{name}' loads params section '{section}' but lists none of its keys under params"
              for section in sorted(loaded_sections(module_path(root, entry)) - params)]
    return lines


def problems(root: Path = Path(".")) -> list[str]:
    """One line per code dep that dvc.yaml misses or lists without need, and per params section a stage loads
    without listing it, naming the stage and the file or section."""
    stages = yaml.safe_load((root / DVC_YAML).read_text(encoding="utf-8"))["stages"]
    lines = []
    for name, stage in stages.items():
        entry = entry_module(stage.get("cmd", ""))
        if entry is not None:
            lines += stage_problems(root, name, stage, entry)
    return lines


def write(root: Path = Path(".")) -> None:
    """Replace each stage's code deps in dvc.yaml with its import closure, keeping data deps and comments."""
    path = root / DVC_YAML
    stages = yaml.safe_load(path.read_text(encoding="utf-8"))["stages"]
    lines, out, stage = path.read_text(encoding="utf-8").split("\n"), [], None
    in_deps = False
    for line in lines:
        if re.match(r"^  (\w+):\s*$", line):
            stage, in_deps = line.strip()[:-1], False
        if in_deps and re.match(r"^      - ", line):
            if is_code(line.split("- ", 1)[1].split("#")[0].strip()):
                continue
        elif in_deps:
            in_deps = False
        out.append(line)
        if stage in stages and line == "    deps:" and entry_module(stages[stage].get("cmd", "")):
            in_deps = True
            out += [f"      - {f}" for f in sorted(closure(root, entry_module(stages[stage]["cmd"])))]
    path.write_text("\n".join(out), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the code deps in dvc.yaml")
    args = parser.parse_args(argv)
    if args.write:
        write()
    found = problems()
    for line in found:
        print(f"error: {line}", file=sys.stderr)
    if found:
        sys.exit(1)
    print(f"{DVC_YAML}: every stage's code deps equal its imports")


if __name__ == "__main__":
    main()
