"""Real report sentences for metric tests: the IU X-ray (OpenI) reports in torchxrayvision's wheel.

torchxrayvision ships ``data/NLMCXR_reports.tgz`` (3,955 XML reports, CC BY-NC-ND 4.0).
Nothing is downloaded; the archive is found through ``importlib.util.find_spec``.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path


def reports_archive() -> Path:
    """Path of NLMCXR_reports.tgz inside the installed torchxrayvision package."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "torchxrayvision (installed --no-deps) ships the IU X-ray reports"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "NLMCXR_reports.tgz"


@functools.lru_cache(maxsize=1)
def load_reports(limit: int = 400) -> tuple[tuple[str, str], ...]:
    """The first ``limit`` reports (by numeric id) with distinct, non-empty findings and impression.

    Returns:
        (findings, impression) pairs of raw report text.
    """
    out: list[tuple[int, str, str]] = []
    with tarfile.open(reports_archive(), "r:gz") as tar:
        for member in tar:
            match = re.fullmatch(r".*/(\d+)\.xml", member.name)
            if not match or not member.isfile():
                continue
            root = ET.fromstring(tar.extractfile(member).read())
            parts = {el.get("Label"): (el.text or "").strip() for el in root.iter("AbstractText")}
            if parts.get("FINDINGS") and parts.get("IMPRESSION"):
                out.append((int(match.group(1)), parts["FINDINGS"], parts["IMPRESSION"]))
    out.sort()
    seen: set[str] = set()
    reports = []
    for _, findings, impression in out:
        if findings not in seen:
            seen.add(findings)
            reports.append((findings, impression))
    return tuple(reports[:limit])


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


@functools.lru_cache(maxsize=4)
def related_pairs(n: int = 200, n_refs: int = 1) -> tuple[list[str], list[list[str]]]:
    """Hypotheses and references built from *different but related* real reports.

    Hypothesis i is the findings of report i; its references are the findings of the
    ``n_refs`` other reports (among the first ``n``) with the most word overlap (Jaccard),
    so n-gram scores are far from both 0 and the maximum.

    Returns:
        (preds, targets): n strings and n lists of ``n_refs`` strings.
    """
    findings = [f for f, _ in load_reports()[:n]]
    if len(findings) < n:
        raise ValueError(f"only {len(findings)} usable reports, asked for {n}")
    words = [_words(f) for f in findings]
    targets = []
    for i, wi in enumerate(words):
        sims = sorted(
            ((len(wi & wj) / max(1, len(wi | wj)), j) for j, wj in enumerate(words) if j != i),
            reverse=True,
        )
        targets.append([findings[j] for _, j in sims[:n_refs]])
    return findings, targets
