"""Tutorial 4 (ECHO on real data) cannot run here, so its command lines are checked instead:
every ``python -m examples.echo_cxr`` command parses with the real CLI and its configuration
loads and validates (nothing runs), every flag of the other commands exists, and every config
file the page names exists.
"""

from __future__ import annotations

import re
import shlex

import pytest

from tests.docs.helpers import ROOT

PAGE = ROOT / "docs" / "tutorials" / "echo_real_data.md"


def commands(prefix: str) -> list[list[str]]:
    """Shell commands of the page's ``bash`` blocks starting with ``prefix`` (continuations joined)."""
    blocks = re.findall(r"```bash\n(.*?)```", PAGE.read_text(), flags=re.S)
    out = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith(prefix + " ") or line == prefix:
                out.append(shlex.split(line))
    return out


ECHO = commands("python -m examples.echo_cxr")


def test_the_page_has_the_commands() -> None:
    stages = {argv[3] for argv in ECHO}
    assert {"data", "ar", "rad", "collect", "dcd", "eval", "report", "all"} <= stages, stages
    assert commands("python -m examples.echo_cxr.data.curate_iu")
    assert commands("python -m examples.echo_cxr.evaluate")
    assert commands("python -m examples.echo_cxr.data.curate")


@pytest.mark.parametrize("argv", ECHO, ids=[" ".join(a[3:5]) + f"#{i}" for i, a in enumerate(ECHO)])
def test_echo_command_parses_and_its_config_loads(argv: list[str], monkeypatch) -> None:
    """Guards against a tutorial command whose stage, config path, layering or override is wrong."""
    import examples.echo_cxr.pipeline as pipeline
    from examples.echo_cxr.__main__ import main

    ran = []
    monkeypatch.setattr(pipeline, "run", lambda cfg, stages, force=False, started_at=None: ran.append((cfg, stages)))
    assert main(argv[3:]) == 0, f"config of {' '.join(argv)} does not load"
    (cfg, stages), = ran
    if "lingshu7b" in " ".join(argv):
        assert cfg.model.kind == "pretrained" and cfg.model.dtype == "bfloat16"
        assert cfg.data.source == "records"


def test_other_commands_use_real_flags() -> None:
    from examples.echo_cxr.data.curate_iu import build_parser

    for argv in commands("python -m examples.echo_cxr.data.curate_iu"):
        build_parser().parse_args(argv[3:])
    source = (ROOT / "examples" / "echo_cxr" / "evaluate.py").read_text()
    for argv in commands("python -m examples.echo_cxr.evaluate"):
        for flag in (a for a in argv if a.startswith("--")):
            assert f'"{flag}"' in source, f"examples.echo_cxr.evaluate has no {flag}"
    from examples.echo_cxr.data.curate import build_parser as curate_parser

    for argv in commands("python -m examples.echo_cxr.data.curate"):
        curate_parser().parse_args(argv[3:])  # python -m <module> <args...>


def test_named_config_files_exist() -> None:
    for path in sorted(set(re.findall(r"examples/echo_cxr/configs/[\w/.]+", PAGE.read_text()))):
        assert (ROOT / path.rstrip(".")).exists(), path
