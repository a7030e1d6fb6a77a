"""Readers for the four real CXR report data sets, one module each, all yielding ``CXRRecord``.

Each reader takes its data set's real on-disk layout (documented in docs/data.md and in the
module docstring) and implements :class:`~.base.Reader`: ``read(reject)`` yields records and
reports every study it cannot use to ``reject`` with a reason.
"""

from .base import Reader
from .chexpert_plus import CheXpertPlusReader
from .iu_xray import IUXrayReader, bundled_reports_path
from .mimic_cxr import MimicCXRReader
from .rexgradient import ReXGradientReader

__all__ = [
    "CheXpertPlusReader",
    "IUXrayReader",
    "MimicCXRReader",
    "ReXGradientReader",
    "Reader",
    "bundled_reports_path",
]
