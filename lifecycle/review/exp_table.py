"""A readable `dvc exp show`: the params that differ between experiments and the gated metrics that moved, folded
into Markdown blocks no wider than a terminal (`python -m lifecycle.review.compare --experiments`, `make exps`)."""
from __future__ import annotations

import json

from lifecycle.params.base import load
from lifecycle.params.report import Gate
from lifecycle.review.markdown import flatten
from lifecycle.review.plots import dvc_errors, open_repo

PROSE_PARAMS = ("gates", "report")  # lists and text: the gates' metrics are columns already, the card's prose is not


def _differing(rows: list[dict], kind: str, only: set[str] | None = None) -> list[str]:
    """Leaf names of `kind` (params | metrics) whose value differs between two rows or is missing from one."""
    values: dict[str, list] = {}
    for data in rows:
        for file, content in (data.get(kind) or {}).items():
            for key, value in flatten((content or {}).get("data") or {}).items():
                name = key if kind == "params" else f"{file}:{key}"
                if only is None or name in only:
                    values.setdefault(name, []).append(json.dumps(value, sort_keys=True, default=str))
    return [k for k, v in values.items() if len(set(v)) > 1 or len(v) < len(rows)]


def experiment_columns(show: list, gates: list[Gate]) -> list[str]:
    """The columns worth reading in `dvc exp show`: every param that differs between two of its rows (the
    baseline, the workspace and each experiment), then the gated metrics (`file:key`) that differ, in the gates'
    order."""
    rows = []
    for entry in show:
        rows.append(entry.get("data") or {})
        rows += [rev.get("data") or {} for exp in entry.get("experiments") or [] for rev in exp.get("revs") or []]
    params = sorted(k for k in _differing(rows, "params") if k.split(".")[0] not in PROSE_PARAMS)
    gated = [g.metric for g in gates]
    moved = set(_differing(rows, "metrics", set(gated)))
    return list(dict.fromkeys(params + [m for m in gated if m in moved]))


def _clip(text: str, most: int) -> str:
    return text if len(text) <= most else text[:most - 1] + "…"


def _markdown_block(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(map(len, column)) for column in zip(header, *rows)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)]


def fold_table(header: list[str], rows: list[list[str]], width: int = 200) -> str:
    """A Markdown table none of whose lines is wider than `width`, for any number of rows and columns: the
    columns after the first go into as many tables (blocks, one blank line apart) as needed, each repeating the
    first column (the experiment). A cell too wide for even a block of its own is cut with "…"."""
    first = [_clip(c, width // 2 - 4) for c in [header[0]] + [row[0] for row in rows]]
    first_width = max(map(len, first)) + 3  # "| cell " and the closing "|" below
    most = width - first_width - 4  # the widest other cell a block of two columns has room for
    columns = [[_clip(str(c), most) for c in [header[i]] + [row[i] for row in rows]] for i in range(1, len(header))]
    blocks, used = [[]], 1 + first_width
    for column in columns:
        cell = max(map(len, column)) + 3
        if blocks[-1] and used + cell > width:
            blocks, used = blocks + [[]], 1 + first_width
        blocks[-1].append(column)
        used += cell
    lines = []
    for block in blocks:
        table = [first, *block]  # columns: header cell, then one cell per row
        rows_of_block = [list(row) for row in zip(*(column[1:] for column in table))]
        lines += ([""] if lines else []) + _markdown_block([column[0] for column in table], rows_of_block)
    return "\n".join(lines) + "\n"


def experiment_cells(exps: list, columns: list[str], precision: int = 4) -> tuple[list[str], list[list[str]]]:
    """Header and rows of `dvc exp show`'s table (its own cells: experiment labels, rounded values, "-" where a
    row has no value) cut to the experiment and `columns` (a column of DVC's is `key` or, where that is
    ambiguous, `file:key`)."""
    from dvc.commands.experiments.show import prepare_exp_id
    from dvc.repo.experiments.show import tabulate

    table, _ = tabulate(exps, precision=precision, fill_value="-")
    labels = [str(prepare_exp_id(row)) for row in table.as_dict(["Experiment", "rev", "typ", "parent"])]
    keys = [k for c in columns for k in table.keys()
            if k == c or k.split(":", 1)[-1] == c or k == c.split(":", 1)[-1]]
    keys = list(dict.fromkeys(keys))
    cells = [["-" if value is None else str(value) for value in table.column(k)] for k in keys]
    return ["Experiment", *keys], [[label, *(column[i] for column in cells)] for i, label in enumerate(labels)]


def experiments_table(precision: int = 4, width: int = 200) -> str:
    """`dvc exp show --md` cut to the changed params and the moved gated metrics (hash and timing columns
    dropped), folded into blocks no wider than `width`."""
    with open_repo() as repo, dvc_errors("exp show"):
        exps = repo.experiments.show()
    columns = experiment_columns([exp.dumpd() for exp in exps], load(gates=(list[Gate], [])).gates)
    return fold_table(*experiment_cells(exps, columns, precision), width=width)
