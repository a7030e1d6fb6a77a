"""Reads a table of variant rows out of a marked README block (the recorded-run tables)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_block(name: str) -> str:
    """The README text between ``<!-- {name}:start -->`` and ``<!-- {name}:end -->``."""
    text = (ROOT / "README.md").read_text()
    return text[text.index(f"<!-- {name}:start -->"):text.index(f"<!-- {name}:end -->")]


def readme_rows(name: str, n_columns: int) -> dict[str, list[str]]:
    """``variant -> cells`` of the block's table rows with ``n_columns`` value columns."""
    rows = {}
    for line in readme_block(name).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 1 + n_columns and re.fullmatch(r"[A-Za-z_0-9]+", cells[0]) and cells[0] != "variant":
            rows[cells[0]] = cells[1:]
    return rows
