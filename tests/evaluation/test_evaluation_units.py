"""Unit tests of the evaluation runner's parts: sampler configs, decoding, statistics, scoring, writing."""

from __future__ import annotations

import json
import os

import pytest
import torch

from blockdistill.evaluation import (
    RunStats,
    SamplerConfig,
    TextMetrics,
    atomic_write_text,
    decode_ids,
    default_columns,
    default_lang,
    default_source,
    markdown_table,
    metric_lang,
    score_group,
    write_json,
)
from blockdistill.metrics import BLEU, ROUGEL, CIDErD, RepetitionRate
from blockdistill.sampling import ConfidenceThreshold, FixedCount, GenerationStats, OneStep
from blockdistill.testing import tiny_tokenizer


# ------------------------------------------------------------------ SamplerConfig
def test_sampler_config_builds_the_named_policy():
    """A typo'd policy or parameter must fail at configuration time, not after hours of AR decoding."""
    assert SamplerConfig("block").build_policy() == ConfidenceThreshold(0.85)
    assert SamplerConfig("block", "threshold", {"tau": 0.5}).build_policy() == ConfidenceThreshold(0.5)
    assert SamplerConfig("block", "fixed", {"count": 2}).build_policy() == FixedCount(2)
    assert SamplerConfig("block", "one_step").build_policy() == OneStep()
    assert SamplerConfig("ar").build_policy() is None
    assert SamplerConfig("block").cache_mode == "fused" and SamplerConfig("ar").cache_mode is None
    assert SamplerConfig("block", "threshold", {"tau": 0.9}, "block").describe() == "block/threshold(tau=0.9)/block"
    assert SamplerConfig("ar").describe() == "ar"


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="diffusion"), "kind"),
    (dict(kind="ar", policy="one_step"), "no policy or cache"),
    (dict(kind="ar", cache="fused"), "no policy or cache"),
    (dict(kind="block", cache="paged"), "cache"),
    (dict(kind="block", policy="topk"), "unknown unmasking policy"),
    (dict(kind="block", policy="threshold", policy_params={"tau": 1.5}), "tau"),
    (dict(kind="block", max_new_tokens=0), "max_new_tokens"),
])
def test_sampler_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplerConfig(**kwargs)


def test_sampler_config_as_dict_is_json():
    d = SamplerConfig("block", "fixed", {"count": 2}, "none", 16, False).as_dict()
    assert json.loads(json.dumps(d)) == {"kind": "block", "policy": "fixed", "policy_params": {"count": 2},
                                         "cache": "none", "max_new_tokens": 16, "stop_at_eos": False}


# ------------------------------------------------------------------ decoding and groups
def test_decode_ids_cuts_at_eos_and_drops_pad_and_mask():
    """Text after EOS (block padding, a truncated block's tail) must never reach the metrics."""
    tok = tiny_tokenizer()
    eos = tok.eos_token_id
    ids = torch.tensor([3, 99, 5, 4, eos, 7, 8])
    assert decode_ids(ids, tok, eos_id=eos, drop_ids={99}) == "t3 t5 t4"
    assert decode_ids([1, 2], tok, eos_id=eos) == "t1 t2"
    assert decode_ids([eos, 1], tok, eos_id=eos) == ""
    special = tok.convert_tokens_to_ids("<|im_start|>")
    assert decode_ids([1, special, 2], tok, eos_id=eos) == "t1 t2"


def test_group_accessors():
    assert default_lang({"language": "zh"}) == "zh" and default_lang({"lang": "en"}) == "en"
    assert default_lang({}) == "en" and default_lang({"meta": {"language": "zh"}}) == "zh"
    assert default_source({"meta": {"source": "synthetic"}}) == "synthetic"
    assert default_source({"source": "iu_xray"}) == "iu_xray" and default_source({}) is None
    assert metric_lang("zh") == "zh" and metric_lang("zh-CN") == "zh" and metric_lang("en") == "en"


# ------------------------------------------------------------------ RunStats
def _gs(tokens, row_forwards, nfe, wall, prefill, lengths):
    return GenerationStats(nfe=nfe, nfe_decode=nfe - 1, row_forwards=row_forwards, generated_tokens=tokens,
                           lengths=lengths, wall_s=wall, prefill_s=prefill)


