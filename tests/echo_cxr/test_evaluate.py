"""ECHO evaluation wiring: the five demo variants on synthetic CXR samples through the ECHO
processor and a tiny Qwen2.5-VL; the demo's row schema; clinical F1 via the labeler."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from blockdistill import BlockDiffusionLM
from blockdistill.metrics import BLEU, ROUGEL, CIDErD
from examples.echo_cxr.clinical_f1 import clinical_f1
from examples.echo_cxr.data.dataset import SyntheticCXRDataset
from examples.echo_cxr.data.processor import CXRProcessor, VisionSettings, format_report
from examples.echo_cxr.data.tokenizer import special_token_ids, tiny_tokenizer
from examples.echo_cxr.evaluate import (
    ROW_KEYS,
    VARIANTS,
    ClinicalScorer,
    echo_variants,
    main,
    run_echo_eval,
)
from examples.echo_cxr.labeler import CHEXPERT_FINDINGS, label_report

MAX_NEW = 16


def _tiny_vl(tok, seed: int, vocab: int | None = None) -> Qwen2_5_VLForConditionalGeneration:
    ids = special_token_ids(tok)
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=vocab or len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         initializer_range=0.1,
                         rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
                         **ids.text_config_kwargs()),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=8,
                           temporal_patch_size=2, spatial_merge_size=2, out_hidden_size=64, window_size=32,
                           fullatt_block_indexes=[0], initializer_range=0.1),
        tie_word_embeddings=False, initializer_range=0.1, **ids.config_kwargs())
    torch.manual_seed(seed)
    return Qwen2_5_VLForConditionalGeneration(cfg).eval()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tok = tiny_tokenizer(tmp_path_factory.mktemp("tok"), n_reports=150)
    base = BlockDiffusionLM.from_causal_lm(_tiny_vl(tok, 0), tok, block_size=8)
    echo = BlockDiffusionLM(_tiny_vl(tok, 1, vocab=len(tok)), base.spec)  # tok already holds [MASK]
    models = {"ar": base, "base_L4": BlockDiffusionLM(base.model, replace(base.spec, block_size=4)),
              "base_L8": base, "echo_L8": echo}
    data = SyntheticCXRDataset(2, CXRProcessor(tok, VisionSettings.tiny(64, patch_size=8)), seed=0,
                               languages=("en", "zh"))
    return tok, models, data


class _ReportDecoder:
    """Stands in for a trained model's output: decodes any ids to a real English report, so the
    clinical scores of the English rows are not all zero."""

    REPORT = "Cardiomegaly. Left pleural effusion. No pneumothorax."

    def decode(self, ids, skip_special_tokens=True):
        return self.REPORT


@pytest.fixture(scope="module")
def results(setup, tmp_path_factory):
    tok, models, data = setup
    variants = echo_variants(models, max_new_tokens=MAX_NEW)
    variants[-1].tokenizer = _ReportDecoder()
    out = tmp_path_factory.mktemp("eval")
    res = run_echo_eval(variants, data, tok, out_dir=out, semscore=True, batch_size=2, progress=False)
    return res, out


def test_rows_have_the_demo_schema(results):
    res, out = results
    assert [(r["variant"], r["lang"]) for r in res["rows"]] == [(v, lang) for v in VARIANTS for lang in ("en", "zh")]
    for r in res["rows"]:
        assert tuple(r) == ROW_KEYS
        assert r["n"] == 2 and isinstance(r["semscore"], float)
        assert all(isinstance(r[k], float) for k in ROW_KEYS if k not in ("variant", "lang", "n"))
    assert res["by_source"] == []  # one source: the language rows already are the source rows
    saved = json.loads((out / "results.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(res["rows"]))
    md = (out / "results.md").read_text()
    assert "| " + " | ".join(ROW_KEYS) + " |" in md and md.count("\n| echo_onestep_L8 |") == 2
    assert "## Samples" in md


def test_scores_equal_the_metric_classes_and_the_labeler(results, setup):
    """Each row's text and clinical scores equal those computed directly from its decoded texts."""
    res, _ = results
    rows = {(r["variant"], r["lang"]): r for r in res["rows"]}
    details = {(r["variant"], r["lang"]): r for r in res["details"]}
    nonzero = 0
    for v, preds in res["predictions"].items():
        for lang in ("en", "zh"):
            ps = [p for p in preds if p["lang"] == lang]
            texts, refs = [p["prediction"] for p in ps], [p["references"] for p in ps]
            row = rows[(v, lang)]
            bleu, rouge, cider = BLEU(lang=lang), ROUGEL(lang=lang), CIDErD(lang=lang)
            for m in (bleu, rouge, cider):
                m.update(texts, refs)
            assert (row["bleu4"], row["rouge_l"], row["cider_d"]) == (
                float(bleu.compute()["bleu_4"]), float(rouge.compute()), float(cider.compute()))
            pl = [label_report(t, lang) for t in texts]
            rl = [label_report(r[0], lang) for r in refs]
            observed = [f for f in CHEXPERT_FINDINGS if any(d[f] == 1 for d in pl + rl)]
            direct = clinical_f1(pl, rl, observed)
            assert row["clinical_micro_f1"] == direct.micro.f1
            assert row["clinical_macro_f1"] == direct.macro.f1
            assert res["per_finding"][v][lang] == {f: s.f1 for f, s in direct.per_finding.items()}
            assert details[(v, lang)]["clinical_micro_precision"] == direct.micro.precision
            nonzero += row["clinical_micro_f1"] > 0
    assert nonzero >= 1  # the stand-in reports make the clinical check non-trivial


