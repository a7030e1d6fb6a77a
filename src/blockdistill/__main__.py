"""``python -m blockdistill ...``: the command line (the same as the ``blockdistill`` script)."""

from blockdistill.cli import main

raise SystemExit(main())
