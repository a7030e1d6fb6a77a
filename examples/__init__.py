"""Complete systems built on blockdistill. Run from the repository root: ``python -m examples.echo_cxr``."""
