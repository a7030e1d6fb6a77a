"""Stage 2: standardise each report into ``{findings, impression}`` with explicit negatives.

Two interchangeable stages (same name, same output contract):

- :class:`RuleStandardizer`, offline: finds the sections (source fields, then ``HEADER:``
  parsing, then a heuristic), cleans the text, and appends one explicit negative sentence for
  each CheXpert observation the report leaves unmentioned (never one that contradicts a
  positive or uncertain mention anywhere in the report).
- :class:`LLMStandardizer`: asks an OpenAI-compatible server with the shipped prompt
  ``prompts/standardize.txt`` and keeps only strictly valid JSON answers.

    python -c "from examples.echo_cxr.data.curation.standardize import *; \
print(RuleStandardizer().standardize_text('FINDINGS: Small left effusion.'))"
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..llm_client import ChatClient, InvalidAnswer, LLMError, parse_report_json
from ..readers.sections import split_sections
from ..records import CXRRecord, Rejected, RejectSink
from .journal import AnswerJournal
from .llm_stage import ask, load_prompt, map_ordered, reject_reason, render
from .observations import OBSERVATIONS, mentions, negative_sentence, split_sentences

NORMAL_IMPRESSION = "No acute cardiopulmonary abnormality."
# CheXpert's label hierarchy, plus pneumonia <-> consolidation: an observation is not negated
# while one of these is asserted or hedged ("pneumonia" + "no focal lung opacity" contradicts).
BLOCKED_BY: dict[str, tuple[str, ...]] = {
    "Lung Opacity": ("Edema", "Consolidation", "Pneumonia", "Atelectasis", "Lung Lesion"),
    "Enlarged Cardiomediastinum": ("Cardiomegaly",),
    "Pneumonia": ("Consolidation", "Lung Opacity"),
    "Consolidation": ("Pneumonia",),
}
# Sections that describe the request, not the image: never used as report text.
_CONTEXT_SECTIONS = {
    "preamble", "indication", "indications", "history", "clinical history",
    "clinical information", "reason for exam", "reason for examination", "comparison",
    "comparisons", "technique", "examination", "exam", "procedure", "notification",
    "recommendation", "recommendations", "addendum", "wet read", "final report",
    "clinical indication", "preliminary report",
}
# Sentences about the reporting process rather than the patient.
_DROP = re.compile(
    r"personally reviewed|electronically signed|dictated by|discussed with|were (?:called|"
    r"notified)|was (?:called|notified)|telephone|paged|communicated (?:to|with)|"
    r"findings were relayed|agree with the (?:report|interpretation)",
    re.IGNORECASE,
)
_NUMBERING = re.compile(r"(?:^|(?<=\s)|(?<=[.:]))\(?\d{1,2}[.)]\s*(?=[A-Za-z])")
_KEEP_UPPER = {"picc", "icd", "svc", "ij", "ng", "og", "et", "ett", "chf", "copd", "ap", "pa",
               "cabg", "aicd", "ivc", "tb", "ct", "mri"}


def _is_all_caps(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and sum(c.isupper() for c in letters) >= 0.8 * len(letters)


def _lower_keep_acronyms(text: str) -> str:
    return " ".join(w.upper() if w.strip(".,;:()").lower() in _KEEP_UPPER else w.lower()
                    for w in text.split(" "))


def clean_sentences(text: str) -> list[str]:
    """Section text as tidy sentences: no list numbering, sentence case, one final period."""
    text = " ".join(_NUMBERING.sub(" ", text).split())
    # ALL-CAPS reports (CheXpert) read as shouting and tokenise badly: lower them, keeping
    # acronyms. Split first: the sentence splitter needs the capital after a full stop.
    shouting = _is_all_caps(text)
    out: list[str] = []
    for sentence in split_sentences(text):
        if shouting:
            sentence = _lower_keep_acronyms(sentence)
        sentence = sentence.strip(" .;,")
        sentence = re.sub(r"\.{2,}$", "", sentence)
        if len(re.findall(r"[^\W\d_]", sentence)) < 2 or _DROP.search(sentence):
            continue
        out.append(sentence[0].upper() + sentence[1:] + ".")
    return out


def find_sections(record: CXRRecord) -> tuple[str, str, str]:
    """``(findings, impression, how)``: from the record's fields, headers, or a heuristic.

    Heuristic for text without findings/impression headers: the non-context text is the
    impression when it is at most two sentences (a terse conclusion), else the findings.
    """
    if record.findings.strip() or record.impression.strip():
        return record.findings, record.impression, "source"
    sections = split_sections(record.report)
    if sections.get("findings") or sections.get("impression"):
        return sections.get("findings", ""), sections.get("impression", ""), "headers"
    body_parts = [t for name, t in sections.items() if name not in _CONTEXT_SECTIONS]
    body = " ".join(body_parts) or re.sub(r"^\s*FINAL REPORT\s*", "", sections.get("preamble", ""))
    if len(split_sentences(body)) <= 2:
        return "", body, "heuristic"
    return body, "", "heuristic"


@dataclass
class RuleStandardizer:
    """Offline stage 2: section parsing plus explicit negatives for the CheXpert observations.

    Invariant: no added sentence negates an observation the report asserts or hedges (or one
    that :data:`BLOCKED_BY` ties to it); every other observation of :data:`observations` is
    mentioned in the findings.
    """

    name: str = "standardize"
    observations: tuple[str, ...] = tuple(OBSERVATIONS)
    """Observations to enumerate; a subset of :data:`~.observations.OBSERVATIONS`."""
    normal_impression: str = NORMAL_IMPRESSION
    max_impression_sentences: int = 3
    labeler: Callable[[str], dict[str, str]] = mentions
    """``text -> {observation: "positive"|"uncertain"|"negative"}`` for mentioned observations;
    swap in another labeler (e.g. an adapter of ``examples.echo_cxr.labeler``) to share rules.
    It must read every sentence of :func:`~.observations.negative_sentence` as negative."""

    def __post_init__(self) -> None:
        unknown = set(self.observations) - set(OBSERVATIONS)
        if unknown:
            raise ValueError(f"unknown observations {sorted(unknown)}; expected from {list(OBSERVATIONS)}")

    def params(self) -> dict[str, Any]:
        return {"kind": "rules", "observations": list(self.observations),
                "normal_impression": self.normal_impression,
                "max_impression_sentences": self.max_impression_sentences,
                "labeler": getattr(self.labeler, "__qualname__", repr(self.labeler))}

    def standardize_text(self, findings: str, impression: str = "") -> dict[str, str]:
        """The standardised ``{"findings", "impression"}`` for raw section texts."""
        f_sent, i_sent = clean_sentences(findings), clean_sentences(impression)
        if not f_sent:
            f_sent = list(i_sent)  # the impression is then the only description there is
        in_findings = self.labeler(" ".join(f_sent))
        anywhere = self.labeler(" ".join(f_sent + i_sent))
        asserted = {o for o, status in anywhere.items() if status != "negative"}
        added = [
            negative_sentence(o) for o in self.observations
            if o not in in_findings and o not in asserted
            and not asserted.intersection(BLOCKED_BY.get(o, ()))
        ]
        if not i_sent:
            abnormal = [s for s in f_sent if any(v != "negative" for v in self.labeler(s).values())]
            i_sent = abnormal[: self.max_impression_sentences] or [self.normal_impression]
        return {"findings": " ".join(f_sent + added), "impression": " ".join(i_sent)}

    def process(self, records: Iterable[CXRRecord], reject: RejectSink) -> Iterator[CXRRecord]:
        """Yield standardised records; reject those with no report text left after cleaning."""
        for record in records:
            findings, impression, how = find_sections(record)
            if not clean_sentences(f"{findings} {impression}"):
                reject(Rejected.of(record, self.name, "no findings or impression text to standardise"))
                continue
            out = self.standardize_text(findings, impression)
            metadata = {**record.metadata, "standardizer": "rules", "sections_from": how,
                        "observations": self.labeler(f"{out['findings']} {out['impression']}")}
            yield replace(record, findings=out["findings"], impression=out["impression"],
                          metadata=metadata)


@dataclass
class LLMStandardizer:
    """Stage 2 through an LLM server; an invalid answer rejects the record.

    A failing endpoint stops the stage (:class:`~.llm_stage.EndpointFailure`) instead.
    """

    client: ChatClient
    prompt: str | Path = "standardize"
    """Shipped prompt name or path to a prompt file (see :mod:`.llm_stage`)."""
    concurrency: int = 1
    name: str = "standardize"
    journal: AnswerJournal | None = field(default=None, repr=False, compare=False)
    """Answers already received (set by :class:`~.runner.Pipeline`); ``None``: ask every time."""
    _system: str = field(default="", init=False, repr=False)
    _user: str = field(default="", init=False, repr=False)

    def __post_init__(self) -> None:
        self._system, self._user = load_prompt(self.prompt)

    def params(self) -> dict[str, Any]:
        return {"kind": "llm", "client": self.client.params(), "system": self._system,
                "user": self._user}

    def _call(self, record: CXRRecord) -> dict[str, str] | str:
        findings, impression, _ = find_sections(record)
        text = "\n".join(
            f"{label}: {body}" for label, body in (("FINDINGS", findings), ("IMPRESSION", impression))
            if body.strip()
        ) or record.report
        messages = [{"role": "system", "content": self._system},
                    {"role": "user", "content": render(self._user, text)}]
        try:
            return parse_report_json(ask(self.client, messages, self.journal))
        except (LLMError, InvalidAnswer) as err:
            return reject_reason(self.name, record.key, "LLM standardisation", err)

    def process(self, records: Iterable[CXRRecord], reject: RejectSink) -> Iterator[CXRRecord]:
        """Yield records rewritten by the model, in input order."""
        for record, result in map_ordered(self._call, records, self.concurrency):
            if isinstance(result, str):
                reject(Rejected.of(record, self.name, result))
                continue
            metadata = {**record.metadata, "standardizer": "llm",
                        "observations": mentions(f"{result['findings']} {result['impression']}")}
            yield replace(record, findings=result["findings"], impression=result["impression"],
                          metadata=metadata)
