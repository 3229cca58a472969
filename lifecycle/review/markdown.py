"""Markdown and number formatting shared by the report, the model card and the comparison."""
from __future__ import annotations

import re


def flatten(data, prefix: str = "") -> dict:
    """{'a.b.c': leaf} of a nested report, lists of numbers kept whole."""
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def get(data: dict | None, dotted: str, default=None):
    node = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:,.0f}"  # 26,379, not 2.638e+04


def pct(value) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def interval(entry: dict | None, key: str = "value", as_pct: bool = False) -> str:
    """'v [lo, hi]' of an entry with value/ci_low/ci_high (95% bootstrap interval)."""
    if not entry:
        return "—"
    show = pct if as_pct else fmt
    lo, hi = entry.get("ci_low", entry.get(f"{key}_ci_low")), entry.get("ci_high", entry.get(f"{key}_ci_high"))
    bounds = f" [{show(lo)}, {show(hi)}]" if lo is not None and hi is not None else ""
    return f"{show(entry.get(key))}{bounds}"


def table(header: list[str], rows: list[list]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "plot"
