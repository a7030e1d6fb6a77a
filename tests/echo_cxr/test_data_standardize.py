"""Stages 1-2 on hand-written reports: modality filter, negation lexicon, rule standardiser.

Run: OMP_NUM_THREADS=1 PYTHONPATH=src:. .venv/bin/python -m pytest tests/echo_cxr/test_data_standardize.py -q
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.echo_cxr.data.curation import ModalityFilter, RuleStandardizer
from examples.echo_cxr.data.curation.observations import OBSERVATIONS, mentions, negative_sentence
from examples.echo_cxr.data.curation.standardize import clean_sentences, find_sections
from examples.echo_cxr.data.records import CXRRecord, Rejected

ALL_NEGATIVES = [negative_sentence(o) for o in OBSERVATIONS]


def standardize(record: CXRRecord) -> CXRRecord:
    rejects: list[Rejected] = []
    out = list(RuleStandardizer().process([record], rejects.append))
    assert not rejects and len(out) == 1
    return out[0]


def test_headers_negations_and_uncertainty() -> None:
    """Guards against negating hedged findings: "possible pneumonia" must not get "No pneumonia"."""
    record = CXRRecord("a", "mimic_cxr", report=(
        "FINAL REPORT\nINDICATION: Fever.\nFINDINGS: Heart size is normal. No pleural effusion or "
        "pneumothorax. Possible left basilar atelectasis versus early pneumonia.\n"
        "IMPRESSION: Possible early left basilar pneumonia. Dr. Smith was notified at 10:30."))
    out = standardize(record)
    assert {"findings": out.findings, "impression": out.impression} == {
        "findings": "Heart size is normal. No pleural effusion or pneumothorax. Possible left "
                    "basilar atelectasis versus early pneumonia. The cardiomediastinal silhouette "
                    "is within normal limits. No lung nodule or mass. No pulmonary edema. No other "
                    "pleural abnormality. No acute fracture. No lines or tubes.",
        "impression": "Possible early left basilar pneumonia.",
    }
    assert out.metadata["sections_from"] == "headers"
    assert out.metadata["observations"]["Pneumonia"] == "uncertain"
    assert out.metadata["observations"]["Pleural Effusion"] == "negative"


def test_all_caps_numbered_chexpert_style() -> None:
    out = standardize(CXRRecord("b", "chexpert_plus", findings=(
        "1.CARDIOMEGALY WITH MILD PULMONARY EDEMA.\n\n2.NO EVIDENCE OF PNEUMOTHORAX. RIGHT PICC "
        "LINE TIP IN THE SVC."), impression="1.CONGESTIVE HEART FAILURE."))
    assert out.findings == (
        "Cardiomegaly with mild pulmonary edema. No evidence of pneumothorax. Right PICC line tip "
        "in the SVC. No lung nodule or mass. No focal consolidation. No evidence of pneumonia. No "
        "atelectasis. No pleural effusion. No other pleural abnormality. No acute fracture.")
    assert out.impression == "Congestive heart failure."


def test_missing_headers_and_missing_impression() -> None:
    """No headers, three sentences: they are findings; the impression lists the positives."""
    out = standardize(CXRRecord("c", "mimic_cxr", report=(
        "Mild cardiomegaly. Small bilateral pleural effusions. No pneumothorax.")))
    assert out.metadata["sections_from"] == "heuristic"
    assert out.findings.startswith("Mild cardiomegaly. Small bilateral pleural effusions. No pneumothorax. No focal lung opacity.")
    assert "No pleural effusion." not in out.findings and "heart size is normal" not in out.findings
    assert out.impression == "Mild cardiomegaly. Small bilateral pleural effusions."


def test_missing_findings_normal_impression() -> None:
    out = standardize(CXRRecord("d", "rexgradient", impression="No acute cardiopulmonary process."))
    assert out.findings == " ".join(["No acute cardiopulmonary process.", *ALL_NEGATIVES])
    assert out.impression == "No acute cardiopulmonary process."


def test_pseudo_negation_keeps_finding_positive() -> None:
    """Guards against "no change in effusion" being read as "no effusion"."""
    out = standardize(CXRRecord("e", "iu_xray", findings="No change in small left pleural effusion."))
    assert "No pleural effusion." not in out.findings
    assert out.impression == "No change in small left pleural effusion."


def test_short_headerless_text_is_impression() -> None:
    findings, impression, how = find_sections(CXRRecord("f", "mimic_cxr", report="Clear lungs."))
    assert (findings, impression, how) == ("", "Clear lungs.", "heuristic")


def test_nothing_to_standardise_is_rejected() -> None:
    rejects: list[Rejected] = []
    record = CXRRecord("g", "mimic_cxr", report="INDICATION: Cough.\nCOMPARISON: None.")
    assert list(RuleStandardizer().process([record], rejects.append)) == []
    assert "no findings or impression" in rejects[0].reason


@pytest.mark.parametrize("text,expected", [
    ("No pleural effusion, but possible left basilar atelectasis.",
     {"Pleural Effusion": "negative", "Atelectasis": "uncertain"}),
    ("The heart is normal in size. The mediastinum is unremarkable.",
     {"Cardiomegaly": "negative", "Enlarged Cardiomediastinum": "negative"}),
    ("Moderate right pleural effusion with adjacent atelectasis.",
     {"Pleural Effusion": "positive", "Atelectasis": "positive"}),
    ("Pneumothorax cannot be excluded.", {"Pneumothorax": "uncertain"}),
    ("Congestive heart failure.", {"Edema": "positive"}),
    ("There is no pneumothorax; small effusion.", {"Pneumothorax": "negative", "Pleural Effusion": "positive"}),
])
def test_mentions(text: str, expected: dict[str, str]) -> None:
    assert mentions(text) == expected


def test_every_negative_sentence_reads_as_negative() -> None:
    """The sentences we add must be understood by our own lexicon (else re-runs add twice)."""
    for observation in OBSERVATIONS:
        assert mentions(negative_sentence(observation)) == {observation: "negative"}


SENTENCES = st.sampled_from([
    "Heart size is normal.", "Mild cardiomegaly.", "Small left pleural effusion.",
    "No pneumothorax.", "Possible right lower lobe pneumonia.", "Lungs are clear.",
    "Right IJ catheter tip in the SVC.", "Stable calcified granuloma.", "No acute fracture.",
    "Bibasilar atelectasis.", "No pulmonary edema.",
])


@settings(max_examples=60, deadline=None)
@given(st.lists(SENTENCES, min_size=1, max_size=5), st.lists(SENTENCES, max_size=2))
def test_standardisation_is_idempotent_and_consistent(findings: list[str], impression: list[str]) -> None:
    """Property: standardising twice changes nothing, and labels never flip to negative."""
    std = RuleStandardizer()
    once = std.standardize_text(" ".join(findings), " ".join(impression))
    twice = std.standardize_text(once["findings"], once["impression"])
    assert twice == once
    before = mentions(" ".join(findings + impression))
    after = mentions(f"{once['findings']} {once['impression']}")
    for observation, status in before.items():
        assert after[observation] == status, (observation, once)


def test_clean_sentences() -> None:
    assert clean_sentences("1. LUNGS CLEAR.  2) NO PICC..") == ["Lungs clear.", "No PICC."]
    assert clean_sentences("Effusion measures 1.5 cm. I have personally reviewed the images.") == [
        "Effusion measures 1.5 cm."]


@pytest.mark.parametrize("text,body_part,why", [
    ("There is a nondisplaced fracture of the tibial plateau. Knee joint effusion.", "", "not a chest study"),
    ("Normal bowel gas pattern in the abdomen.", "", "not a chest study"),
    ("Small effusion.", "KNEE", "not a chest study"),
    ("See separate report.", "", "no clinical content"),
    ("Normal.", "", "no clinical content"),
    ("Please refer to the attached document for details", "", "no clinical content"),
])
def test_modality_filter_rejects(text: str, body_part: str, why: str) -> None:
    assert why in (ModalityFilter().verdict(text, body_part) or "")


@pytest.mark.parametrize("text", [
    "No active disease.", "Heart size normal. Lungs clear.",
    "Abdomen: normal bowel gas. Lung bases are clear.", "Small left effusion noted.",
])
def test_modality_filter_keeps(text: str) -> None:
    assert ModalityFilter().verdict(text) is None


def test_modality_stage_accounts_for_every_record() -> None:
    records = [CXRRecord("1", "rexgradient", findings="Knee effusion.", metadata={"body_part": "KNEE"}),
               CXRRecord("2", "mimic_cxr", findings="Lungs clear. Heart normal.")]
    rejects: list[Rejected] = []
    kept = list(ModalityFilter().process(records, rejects.append))
    assert [r.study_id for r in kept] == ["2"]
    assert rejects[0].key == "rexgradient/1" and rejects[0].stage == "modality"
