"""Writing results: atomic files, JSON, and markdown tables of result rows."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from blockdistill.utils.atomic import atomic_write_text

__all__ = ["atomic_write_text", "default_columns", "markdown_table", "write_json"]

_IDENTITY = ("variant", "lang", "source", "n")
_TRAILING = ("tpf", "forwards_per_sample", "tokens_per_s", "tokens_per_s_decode", "mean_length")


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON (non-ASCII kept readable)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def default_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Identity columns, then scores (first-seen order), then speed columns.

    Left out: detail keys holding ``"/"``, non-numeric values, raw sums (``nfe``, ``wall_s``,
    ...), and ``source`` when every row has None there.
    """
    skip = {"nfe", "nfe_decode", "row_forwards", "generated_tokens", "min_length", "max_length",
            "wall_s", "prefill_s", "calls", "block_size"}
    cols = [c for c in _IDENTITY if any(r.get(c) is not None for r in rows)]
    for r in rows:
        for k, v in r.items():
            if (k in cols or k in _TRAILING or k in skip or "/" in k or isinstance(v, bool)
                    or not isinstance(v, (int, float))):
                continue
            cols.append(k)
    return cols + [c for c in _TRAILING if any(c in r for r in rows)]


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value).replace("|", "\\|").replace("\n", " ")
    if math.isnan(value):
        return "nan"
    return f"{value:.1f}" if abs(value) >= 100 else f"{value:.{digits}f}"


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, digits: int = 4) -> str:
    """A GitHub markdown table of ``rows`` (one line per row).

    Args:
        rows: result rows (dicts).
        columns: keys to show, in order; default :func:`default_columns`.
        digits: decimals for floats below 100 (larger ones get one decimal).
    """
    columns = list(columns) if columns is not None else default_columns(rows)
    if not columns:
        raise ValueError("no columns to show; pass columns= or rows with values")
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c), digits) for c in columns) + " |")
    return "\n".join(lines) + "\n"
