"""The documentation site builds in strict mode, and the figures and numbers its pages state are
what the library computes.

The strict build fails on any broken link, missing anchor, unresolved API cross-reference or
missing snippet file, so a renamed function or page breaks this test, not the published site.
The build's hook (docs/hooks.py) regenerates the figures from the library's own mask and sampler
functions: if the library changed, the build rewrites docs/figures and docs/_generated, and git
shows them modified.
"""

from __future__ import annotations

import importlib.util
import sys

import torch

from tests.docs.helpers import ROOT, explain, run_python


def _gen_figures():
    spec = importlib.util.spec_from_file_location("docs_gen_figures", ROOT / "docs" / "gen_figures.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["docs_gen_figures"] = module
    spec.loader.exec_module(module)
    return module


def test_mkdocs_strict_build(tmp_path) -> None:
    """Guards against broken links, anchors, API references and snippet paths in any page."""
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python", "pymdownx"):
        # `make test` installs the docs extra: a missing package is a failure, not a skip.
        assert importlib.util.find_spec(module) is not None, f"{module} is not installed: pip install -e '.[docs]'"
    site = tmp_path / "site"
    proc, wall = run_python(["-m", "mkdocs", "build", "--strict", "-f", "mkdocs.yml", "-d", str(site)], timeout=300)
    assert proc.returncode == 0, explain(proc)
    assert "WARNING" not in proc.stdout + proc.stderr, explain(proc)
    for page in ("index.html", "concepts/layout/index.html", "concepts/kv_cache/index.html",
                 "concepts/mean_field/index.html", "tutorials/convert_hf_model/index.html",
                 "tutorials/custom_targets/index.html", "tutorials/backbone_family/index.html",
                 "tutorials/echo_real_data/index.html", "benchmarks/index.html", "api/layout/index.html",
                 "decoding/index.html", "dcd/index.html", "data/index.html", "metrics/index.html"):
        assert (site / page).is_file(), page
    for figure in ("block_grid", "masks", "rad_mask", "kv_cache_timeline", "mean_field"):
        assert (site / "figures" / f"{figure}.png").stat().st_size > 5000, figure
    # The API reference renders the docstrings (not just headings) of the main entry points.
    api = (site / "api" / "layout" / "index.html").read_text()
    assert "blockdistill.layout.rad_layout" in api and "n + (n - s)" in api
    assert ":class:" not in (site / "api" / "sampling" / "index.html").read_text()
    # The tutorials include their code from the files the tests run.
    assert "from_causal_lm" in (site / "tutorials" / "convert_hf_model" / "index.html").read_text()
    # The benchmarks page says plainly whether any GPU numbers exist.
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import summarize

    gpu = any(summarize.has_gpu(r) for r in summarize.load_results(ROOT / "benchmarks" / "results"))
    assert ("no GPU machine was available" in (site / "benchmarks" / "index.html").read_text()) is not gpu
    print(f"mkdocs build: {wall:.1f} s")


def test_figures_generate_from_the_library(tmp_path) -> None:
    """Guards against figures that cannot be regenerated (the hook would fail the build)."""
    gen = _gen_figures()
    gen.generate(tmp_path / "figures", tmp_path / "generated")
    for name in ("block_grid", "masks", "rad_mask", "kv_cache_timeline", "mean_field"):
        assert (tmp_path / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The committed snippets are what the library computes now.
    for name in ("mean_field_table.md", "token_counts.md"):
        assert (tmp_path / "generated" / name).read_text() == (ROOT / "docs" / "_generated" / name).read_text(), \
            f"docs/_generated/{name} is stale: run python docs/gen_figures.py"


def test_the_numbers_the_concept_pages_state() -> None:
    """The prose of the concept pages quotes numbers; they must match the library's behaviour."""
    gen = _gen_figures()
    # kv_cache.md: "7 forwards" unfused, "4 here" fused (after prefill), for 12 tokens at L=4.
    block, fused = gen.record_calls("block"), gen.record_calls("fused")
    assert [c.kind for c in block].count("forward") == 7
    assert [c.kind for c in fused].count("forward") == 4
    assert all(len(c.index) == 2 * gen.L for c in fused[2:])          # [previous block | current block]
    assert all(c.append in (0, gen.L) for c in block + fused)
    # mean_field.md: first-step argmaxes no (0.40), no (0.60), effusion (0.60): "no no effusion", p = 0;
    # the teacher commits slot 2, then 3, then 1 and produces "is no effusion" (0.30 = 0.6 x 1.0 x 0.5).
    ex = gen.mean_field_example()
    words = gen.WORDS
    assert [words[t] for t in ex["mean_field"]] == ["no", "no", "effusion"]
    torch.testing.assert_close(ex["first"].max(-1).values, torch.tensor([0.4, 0.6, 0.6]), atol=1e-6, rtol=0)
    assert ex["toy"].prob(ex["prompt"], ex["mean_field"]) == 0
    assert [words[t] for t in ex["teacher"]] == ["is", "no", "effusion"]
    assert ex["rec"].commit_step[:3].tolist() == [3, 1, 2]
    q = ex["rec"].target.prob_of(ex["rec"].tokens)[:3]
    assert abs(float(q.prod()) - ex["toy"].prob(ex["prompt"], ex["teacher"])) < 1e-6
    assert abs(float(q.prod()) - 0.3) < 1e-6
    # layout.md: P=6, R=5, L=4 -> n=12, s=4, RAD 20 slots, full duplication 24.
    assert (gen.N, gen.S) == (12, 4)


def test_every_page_is_in_the_nav() -> None:
    """Guards against a page that exists but cannot be reached (and a nav entry without a page)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    cfg = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=Loader)

    def pages(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, list):
            for item in node:
                yield from pages(item)
        elif isinstance(node, dict):
            for value in node.values():
                yield from pages(value)

    nav = set(pages(cfg["nav"]))
    docs = ROOT / "docs"
    on_disk = {p.relative_to(docs).as_posix() for p in docs.rglob("*.md") if "_generated" not in p.parts}
    assert on_disk == nav, f"not in nav: {sorted(on_disk - nav)}; missing: {sorted(nav - on_disk)}"
