"""Two structural rules of issue 15, read from the source with ``ast`` (nothing is imported to
judge them, so a module that fails to import is still measured):

- no module in ``src/blockdistill/`` is over 400 lines (STYLE.md: split it by what it owns);
- the block sampler's per-block loop (:class:`~blockdistill.sampling.block.DecodeRun`) never
  branches on a cache mode: no mode name appears in it and it never reads a strategy's
  ``name``; the mode is chosen once, by :func:`~blockdistill.sampling.cache.cache_strategy`.
"""

from __future__ import annotations

import ast
from pathlib import Path

from blockdistill.sampling.cache import CACHE_MODES

SRC = Path(__file__).resolve().parents[2] / "src" / "blockdistill"
MAX_LINES = 400


def test_no_module_is_over_400_lines() -> None:
    sizes = {str(p.relative_to(SRC)): len(p.read_text(encoding="utf-8").splitlines()) for p in SRC.rglob("*.py")}
    assert len(sizes) > 50   # the package was found
    over = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines: {over}"


def _mode_branches(tree: ast.AST) -> list[str]:
    """Where ``tree`` names a cache mode or reads a ``.name`` (a strategy's mode name)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and node.value in CACHE_MODES:
            found.append(f"line {node.lineno}: {node.value!r}")
        elif isinstance(node, ast.Attribute) and node.attr == "name":
            found.append(f"line {node.lineno}: .name")
    return found


def test_the_per_block_loop_never_branches_on_a_cache_mode() -> None:
    tree = ast.parse((SRC / "sampling" / "block.py").read_text(encoding="utf-8"))
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    loop = classes["DecodeRun"]
    methods = {n.name for n in loop.body if isinstance(n, ast.FunctionDef)}
    assert {"__call__", "_decode_block", "_end_block"} <= methods
    assert _mode_branches(loop) == []
    # The rule catches what it is meant to: the same class with one mode test added.
    src = ast.unparse(loop).replace("self.strategy.end_block(self, k, x)",
                                    "if self.strategy.name == 'fused':\n            pass\n"
                                    "        self.strategy.end_block(self, k, x)")
    assert len(_mode_branches(ast.parse(src))) == 2
    # The mode is resolved once, before the loop, from the registry.
    entry = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "block_generate")
    calls = [n.func.id for n in ast.walk(entry) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    assert "cache_strategy" in calls
    assert set(CACHE_MODES) >= {"none", "block", "fused"}
