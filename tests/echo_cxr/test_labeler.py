"""Rule-based labeler: synthetic reports label back exactly; tricky sentences get CheXpert-style labels."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.echo_cxr.data import synthetic as syn
from examples.echo_cxr.data.synthetic import FINDINGS, SyntheticConfig, generate_sample
from examples.echo_cxr.labeler import (
    ALL_FINDINGS,
    CHEXPERT_FINDINGS,
    NEGATIVE,
    POSITIVE,
    UNCERTAIN,
    find_mentions,
    label_report,
    synthetic_labels,
)

P, N, U = POSITIVE, NEGATIVE, UNCERTAIN


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([0.1, 0.25, 0.5, 0.9]))
def test_synthetic_reports_label_back_exactly(seed, prior):
    """Every en and zh report of the generator is labelled exactly back to its label vector."""
    s = generate_sample(seed, SyntheticConfig(priors=prior), with_image=False)
    for lang in ("en", "zh"):
        assert synthetic_labels(s.report(lang), lang) == s.labels, (lang, s.report(lang))
        assert synthetic_labels(s.report(lang)) == s.labels  # language auto-detected


def _all_sentences():
    """Every phrasing variant of every findings sentence, with its finding and expected status."""
    for lang, table in (("en", syn._EN), ("zh", syn._ZH)):
        for key, tmpl, side, zone in syn._slots(dict.fromkeys(FINDINGS, 0)):
            for polarity in (0, 1):
                for text in table[tmpl][1 - polarity]:
                    zones = syn._EN_ZONE[zone] if zone and lang == "en" else ("",)
                    for z in zones:
                        if lang == "en":
                            yield lang, key, polarity, text.format(s=side, S=side.capitalize(), z=z)
                        else:
                            zz = syn._ZH_ZONE[side] + syn._ZH_ZONE[zone] if zone else ""
                            yield lang, key, polarity, text.format(s=syn._ZH_SIDE.get(side, ""), z=zz)


def test_every_phrasing_variant_alone():
    """Each variant sentence on its own sets its finding and no other synthetic finding positive."""
    cases = list(_all_sentences())
    assert len(cases) > 100
    for lang, key, polarity, text in cases:
        got = synthetic_labels(text, lang)
        assert got[key] == polarity, (text, got)
        assert not [f for f, v in got.items() if f != key and v == P], (text, got)


def test_synthetic_reports_chexpert_consistent():
    """CheXpert-level labels of synthetic reports agree with the synthetic labels."""
    for seed in range(150):
        s = generate_sample(seed, with_image=False)
        for lang in ("en", "zh"):
            lab = label_report(s.report(lang), lang)
            eff = s.labels["left_pleural_effusion"] or s.labels["right_pleural_effusion"]
            opac = any(s.labels[f"{a}_{b}_opacity"] for a in ("left", "right") for b in ("upper", "lower"))
            assert lab["Pleural Effusion"] == (P if eff else N)
            assert lab["Cardiomegaly"] == (P if s.labels["cardiomegaly"] else N)
            assert lab["Pneumothorax"] == (P if s.labels["pneumothorax"] else N)
            assert lab["Support Devices"] == (P if s.labels["support_devices"] else N)
            assert (P in (lab["Lung Opacity"], lab["Consolidation"])) == opac
            normal = not (eff or opac or s.labels["cardiomegaly"] or s.labels["pneumothorax"])
            assert (lab["No Finding"] == P) == normal


def test_raw_reports_positives_only():
    """Free-text reports (abbreviated, shuffled, negatives omitted): positives found, nothing else positive."""
    for seed in range(200):
        s = generate_sample(seed, with_image=False)
        lab = synthetic_labels(s.raw_report, "en")
        for f in FINDINGS:
            assert (lab[f] == P) == bool(s.labels[f]), (s.raw_report, f, lab[f])


TRICKY = [
    ("No pleural effusion or pneumothorax.", {"Pleural Effusion": N, "Pneumothorax": N, "No Finding": P}),
    ("Cannot exclude pneumonia.", {"Pneumonia": U, "No Finding": None}),
    ("No change in cardiomegaly.", {"Cardiomegaly": P}),
    ("No evidence of consolidation.", {"Consolidation": N, "left_lower_opacity": N}),
    ("Cardiomegaly without pneumothorax.", {"Cardiomegaly": P, "Pneumothorax": N}),
    ("Resolved effusion.", {"Pleural Effusion": N}),
    ("Small left pleural effusion.", {"left_pleural_effusion": P, "right_pleural_effusion": None}),
    ("Small right pleural effusion.", {"right_pleural_effusion": P, "left_pleural_effusion": None}),
    ("Cardiomegaly with bilateral pleural effusions and right lower lobe consolidation.",
     {"Cardiomegaly": P, "left_pleural_effusion": P, "right_pleural_effusion": P, "Consolidation": P,
      "right_lower_opacity": P, "right_upper_opacity": None, "left_lower_opacity": None}),
    ("The heart is not enlarged.", {"Cardiomegaly": N}),
    ("No focal consolidation to suggest pneumonia.", {"Consolidation": N, "Pneumonia": N}),
    ("Left lower lobe opacity may represent atelectasis or pneumonia.",
     {"Lung Opacity": P, "left_lower_opacity": P, "Atelectasis": U, "Pneumonia": U}),
    ("Pleural effusion cannot be excluded.", {"Pleural Effusion": U}),
    ("Pneumothorax is not seen.", {"Pneumothorax": N}),
    ("The right effusion has resolved.", {"Pleural Effusion": N, "right_pleural_effusion": N}),
    ("No pneumothorax but there is a small right effusion.", {"Pneumothorax": N, "right_pleural_effusion": P}),
    ("There is no pneumothorax and a small right effusion.", {"Pneumothorax": N, "Pleural Effusion": P}),
    ("Small pericardial effusion.", {"Pleural Effusion": None}),
    ("Bibasilar opacities.", {"left_lower_opacity": P, "right_lower_opacity": P, "left_upper_opacity": None}),
    ("Interval removal of the endotracheal tube.", {"Support Devices": N}),
    ("Normal cardiomediastinal silhouette.", {"Enlarged Cardiomediastinum": N, "Cardiomegaly": None}),
    ("Cardiac silhouette is borderline enlarged.", {"Cardiomegaly": U}),
    ("Healed left rib fractures.", {"Fracture": P}),
    ("Findings suggestive of pneumonia.", {"Pneumonia": U}),
    ("The lungs are clear without focal consolidation, effusion, or pneumothorax.",
     {"Lung Opacity": N, "Consolidation": N, "Pleural Effusion": N, "Pneumothorax": N, "No Finding": P}),
    ("Mild pulmonary edema.", {"Edema": P, "No Finding": None}),
    ("Right IJ catheter tip in the SVC.", {"Support Devices": P, "No Finding": P}),
    ("Possible small left effusion.", {"Pleural Effusion": U, "left_pleural_effusion": U}),
    ("Pneumonia is not excluded.", {"Pneumonia": U}),
    ("Stable mild cardiomegaly.", {"Cardiomegaly": P}),
    ("No pleural effusion on the left.", {"left_pleural_effusion": N, "right_pleural_effusion": None}),
    ("Heart size is normal, no effusion.", {"Cardiomegaly": N, "Pleural Effusion": N}),
    ("Mediastinum is widened.", {"Enlarged Cardiomediastinum": P}),
    ("There is a 2.5 cm nodule in the right upper lobe.", {"Lung Lesion": P}),
    ("Mild interstitial edema, possibly fluid overload; no pneumothorax.", {"Edema": P, "Pneumothorax": N}),
    ("Left basilar atelectasis. No pneumothorax.", {"Atelectasis": P, "Pneumothorax": N}),
    ("Findings: Lungs clear. Impression: No acute process.", {"Lung Opacity": N, "No Finding": P}),
    ("RLL opacity. R PTX. ETT in place.",
     {"right_lower_opacity": P, "pneumothorax": P, "Pneumothorax": P, "support_devices": P}),
    ("Opacity in the left upper zone and right pleural effusion.",
     {"left_upper_opacity": P, "right_pleural_effusion": P, "right_upper_opacity": None, "left_pleural_effusion": None}),
    # Chinese
    ("未见胸腔积液及气胸。", {"Pleural Effusion": N, "Pneumothorax": N, "pneumothorax": N}),
    ("右下肺野斑片影，肺炎可能。", {"right_lower_opacity": P, "Pneumonia": U}),
    ("不除外左侧少量胸腔积液。", {"left_pleural_effusion": U, "right_pleural_effusion": None}),
    ("心影增大，双侧胸腔积液。", {"Cardiomegaly": P, "left_pleural_effusion": P, "right_pleural_effusion": P}),
    ("心脏不大，两肺纹理清晰。", {"Cardiomegaly": N, "Lung Opacity": N, "right_upper_opacity": N}),
    ("气胸已吸收。", {"Pneumothorax": N}),
    ("右上肺野不规则斑片影。", {"right_upper_opacity": P, "Lung Opacity": P}),
    ("左下肺野未见实变，右侧无气胸。", {"left_lower_opacity": N, "left_upper_opacity": None, "Pneumothorax": N}),
    ("考虑右上肺炎。", {"Pneumonia": U}),
]


@pytest.mark.parametrize("text,expected", TRICKY, ids=[t for t, _ in TRICKY])
def test_tricky_sentences(text, expected):
    got = label_report(text)
    assert {k: got[k] for k in expected} == expected


def test_output_keys_and_language_check():
    got = label_report("")
    assert tuple(got) == ALL_FINDINGS and len(CHEXPERT_FINDINGS) == 14
    assert got["No Finding"] == P and all(v is None for k, v in got.items() if k != "No Finding")
    with pytest.raises(ValueError, match="language"):
        label_report("text", language="fr")


def test_mentions_carry_side_zone_and_span():
    (m,) = [m for m in find_mentions("There is an opacity in the left upper zone.") if m.finding == "Lung Opacity"]
    assert (m.status, m.sides, m.zones, m.text) == (P, frozenset({"left"}), frozenset({"upper"}), "opacity")
