"""Clinical F1 against the codes and the labeler ceiling on hand-made cases (the repetition rate is the
library metric: tests/metrics/test_repetition.py)."""

import pytest

from examples.iu_text.scoring import (
    MeshClinicalScorer,
    labeler_ceiling,
    mesh_f1,
)


def test_ceiling_on_hand_written_reports():
    texts = ["Mild cardiomegaly. No pleural effusion.",            # Cardiomegaly TP
             "The heart is normal in size. Small left pleural effusion.",  # effusion FP (codes say normal)
             "Heart size normal. Lungs are clear."]                 # No Finding TP
    codes = [["Cardiomegaly/mild"], ["normal"], ["normal"]]
    s = labeler_ceiling(texts, codes)
    per = {k: v["f1"] for k, v in s["per_observation"].items()}
    # Cardiomegaly: tp 1 -> F1 1; No Finding: tp 1, fn 1 (study 2) -> 2/3; Pleural Effusion: fp 1 -> 0
    assert per == pytest.approx({"Cardiomegaly": 1.0, "No Finding": 2 / 3, "Pleural Effusion": 0.0})
    assert s["macro"]["f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    # micro: tp 2, fp 1, fn 1 -> P = R = 2/3
    assert s["micro"]["f1"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        labeler_ceiling(texts, codes[:2])


def test_scorer_matches_mesh_f1_and_needs_codes():
    preds = ["Mild cardiomegaly.", "Lungs are clear.", "a b c d a b c d"]
    metas = [{"mesh": ["Cardiomegaly/mild"]}, {"mesh": ["normal"]}, {"mesh": ["Pneumothorax/right"]}]
    out = MeshClinicalScorer()(preds, [[""]] * 3, metas)
    from examples.echo_cxr.labeler import label_report

    ref = mesh_f1([label_report(p, "en") for p in preds], [m["mesh"] for m in metas])
    assert out["clinical_macro_f1"] == pytest.approx(ref["macro"]["f1"])
    assert out["clinical_f1/Pneumothorax"] == 0.0  # coded, not said
    assert "repetition_rate" not in out  # the runner's TextMetrics reports it
    with pytest.raises(KeyError, match="mesh"):
        MeshClinicalScorer()(preds, [[""]] * 3, [{}, {}, {}])
