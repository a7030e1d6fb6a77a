"""Split a free-text radiology report into its headed sections.

MIMIC-CXR reports, and reports of other sources that lack separate columns, are free text
with ``HEADER:`` lines (``FINDINGS:``, ``IMPRESSION:``, ``INDICATION:``, ...). This module finds
them; the rule-based standardiser (curation stage 2) adds heuristics for reports without any::

    >>> s = split_sections("INDICATION: cough.\\nFINDINGS: Lungs clear.\\nIMPRESSION: Normal.")
    >>> s["findings"], s["impression"]
    ('Lungs clear.', 'Normal.')
"""

from __future__ import annotations

import re

# Header spellings seen in MIMIC-CXR / CheXpert / IU reports, mapped to a canonical name.
# Findings and impression are what we keep; the rest only serve to end those two sections.
_CANONICAL: dict[str, str] = {
    "findings": "findings",
    "finding": "findings",
    "findings and impression": "findings",
    "findings/impression": "findings",
    "report": "findings",
    "impression": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "conclusions": "impression",
    "summary": "impression",
    "opinion": "impression",
    "interpretation": "impression",
}
_OTHER = (
    "indication|indications|history|clinical history|clinical information|reason for exam|"
    "reason for examination|comparison|comparisons|technique|examination|exam|procedure|"
    "wet read|notification|recommendation|recommendations|addendum|final report|"
    "clinical indication|preliminary report|provisional findings impression"
)
_KNOWN = "|".join(sorted((re.escape(k) for k in _CANONICAL), key=len, reverse=True))
# A header starts a line (or follows a sentence end) and ends with a colon. Unknown ALL-CAPS
# headers (e.g. "PA AND LATERAL VIEWS OF THE CHEST:") also end the current section.
_HEADER_RE = re.compile(
    rf"(?:^|(?<=[.\n]))[ \t]*(?P<name>(?i:{_KNOWN}|{_OTHER})|[A-Z][A-Z /&()-]{{2,50}})[ \t]*:",
    re.MULTILINE,
)


def split_sections(text: str) -> dict[str, str]:
    """Return ``{canonical header: section text}`` for the headers found in ``text``.

    Canonical names are ``"findings"`` and ``"impression"``; other headers appear lower-cased
    (``"indication"``, ``"comparison"``, ...). Text before the first header is returned under
    ``"preamble"``. A repeated header's texts are joined. No header at all gives
    ``{"preamble": text}``.
    """
    sections: dict[str, str] = {}
    matches = list(_HEADER_RE.finditer(text))
    start = 0
    name = "preamble"
    for m in matches:
        _add(sections, name, text[start : m.start()])
        raw = " ".join(m.group("name").lower().split())
        name = _CANONICAL.get(raw, raw)
        start = m.end()
    _add(sections, name, text[start:])
    return sections


def _add(sections: dict[str, str], name: str, body: str) -> None:
    body = " ".join(body.split())
    if not body:
        return
    sections[name] = f"{sections[name]} {body}" if name in sections else body
