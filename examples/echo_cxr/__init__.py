"""ECHO: one-step block-diffusion chest X-ray report generation, built on blockdistill.

Nothing in ``src/blockdistill`` imports this package; everything CXR-specific lives here.
"""
