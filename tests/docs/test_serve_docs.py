"""docs/serve.md stays true: its convention table has every row of issue 18's comparison, each
with a status, and every test it cites as the check exists; its commands name real options."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "serve.md"
ROWS = ["English instruction", "Chinese instruction", "Chat turn", "Image size", "Decoding", "Mask token",
        "Evaluation data"]


def _table() -> list[list[str]]:
    text = PAGE.read_text()
    body = text[text.index("| Row | midea-ai/ECHO |"):]
    lines = [ln for ln in body.splitlines() if ln.startswith("|")][2:]
    return [_cells(ln) for ln in lines]


def _cells(line: str) -> list[str]:
    """A table row's cells; a ``|`` inside a code span (``<|MASK|>``) is text, as Python-Markdown reads it."""
    cells, cur, code = [], "", False
    for ch in line:
        if ch == "`":
            code = not code
        if ch == "|" and not code:
            cells.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return cells[1:]


def test_every_convention_row_is_matched_or_explained():
    rows = _table()
    assert [r[0] for r in rows] == ROWS
    for name, _echo, _ours, status, _checked in rows:
        assert status.startswith("matched"), (name, status)  # a row not matched must say why, here


def test_the_cited_tests_exist():
    tests = {p.name: p.read_text() for p in (ROOT / "tests").rglob("test_*.py")}
    cited = 0
    for row in _table():
        for file, func in re.findall(r"`?(test_\w+\.py)::(test_\w+)", row[4]):
            assert f"def {func}(" in tests[file], (row[0], file, func)
            cited += 1
        for func in re.findall(r"`(test_\w+)`", row[4]):  # a bare test name: in some test file
            assert any(f"def {func}(" in t for t in tests.values()), (row[0], func)
            cited += 1
    assert cited >= 8


def test_serve_options_in_the_page_are_the_commands():
    import examples.echo_cxr.serve as serve

    src = Path(serve.__file__).read_text()
    for opt in re.findall(r"`(--[a-z-]+)", PAGE.read_text().split("## `serve`")[1].split("### How")[0]):
        assert f'"{opt}"' in src, opt
