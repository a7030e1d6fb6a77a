"""ECHO command line.

    python -m examples.echo_cxr all --config examples/echo_cxr/configs/tiny          # the whole demo
    python -m examples.echo_cxr rad --config examples/echo_cxr/configs/tiny rad.trainer.max_steps=50
    python -m examples.echo_cxr all --config examples/echo_cxr/configs/tiny --force  # rerun everything

    python -m examples.echo_cxr predict IMAGE [IMAGE ...]                            # a report for one study
    python -m examples.echo_cxr predict --records studies.json                        # many (ECHO JSON records)
    python -m examples.echo_cxr serve                                                 # the web demo on 127.0.0.1

``--config`` takes a folder of per-stage YAML files (``common.yaml`` + ``<stage>.yaml``) or one
YAML file. Finished stages are skipped unless ``--force``; interrupted ones resume.
"""

from __future__ import annotations

import time

_STARTED = time.time()  # before the heavy imports: they are part of the command's set-up

import argparse  # noqa: E402
import sys  # noqa: E402

from blockdistill.config import ConfigError  # noqa: E402
from examples.echo_cxr.config import STAGES, load_echo_config  # noqa: E402

DEFAULT_CONFIG = "examples/echo_cxr/configs/tiny"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "predict":
        from examples.echo_cxr.predict import main as predict_main

        return predict_main(argv[1:])
    if argv and argv[0] == "serve":
        from examples.echo_cxr.serve import main as serve_main

        return serve_main(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m examples.echo_cxr", description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=(*STAGES, "all"), help="stage to run, or all of them in order")
    ap.add_argument("--config", "-c", action="append", default=None,
                    help="config folder or YAML file; repeat to layer more (e.g. a size folder, then rad_L8.yaml)")
    ap.add_argument("--force", action="store_true", help="rerun stages even if the manifest says they are done")
    ap.add_argument("--started-at", type=float, default=None,
                    help="epoch seconds the command began (`make demo` passes it, so installing counts too)")
    ap.add_argument("overrides", nargs="*", help="key=value overrides, e.g. ar.trainer.max_steps=100")
    args = ap.parse_intermixed_args(argv)  # overrides may come before or after --config
    try:
        # every stage file is read, so a stage run alone sees the same config as inside `all`
        cfg = load_echo_config(args.config or [DEFAULT_CONFIG], overrides=args.overrides, all_stages=True)
    except ConfigError as e:
        print(f"echo_cxr: invalid config: {e}", file=sys.stderr)
        return 2
    from examples.echo_cxr.pipeline import run

    run(cfg, STAGES if args.stage == "all" else (args.stage,), force=args.force,
        started_at=args.started_at if args.started_at is not None else _STARTED)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
