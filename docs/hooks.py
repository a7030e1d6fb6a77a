"""MkDocs hooks: regenerate the generated parts of the site before every build.

- ``docs/gen_figures.py``: concept figures and tables from the library's own layout, sampler and
  toy-joint code (``docs/figures/*.png``, ``docs/_generated/*.md``);
- ``benchmarks/summarize.py``: the benchmarks page body from ``benchmarks/results/*.json``
  (``docs/_generated/benchmarks.md``) and the latest run's plot.

Files are rewritten only when their bytes change, so ``mkdocs serve`` does not rebuild in a loop.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import sys
from pathlib import Path

log = logging.getLogger("mkdocs.hooks.blockdistill")
DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def on_pre_build(config, **kwargs) -> None:
    for p in (ROOT / "src", ROOT):           # the library, without relying on an editable install
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))
    figures = _load("blockdistill_docs_gen_figures", DOCS / "gen_figures.py")
    for path in figures.generate(DOCS / "figures", DOCS / "_generated"):
        log.info("regenerated %s", path.relative_to(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    summarize = _load("blockdistill_docs_summarize", ROOT / "benchmarks" / "summarize.py")
    results = summarize.load_results(ROOT / "benchmarks" / "results")
    text = summarize.render_docs(results)
    plot = DOCS / "figures" / "benchmarks_latest.png"
    if results:
        latest = summarize.latest_full(results) or results[-1]   # a run of one script does not replace it
        png = (ROOT / "benchmarks" / "results" / latest["_file"]).with_suffix(".png")
        if png.is_file():
            if not plot.is_file() or plot.read_bytes() != png.read_bytes():
                shutil.copyfile(png, plot)
            text = text.replace("## All runs\n", "![Latest run](figures/benchmarks_latest.png)\n\n## All runs\n", 1)
    if summarize.write_if_changed(DOCS / "_generated" / "benchmarks.md", text):
        log.info("regenerated docs/_generated/benchmarks.md")
