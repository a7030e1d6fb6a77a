"""``python -m blockdistill.cli``: the ``blockdistill`` command line."""

from blockdistill.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
