"""Command line of the IU-Xray text example (SmolLM2 drafts reports from MeSH codes).

    python -m examples.iu_text all --config examples/iu_text/configs/cpu          # make demo-text
    python -m examples.iu_text rad --config examples/iu_text/configs/cpu rad.trainer.max_steps=50
    python -m examples.iu_text all --config examples/iu_text/configs/cpu --force  # rerun everything

Finished stages are skipped unless ``--force``; interrupted ones resume.
"""

from __future__ import annotations

import time

_STARTED = time.time()  # before the heavy imports: they are part of the command's set-up

import argparse  # noqa: E402
import sys  # noqa: E402

DEFAULT_CONFIG = "examples/iu_text/configs/cpu"


def main(argv: list[str] | None = None) -> int:
    from blockdistill.config import ConfigError
    from examples.iu_text.config import STAGES, load_text_config

    ap = argparse.ArgumentParser(prog="python -m examples.iu_text", description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=(*STAGES, "all"), help="stage to run, or all of them in order")
    ap.add_argument("--config", "-c", action="append", default=None, help="config folder or YAML file (repeatable)")
    ap.add_argument("--force", action="store_true", help="rerun stages even if the manifest says they are done")
    ap.add_argument("--started-at", type=float, default=None,
                    help="epoch seconds the command began (the Makefile passes it, so installing counts too)")
    ap.add_argument("overrides", nargs="*", help="key=value overrides, e.g. ar.trainer.max_steps=100")
    args = ap.parse_intermixed_args(argv)
    try:
        cfg = load_text_config(args.config or [DEFAULT_CONFIG], overrides=args.overrides)
    except ConfigError as e:
        print(f"iu_text: invalid config: {e}", file=sys.stderr)
        return 2
    from examples.iu_text.pipeline import run

    try:
        run(cfg, STAGES if args.stage == "all" else (args.stage,), force=args.force,
            started_at=args.started_at if args.started_at is not None else _STARTED)
    except FileNotFoundError as e:
        print(f"iu_text: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