def test_samples_show_reports_next_to_the_truth(results, setup):
    _, _, data = setup
    res, _ = results
    samples = res["samples"]
    assert [(s["index"], s["lang"]) for s in samples] == [(0, "en"), (2, "en"), (1, "zh"), (3, "zh")]
    study = data.sample(0)
    assert samples[0]["reference"] == format_report(study.findings["en"], study.impression["en"], "en")
    assert set(samples[0]["predictions"]) == set(VARIANTS)
    assert samples[0]["predictions"]["echo_onestep_L8"] == _ReportDecoder.REPORT
    texts = {s["predictions"]["base_onestep_L8"] for s in samples}
    assert len(texts) > 1  # a degenerate random model would decode every study to the same text


def test_forced_one_step_tpf_matches_the_block_count(setup):
    """Forced generation: each row takes ceil((prompt tail + max_new) / L) one-step forwards, so
    the row's TPF is exactly what the block grid predicts (L on full blocks)."""
    tok, models, data = setup
    variants = echo_variants(models, include=("base_onestep_L8", "base_multistep_L4"), max_new_tokens=MAX_NEW,
                             stop_at_eos=False)
    res = run_echo_eval(variants, data, tok, semscore=False, batch_size=2, progress=False)
    for lang, items in (("en", [0, 2]), ("zh", [1, 3])):
        tails = [len(data[i]["prompt_ids"]) % 8 for i in items]
        blocks = sum(-(-(t + MAX_NEW) // 8) for t in tails)
        row = next(r for r in res["rows"] if r["variant"] == "base_onestep_L8" and r["lang"] == lang)
        assert row["tpf"] == MAX_NEW * len(items) / blocks
        assert row["nfe"] == blocks / len(items)
        multi = next(r for r in res["rows"] if r["variant"] == "base_multistep_L4" and r["lang"] == lang)
        assert multi["nfe"] >= blocks / len(items) and multi["tpf"] <= 4


def test_clinical_scorer_by_hand():
    """Cardiomegaly: TP (en), FP (zh); effusion: FN (en says none), TP (zh). Macro over the two
    observed findings; per finding F1 = 2/3 each."""
    preds = ["Cardiomegaly. No pleural effusion.", "心影增大。右侧胸腔积液。"]
    refs = [["Cardiomegaly. Right pleural effusion."], ["心影正常。右侧胸腔积液。"]]
    metas = [{"language": "en"}, {"language": "zh"}]
    out = ClinicalScorer()(preds, refs, metas)
    assert out["clinical_micro_f1"] == pytest.approx(2 / 3) and out["clinical_macro_f1"] == pytest.approx(2 / 3)
    assert out["clinical_macro_precision"] == pytest.approx(0.75)
    assert {k for k in out if "/" in k} == {"clinical_f1/Cardiomegaly", "clinical_f1/Pleural Effusion"}
    every = ClinicalScorer(observed_only=False)(preds, refs, metas)
    assert every["clinical_macro_f1"] == pytest.approx(4 / 3 / 14) and len([k for k in every if "/" in k]) == 14


def test_echo_variants_validate(setup):
    _, models, _ = setup
    vs = echo_variants(models, names={"echo_onestep_L8": "ECHO"}, include=("ar", "echo_onestep_L8"), tau=0.9)
    assert [v.name for v in vs] == ["ar", "ECHO"] and vs[0].sampler.kind == "ar"
    assert echo_variants(models, include=("base_multistep_L8",), tau=0.9)[0].sampler.policy_params == {"tau": 0.9}
    with pytest.raises(ValueError, match="block size 4"):
        echo_variants({**models, "base_L4": models["base_L8"]})
    with pytest.raises(ValueError, match="unknown ECHO variants"):
        echo_variants(models, include=("echo_L16",))
    with pytest.raises(KeyError, match="echo_L8"):
        echo_variants({k: v for k, v in models.items() if k != "echo_L8"})


def test_command_line_on_saved_models(setup, tmp_path):
    """The CLI loads saved block models and a plain AR checkpoint (no block rules) and writes results."""
    tok, models, _ = setup
    models["echo_L8"].save_pretrained(tmp_path / "echo", tokenizer=tok)
    _tiny_vl(tok, 2, vocab=len(tok)).save_pretrained(tmp_path / "ar")
    res = main(["--ar", str(tmp_path / "ar"), "--echo", str(tmp_path / "echo"), "--variants", "ar", "echo_onestep_L8",
                "--synthetic", "1", "--languages", "en", "--image-size", "64", "--no-semscore", "--warmup", "0",
                "--max-new-tokens", "8", "--out", str(tmp_path / "out")])
    assert [(r["variant"], r["lang"], r["n"], r["semscore"]) for r in res["rows"]] == [
        ("ar", "en", 1, None), ("echo_onestep_L8", "en", 1, None)]
    assert json.loads((tmp_path / "out" / "results.json").read_text())["rows"] == res["rows"]


def test_command_line_reads_and_writes_echo_records(setup, tmp_path):
    """ECHO-format JSON in (paths relative to the JSON file), ECHO records with the reports out."""
    from examples.echo_cxr.data.echo_json import read_echo_records
    from examples.echo_cxr.data.synthetic import generate_sample

    tok, models, _ = setup
    models["echo_L8"].save_pretrained(tmp_path / "echo", tokenizer=tok)
    (tmp_path / "imgs").mkdir()
    entries = []
    for k in range(2):
        s = generate_sample(k)
        s.to_pil().save(tmp_path / "imgs" / f"{k}.png")
        entries.append({"sample_id": f"id{k}", "images": [f"../imgs/{k}.png"],
                        "ground_truth": {"findings": s.findings["en"], "impression": s.impression["en"]}})
    (tmp_path / "jsons").mkdir()
    (tmp_path / "jsons" / "test.json").write_text(json.dumps(entries))
    res = main(["--echo", str(tmp_path / "echo"), "--variants", "echo_onestep_L8", "--records",
                str(tmp_path / "jsons" / "test.json"), "--languages", "en", "--image-size", "64", "--no-semscore",
                "--warmup", "0", "--max-new-tokens", "8", "--out", str(tmp_path / "out")])
    assert [(r["variant"], r["n"]) for r in res["rows"]] == [("echo_onestep_L8", 2)]
    out = tmp_path / "out" / "predictions" / "echo_onestep_L8.json"
    rows = json.loads(out.read_text())
    assert [r["sample_id"] for r in rows] == ["id0", "id1"]
    assert rows[0]["images"] == ["../../imgs/0.png"] and rows[0]["ground_truth"] == entries[0]["ground_truth"]
    preds = {p["index"]: p["prediction"] for p in res["predictions"]["echo_onestep_L8"]}
    assert [r["output"] for r in rows] == [preds[0], preds[1]]
    assert all({"findings", "impression", "output_tokens"} <= set(r) for r in rows)
    assert [r.study_id for r in read_echo_records(out)] == ["id0", "id1"]  # readable as input again
