"""plots: dvc.yaml's plots as DVC itself builds them, and as PNG files. One renderer for the report stage (the
workspace's plots) and compare (the plots of two revisions).

The specs are those of `dvc plots show --json` / `dvc plots diff --json`: `Repo.plots.show` collects the
definitions (dvc.yaml's top-level `plots:` and the stages' `plots:`) with their data, DVC's own
`match_defs_renderers` turns them into dvc_render's VegaRenderers (the project's templates from .dvc/plots/),
and each renderer's filled template is a Vega-Lite spec with its data inline. vl-convert draws it offline.
Nothing here takes DVC's repository lock (`Repo.plots.show` reads, as `dvc plots show` does), so the report
stage may run inside `dvc repro`, which holds it.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lifecycle.core import StageError
from lifecycle.io import atomic_path

FAILED = "failed"  # where our onerror puts a collection error (DVC's own key, "error", makes it print a warning)


@contextmanager
def dvc_errors(command: str) -> Iterator[None]:
    """DVC's exceptions as one line naming the command this stands for, worded as the CLI prints them."""
    from dvc.exceptions import DvcException
    from dvc_render.exceptions import DvcRenderError

    try:
        yield
    except (DvcException, DvcRenderError) as err:
        raise StageError(f"dvc {command}: ERROR: {err}") from None


@contextmanager
def open_repo(root: str | Path = ".", uninitialized: bool = False):
    """The DVC repository at `root`, closed afterwards (an open Git object store warns at exit). `uninitialized`:
    a folder that is no DVC or Git repository (a copied run) is read as one without history."""
    from dvc.repo import Repo

    with dvc_errors("repo"):
        repo = Repo(str(root), uninitialized=uninitialized)
    with repo:
        yield repo


def _on_error(result: dict, exception: Exception, *args, **kwargs) -> None:
    result[FAILED] = exception


def collection_problems(data: dict) -> list[str]:
    """One line per definition or data file DVC could not read, a data file that does not exist aside (its stage
    has not run: the plot is left out, as `dvc plots show` leaves it)."""
    problems = []
    for rev, content in data.items():
        parts = {"dvc.yaml plots": content.get("definitions", {}), "plot data": content.get("sources", {})}
        parts.update(content.get("sources", {}).get("data", {}))
        for where, part in parts.items():
            error = part.get(FAILED) if isinstance(part, dict) else None
            if error is not None and not isinstance(error, FileNotFoundError):
                problems.append(f"{where} ({rev}): {error}")
    return problems


def data_files(data: dict) -> dict[str, list[str]]:
    """plot id -> the data files its definition draws, in order (as DVC infers them)."""
    from dvc.render.match import PlotsData
    from dvc.repo.plots import infer_data_sources

    return {plot_id: list(dict.fromkeys(path for _, inner_id, props in group
                                        for path in infer_data_sources(inner_id, props)))
            for plot_id, group in PlotsData(data).group_definitions().items()}


def specs(repo, revs: list[str] | None = None) -> tuple[dict[str, list[dict]], list[str]]:
    """title -> [{type: "vega", revisions, content: the Vega-Lite spec, files: the data files it draws}] of every
    plot with data (the "data" of `dvc plots show --json`, or of `dvc plots diff --json` for `revs`), and the
    problems met on the way, one line each."""
    from dvc.render.convert import to_json
    from dvc.render.match import match_defs_renderers

    command = "plots " + (f"diff {' '.join(revs)}" if revs else "show")
    with dvc_errors(command):
        data = repo.plots.diff(revs=revs, onerror=_on_error) if revs else repo.plots.show(onerror=_on_error)
        renderers = match_defs_renderers(data, templates_dir=repo.plots.templates_dir)
    files = data_files(data)
    problems = collection_problems(data)
    out: dict[str, list[dict]] = {}
    for renderer, _, definition_errors in renderers:
        problems += [f"plot '{renderer.name}' ({rev}): {err}" for rev, err in definition_errors.items()]
        if renderer.TYPE == "vega" and renderer.datapoints:
            with dvc_errors(f"{command}: plot '{renderer.name}'"):
                out[renderer.name] = [{**render, "files": files.get(renderer.name, [])} for render in to_json(renderer)]
    return out, problems


def workspace_specs(root: str | Path = ".") -> dict[str, list[dict]]:
    """The workspace's plots (`specs`); a problem is an error. `root` need not be a DVC or Git repository."""
    with open_repo(root, uninitialized=True) as repo:
        found, problems = specs(repo)
    if problems:
        raise StageError(problems[0])
    return found


def png_bytes(spec: dict, ppi: int = 72) -> bytes:
    """A Vega-Lite spec as PNG, offline (vl-convert bundles Vega: no browser, no CDN); the same spec always gives
    the same bytes."""
    import vl_convert

    return vl_convert.vegalite_to_png(spec, scale=1, ppi=ppi)


def render_png(spec: dict, path: Path, ppi: int = 72) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(png_bytes(spec, ppi))
