"""The evaluation runner end to end on a tiny random text model: rows, files, metric and
statistic consistency against the metric classes and the samplers called directly."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import cache

import pytest
import torch

from blockdistill import BlockDiffusionLM
from blockdistill.evaluation import (
    SamplerConfig,
    TextMetrics,
    Variant,
    decode_ids,
    evaluate_variants,
    generate_split,
    metric_lang,
)
from blockdistill.metrics import BLEU, ROUGEL, CIDErD
from blockdistill.sampling import HFDenoiser, OneStep, block_generate
from blockdistill.testing import tiny_qwen2, tiny_tokenizer

L = 4
WORDS = 80  # ordinary tokens t0..t79 of tiny_tokenizer


@cache
def _model() -> tuple[BlockDiffusionLM, object]:
    tok = tiny_tokenizer()
    bd = BlockDiffusionLM.from_causal_lm(tiny_qwen2(), tok, block_size=L)
    bd.model.double()  # exact argmax decisions whatever the batch shape
    return bd, tok


def _examples(prompt_lens, langs, sources=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, (p, lang) in enumerate(zip(prompt_lens, langs)):
        ex = {"prompt_ids": torch.randint(0, WORDS, (p,), generator=g),
              "response_ids": torch.randint(0, WORDS, (6 + i % 3,), generator=g), "language": lang, "id": i}
        if sources is not None:
            ex["source"] = sources[i]
        out.append(ex)
    return out


SPLIT = _examples([5, 7, 9, 6, 8, 11, 4], ["en", "zh", "en", "zh", "en", "en", "zh"],
                  ["a", "a", "b", "a", "b", "a", "a"])


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    bd, tok = _model()
    variants = [Variant("ar", bd, SamplerConfig("ar", max_new_tokens=12)),
                Variant("multistep", bd, SamplerConfig("block", "threshold", {"tau": 0.5}, max_new_tokens=12)),
                Variant("onestep", bd, SamplerConfig("block", "one_step", max_new_tokens=12))]
    out = tmp_path_factory.mktemp("eval")
    rep = evaluate_variants(variants, SPLIT, tok, batch_size=2, progress=False, out_dir=out)
    return rep, out


def test_rows_and_files(report):
    """One row per (variant, language), plus per-source rows where a language mixes sources; the
    JSON holds exactly the returned rows and the markdown one line per row."""
    rep, out = report
    keys = [(r["variant"], r["lang"], r["source"], r["group"], r["n"]) for r in rep.rows]
    expected = []
    for v in ("ar", "multistep", "onestep"):
        expected += [(v, "en", "all", "lang", 4), (v, "en", "a", "lang/source", 2), (v, "en", "b", "lang/source", 2),
                     (v, "zh", "a", "lang", 3)]
    assert keys == expected
    for r in rep.rows:
        for k in ("bleu_1", "bleu_4", "rouge_l", "cider_d", "tpf", "tokens_per_s", "tokens_per_s_decode", "nfe",
                  "forwards_per_sample", "mean_length"):
            assert isinstance(r[k], float | int), k
        assert "semscore" not in r
    saved = json.loads((out / "results.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(rep.rows))
    assert [v["name"] for v in saved["variants"]] == ["ar", "multistep", "onestep"]
    for v, res in zip(saved["variants"], rep.results):
        assert v["stats"]["generated_tokens"] == sum(r["generated_tokens"] for r in res.rows if r["group"] == "lang")
        assert v["stats"]["tpf"] == res.stats.tpf and v["sampler"]["max_new_tokens"] == 12
    assert [len(saved["predictions"][v]) for v in ("ar", "multistep", "onestep")] == [7, 7, 7]
    md = (out / "results.md").read_text().splitlines()
    assert md[0].startswith("| variant | lang | source | n | bleu_1 |") and md[0].endswith("| mean_length |")
    assert len(md) == 2 + len(rep.rows)
    assert md[2].startswith("| ar | en | all | 4 |")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_predictions_are_what_the_sampler_returns_for_each_example_alone(report):
    """Batching, per-group bucketing and reordering must not change any prediction, and the
    references are the decoded response ids."""
    rep, _ = report
    bd, tok = _model()
    preds = rep.result("onestep").predictions
    assert [p.index for p in preds] == list(range(len(SPLIT)))
    texts = set()
    for ex, p in zip(SPLIT, preds):
        out = block_generate(HFDenoiser(bd), ex["prompt_ids"][None], torch.tensor([len(ex["prompt_ids"])]),
                             policy=OneStep(), max_new_tokens=12)
        seq = out.sequences[0]
        assert p.prediction == decode_ids(seq, tok, eos_id=bd.spec.eos_token_id, drop_ids={bd.spec.pad_token_id})
        assert p.length == seq.shape[0]
        assert p.references == [tok.decode(ex["response_ids"].tolist(), skip_special_tokens=True)]
        assert (p.lang, p.source, p.meta["id"]) == (ex["language"], ex["source"], ex["id"])
        texts.add(p.prediction)
    assert len(texts) == len(SPLIT)  # a degenerate (copying) model would make this test vacuous


def test_row_metrics_equal_the_metric_classes_on_the_same_texts(report):
    rep, _ = report
    checked = 0
    for res in rep.results:
        for row in res.rows:
            ps = [p for p in res.predictions if p.lang == row["lang"]
                  and (row["group"] == "lang" or p.source == row["source"])]
            preds, refs = [p.prediction for p in ps], [p.references for p in ps]
            lang = metric_lang(row["lang"])
            bleu, rouge, cider = BLEU(lang=lang), ROUGEL(lang=lang), CIDErD(lang=lang)
            for m in (bleu, rouge, cider):
                m.update(preds, refs)
            assert row["n"] == len(ps)
            assert {k: row[k] for k in ("bleu_1", "bleu_2", "bleu_3", "bleu_4")} == \
                {k: float(v) for k, v in bleu.compute().items()}
            assert row["rouge_l"] == float(rouge.compute())
            assert row["cider_d"] == float(cider.compute())
            checked += 1
    assert checked == len(rep.rows)
    assert any(r["rouge_l"] > 0 for r in rep.rows)


def test_row_stats_are_sums_over_the_groups_batches(report):
    """Batches never mix groups, so a language row's sums are its sources' sums; with batch 2,
    source a of English (2 examples) is one call, and each row's derived rates are its own sums' ratios."""
    rep, _ = report
    for res in rep.results:
        rows = {(r["lang"], r["source"]): r for r in res.rows}
        en, a, b = rows[("en", "all")], rows[("en", "a")], rows[("en", "b")]
        for k in ("nfe", "row_forwards", "generated_tokens", "calls"):
            assert en[k] == a[k] + b[k], k
        assert en["wall_s"] == pytest.approx(a["wall_s"] + b["wall_s"])
        assert (a["calls"], b["calls"], rows[("zh", "a")]["calls"]) == (1, 1, 2)
        for r in res.rows:
            assert r["tpf"] == r["generated_tokens"] / r["row_forwards"]
            assert r["tokens_per_s"] == r["generated_tokens"] / r["wall_s"]
            assert r["forwards_per_sample"] == r["row_forwards"] / r["n"]
            assert r["mean_length"] == r["generated_tokens"] / r["n"]
        assert res.stats.n == len(SPLIT) and res.stats.calls == 4
        assert res.stats.generated_tokens == sum(p.length for p in res.predictions)


@pytest.mark.parametrize("sampler, per_call_nfe, tpf", [
    (SamplerConfig("block", "one_step", cache="fused", max_new_tokens=12, stop_at_eos=False), 1 + 3, 4.0),
    (SamplerConfig("block", "one_step", cache="block", max_new_tokens=12, stop_at_eos=False), 1 + 3 + 2, 12 / 5),
    (SamplerConfig("ar", max_new_tokens=12, stop_at_eos=False), 12, 12 / 11),
])
def test_forced_generation_stats(sampler, per_call_nfe, tpf):
    """With prompts on block boundaries and generation forced to whole blocks, one-step fused
    decoding makes exactly L tokens per forward (the paper's TPF = L); the unfused block cache
    spends one extra write per finished block; AR's first token comes from prefill."""
    bd, tok = _model()
    split = _examples([4, 8, 12], ["en"] * 3)
    out = generate_split(Variant("v", bd, sampler), split, tok, batch_size=2, progress=False)
    s = out.stats[("en", None)]
    assert s.lengths == [12, 12, 12] and s.calls == 2
    if sampler.cache == "fused":
        assert s.tpf == L  # exactly, not approximately
    assert s.tpf == pytest.approx(tpf)
    assert s.nfe == 2 * per_call_nfe
    assert s.forwards_per_sample == pytest.approx(12 / tpf)


def test_tokens_become_text_through_the_variants_own_tokenizer_and_zh_rows_use_zh_tokenization():
    """Chinese text is scored per character: with a tokenizer that spells every id as a CJK
    character (no spaces), the zh row's BLEU equals BLEU(lang="zh") and not the English number."""
    bd, tok = _model()

    class CJK:
        def decode(self, ids, skip_special_tokens=True):
            return "".join(chr(0x4E00 + i) for i in ids if i < WORDS)

    split = _examples([5, 6, 7, 9], ["zh"] * 4, seed=3)
    v = Variant("cjk", bd, SamplerConfig("block", "one_step", max_new_tokens=16), tokenizer=CJK())
    first = generate_split(v, split, tok, progress=False).predictions
    for ex, p in zip(split, first):  # references sharing some characters with the predictions
        ex["reference"] = p.prediction[::2] + CJK().decode(ex["response_ids"].tolist())
    rep = evaluate_variants([v], split, tok, progress=False)
    (row,) = rep.rows
    preds = [p.prediction for p in rep.result("cjk").predictions]
    assert preds == [p.prediction for p in first]
    assert all(p and " " not in p and all(0x4E00 <= ord(c) < 0x4E00 + WORDS for c in p) for p in preds)
    refs = [[ex["reference"]] for ex in split]
    zh, en = BLEU(lang="zh"), BLEU(lang="en")
    zh.update(preds, refs)
    en.update(preds, refs)
    assert row["bleu_1"] == float(zh.compute()["bleu_1"]) > 0.05
    assert float(en.compute()["bleu_1"]) < 1e-6


def test_semscore_switch_and_extra_scorers():
    bd, tok = _model()
    split = _examples([5, 6], ["en", "en"])
    seen = []

    def words(preds, refs, metas):
        seen.append([m["id"] for m in metas])
        return {"mean_words": sum(len(p.split()) for p in preds) / len(preds), "detail/x": 1.0}

    metrics = TextMetrics(semscore=True)
    rep = evaluate_variants([Variant("one", bd, SamplerConfig("block", "one_step", max_new_tokens=8))], split, tok,
                            metrics=metrics, scorers={"words": words}, progress=False)
    (row,) = rep.rows
    from blockdistill.metrics import SemScore

    sem = SemScore(encoder=metrics.encoder())
    preds = [p.prediction for p in rep.result("one").predictions]
    sem.update(preds, [p.references for p in rep.result("one").predictions])
    assert row["semscore"] == float(sem.compute())
    assert row["mean_words"] == sum(len(p.split()) for p in preds) / 2 and seen == [[0, 1]]
    assert "detail/x" in row and "detail/x" not in rep.markdown().splitlines()[0]
    assert "semscore" in rep.markdown().splitlines()[0]


def test_warmup_and_restores_training_mode():
    """Warm-up runs are not counted, and evaluating leaves the model in the mode it found."""
    bd, tok = _model()
    bd.train()
    try:
        split = _examples([5, 6, 7], ["en"] * 3)
        v = Variant("one", bd, SamplerConfig("block", "one_step", max_new_tokens=8))
        out = generate_split(v, split, tok, batch_size=2, warmup=2, progress=False)
        assert out.stats[("en", None)].calls == 2 and bd.training
    finally:
        bd.eval()


def test_runner_rejects_bad_inputs():
    bd, tok = _model()
    v = Variant("one", bd, SamplerConfig("block", "one_step", max_new_tokens=4))
    with pytest.raises(ValueError, match="unique"):
        evaluate_variants([v, v], SPLIT, tok, progress=False)
    with pytest.raises(TypeError, match="one-shot iterator"):
        evaluate_variants([v], iter(SPLIT), tok, progress=False)
    with pytest.raises(ValueError, match="empty"):
        evaluate_variants([v], [], tok, progress=False)
    with pytest.raises(ValueError, match="neither 'reference'"):
        evaluate_variants([v], [{"prompt_ids": [1, 2, 3]}], tok, progress=False)
    with pytest.raises(TypeError, match="BlockDiffusionLM"):
        Variant("raw", bd.model)
    # A reference text stands in for missing response ids; block size is the model's own.
    rep = evaluate_variants([v], [{"prompt_ids": [1, 2, 3], "reference": "t1 t2"}], tok, progress=False)
    assert rep.rows[0]["n"] == 1 and rep.rows[0]["block_size"] == L
    v8 = Variant("L8", BlockDiffusionLM(bd.model, replace(bd.spec, block_size=8)), v.sampler)
    assert v8.block_size == 8 and Variant("ar", bd, SamplerConfig("ar")).block_size is None


def test_generate_split_logs_progress_lines_without_a_terminal(capsys):
    """With ``progress=True`` and stderr not a terminal (as under pytest), the split logs its
    progress as lines that a log file keeps (the last one always: 3 of 3)."""
    import re

    bd, tok = _model()
    split = _examples([4, 8, 12], ["en"] * 3)
    generate_split(Variant("v", bd, SamplerConfig("ar", max_new_tokens=4)), split, tok, batch_size=2, progress=True)
    err = capsys.readouterr().err
    assert re.search(r"generate v: 3/3 ex", err), err
