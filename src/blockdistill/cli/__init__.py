"""``blockdistill`` command line: one sub-command per stage, each a YAML config plus overrides.

    blockdistill train-ar  --config ar.yaml  trainer.max_steps=200
    blockdistill train-rad --config rad.yaml block.block_size=8 layout=rad
    blockdistill collect   --config collect.yaml model.pretrained=runs/rad/model
    blockdistill train-dcd --config dcd.yaml trajectories=runs/dcd/trajectories
    blockdistill show-config train-rad   # print the full default config as YAML

``--config`` is a YAML file, or the name of one of the configs shipped inside the package
(``-c tiny/rad``, also ``configs/tiny/rad.yaml``), used when no such file exists: they work
from an installed wheel, outside a checkout (:func:`config_path`).

A config error, found while loading or while a stage checks it against the saved model, is
printed as one line naming the field (no traceback) and exits with status 2.
A damaged file (a checkpoint, saved model or trajectory shard whose bytes do not match its
recorded sha256, or a checkpoint that cannot be read as weights only) is printed as one line
naming the file and what to do, and exits with status 3.

The package: :mod:`~blockdistill.cli.common` (config to recipe arguments),
:mod:`~blockdistill.cli.train` (``train-ar``, ``train-rad``) and
:mod:`~blockdistill.cli.distill` (``collect``, ``train-dcd``), each calling
:mod:`blockdistill.recipes`, and :mod:`~blockdistill.cli.interop` (``import-sdar``,
``export-sdar``, calling :mod:`blockdistill.interop`); only this module knows the table of
commands, and the command modules import none of each other.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from blockdistill.cli import distill, interop, train
from blockdistill.config import (
    ARTrainConfig,
    CollectConfig,
    ConfigError,
    DCDTrainConfig,
    RADTrainConfig,
    load_config,
)
from blockdistill.data.checks import BadExampleError
from blockdistill.utils.checksum import DamagedFileError

__all__ = ["COMMANDS", "Command", "config_path", "main", "packaged_configs"]


def packaged_configs() -> list[str]:
    """Names of the configs shipped as package data (``tiny/rad``, ...)."""
    from importlib.resources import files

    root = Path(str(files("blockdistill") / "configs"))
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.glob("*/*.yaml"))


def config_path(name: str | None) -> str | None:
    """``name`` when it is an existing file (or None); else the packaged config it names
    (``tiny/rad``, ``tiny/rad.yaml`` or ``configs/tiny/rad.yaml``); else a ConfigError listing them."""
    if name is None or Path(name).exists():
        return name
    from importlib.resources import files

    root = Path(str(files("blockdistill") / "configs"))
    stem = name.removeprefix("configs/").removesuffix(".yaml")
    if (root / f"{stem}.yaml").is_file():
        return str(root / f"{stem}.yaml")
    raise ConfigError(f"--config {name!r}: no such file, and not a packaged config (those are: "
                      f"{', '.join(packaged_configs())})")


class Command(NamedTuple):
    """A sub-command: its config class, the function run with the loaded config, its help line."""

    config: type
    run: Callable
    help: str


COMMANDS: dict[str, Command] = {
    "train-ar": Command(ARTrainConfig, train.train_ar, "stage 1: AR continued pre-training"),
    "train-rad": Command(RADTrainConfig, train.train_rad, "stage 2: RAD adaptation into a block-diffusion model"),
    "collect": Command(CollectConfig, distill.collect,
                       "DCD phase 1: record the teacher's trajectories into sharded files"),
    "train-dcd": Command(DCDTrainConfig, distill.train_dcd,
                         "stage 3: DCD, distill the one-step student (offline shards or online)"),
    "import-sdar": Command(interop.ImportSDARConfig, interop.import_sdar,
                           "convert an SDAR- or ECHO-layout checkpoint (no remote code run)"),
    "export-sdar": Command(interop.ExportSDARConfig, interop.export_sdar_cmd,
                           "write a shift=False Qwen3 block model in SDAR's layout"),
}
"""The sub-commands by name."""


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="blockdistill", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help)
        p.add_argument("--config", "-c", help="YAML config file, or a packaged config by name (tiny/rad)")
        p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=1e-4")
    p = sub.add_parser("show-config", help="print a command's full default config")
    p.add_argument("name", choices=sorted(COMMANDS))
    args = parser.parse_args(argv)
    if args.cmd == "show-config":
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(OmegaConf.structured(COMMANDS[args.name].config)))
        return 0
    cmd = COMMANDS[args.cmd]
    try:
        cmd.run(load_config(cmd.config, config_path(args.config), args.overrides))
    except ConfigError as e:
        print(f"blockdistill {args.cmd}: invalid config: {e}", file=sys.stderr)
        return 2
    except BadExampleError as e:
        print(f"blockdistill {args.cmd}: bad training data: {e}", file=sys.stderr)
        return 2
    except DamagedFileError as e:
        print(f"blockdistill {args.cmd}: damaged file: {e}", file=sys.stderr)
        return 3
    return 0