def test_run_stats_are_ratios_of_sums():
    """Throughput over a run is total tokens / total time, not the mean of per-batch rates (a
    slow small batch would otherwise weigh as much as a big fast one); TPF is weighted by forwards."""
    a, b = _gs(16, 4, 3, 1.0, 0.5, [8, 8]), _gs(3, 3, 4, 2.0, 0.25, [3])
    s = RunStats()
    s.add(a)
    s.add(b)
    assert (s.calls, s.nfe, s.nfe_decode, s.row_forwards, s.generated_tokens, s.n) == (2, 7, 5, 7, 19, 3)
    assert s.tpf == 19 / 7 != (a.tpf + b.tpf) / 2
    assert s.tokens_per_s == 19 / 3.0
    assert s.tokens_per_s_decode == 19 / 2.25
    assert s.forwards_per_sample == 7 / 3 and s.mean_length == 19 / 3
    one, two = RunStats(), RunStats()
    one.add(a)
    two.add(b)
    assert one.merge(two).summary() == s.summary()
    assert s.summary()["min_length"] == 3 and s.summary()["max_length"] == 8


# ------------------------------------------------------------------ scoring
PREDS = ["the heart is normal in size", "no pleural effusion", "small left effusion is seen"]
REFS = [["heart size is normal"], ["there is no pleural effusion or pneumothorax"], ["left pleural effusion"]]


def test_text_metrics_equal_the_metric_classes():
    got = TextMetrics()(PREDS, REFS, "en")
    bleu, rouge, cider, rep = BLEU(), ROUGEL(), CIDErD(), RepetitionRate(n=4)
    for m in (bleu, rouge, cider, rep):
        m.update(PREDS, REFS)
    assert got == {**{k: float(v) for k, v in bleu.compute().items()}, "rouge_l": float(rouge.compute()),
                   "cider_d": float(cider.compute()), "repetition_rate": float(rep.compute())}
    assert 0 < got["bleu_1"] < 1 and got["cider_d"] > 0


def test_chinese_groups_tokenize_per_character():
    """A Chinese row scored with English tokenization sees one 'word' per sentence and scores 0."""
    preds, refs = ["心影增大"], [["心影正常"]]
    zh, en = TextMetrics()(preds, refs, "zh"), TextMetrics()(preds, refs, "en")
    bleu = BLEU(lang="zh")
    bleu.update(preds, refs)
    assert zh["bleu_1"] == float(bleu.compute()["bleu_1"]) == pytest.approx(0.5)
    assert en["bleu_1"] == pytest.approx(0.0, abs=1e-6)


def test_score_group_runs_extra_scorers_and_refuses_clashes():
    def length(preds, refs, metas):
        assert len(preds) == len(refs) == len(metas) == 3
        return {"mean_words": sum(len(p.split()) for p in preds) / len(preds)}

    metas = [{"language": "en"}] * 3
    out = score_group(PREDS, REFS, metas, "en", TextMetrics(), {"len": length})
    assert out["mean_words"] == pytest.approx(14 / 3) and "rouge_l" in out
    with pytest.raises(ValueError, match="'bad' returned keys \\['rouge_l'\\]"):
        score_group(PREDS, REFS, metas, "en", TextMetrics(), {"bad": lambda p, r, m: {"rouge_l": 1.0}})


def test_text_metrics_validates():
    with pytest.raises(ValueError, match="bleu_n"):
        TextMetrics(bleu_n=0)


# ------------------------------------------------------------------ writing
def test_atomic_write_keeps_the_old_file_when_the_rename_fails(tmp_path, monkeypatch):
    """A crash mid-write must leave the previous results readable and no temp file behind."""
    path = tmp_path / "results.json"
    write_json(path, {"a": 1})

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, "{half")
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_markdown_table_columns_and_formatting():
    rows = [{"variant": "ar", "lang": "en", "source": None, "group": "lang", "n": 3, "bleu_4": 0.123456,
             "clinical_f1/Edema": 0.5, "tokens_per_s": 1234.56, "tpf": 1.0, "nfe": 10, "sampler": "ar"},
            {"variant": "one|step", "lang": "zh", "source": None, "group": "lang", "n": 2, "bleu_4": None,
             "tokens_per_s": 5.0, "tpf": 8.0}]
    cols = default_columns(rows)
    assert cols == ["variant", "lang", "n", "bleu_4", "tpf", "tokens_per_s"]
    md = markdown_table(rows).splitlines()
    assert md[0] == "| variant | lang | n | bleu_4 | tpf | tokens_per_s |"
    assert md[2] == "| ar | en | 3 | 0.1235 | 1.0000 | 1234.6 |"
    assert md[3] == "| one\\|step | zh | 2 | – | 8.0000 | 5.0000 |"
    assert markdown_table(rows, ["variant", "nfe"]).splitlines()[2] == "| ar | 10 |"
