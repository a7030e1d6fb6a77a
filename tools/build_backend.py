"""setuptools' PEP 517 backend, building outside the checkout.

``pip install .`` and ``pip wheel .`` would otherwise leave ``build/`` (and
``src/blockdistill.egg-info``) in the source tree. Every hook here runs setuptools' own with
``build_base`` and ``egg_base`` pointed into a temporary directory (through setuptools'
``DIST_EXTRA_CONFIG`` option file), which is removed afterwards. Editable installs
(``pip install -e .``, what ``make install`` does) are setuptools' unchanged.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403 - every other hook is setuptools' own


@contextlib.contextmanager
def _outside_tree():
    tmp = tempfile.mkdtemp(prefix="blockdistill-build-")
    cfg = os.path.join(tmp, "setup.cfg")
    with open(cfg, "w", encoding="utf-8") as f:
        f.write(f"[build]\nbuild_base = {os.path.join(tmp, 'build')}\n[egg_info]\negg_base = {tmp}\n")
    old = os.environ.get("DIST_EXTRA_CONFIG")
    os.environ["DIST_EXTRA_CONFIG"] = cfg
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("DIST_EXTRA_CONFIG", None)
        else:
            os.environ["DIST_EXTRA_CONFIG"] = old
        shutil.rmtree(tmp, ignore_errors=True)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    with _outside_tree():
        return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_sdist(sdist_directory, config_settings=None):
    with _outside_tree():
        return _setuptools.build_sdist(sdist_directory, config_settings)


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    with _outside_tree():
        return _setuptools.prepare_metadata_for_build_wheel(metadata_directory, config_settings)
