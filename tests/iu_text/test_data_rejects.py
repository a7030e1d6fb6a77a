"""The iu_text data stage drops the studies it cannot train on before training (issue 19, point 5).

Real IU-Xray studies (the bundled archive's first reports) plus injected bad ones: a report whose
bytes are not UTF-8 and reports far longer than ``data.max_response_tokens`` go through the real
data stage with the tiny stand-in config; curated records made unusable (no findings and no
impression, lone surrogates, a NUL, an example over the context, an id outside the vocabulary)
go through its per-split rendering. Each is left out with its study id and the reason, in
``data/<split>.rejects.jsonl``, and counted in ``data/summary.json``.

Run: OMP_NUM_THREADS=1 PYTHONPATH=src:. .venv/bin/python -m pytest tests/iu_text/test_data_rejects.py -q
"""

import json
import random
import shutil
from dataclasses import replace
from pathlib import Path

from blockdistill.layout import clean_length
from examples.echo_cxr.data.readers.iu_xray import IUXrayReader
from examples.echo_cxr.data.records import Rejected
from examples.iu_text.config import load_text_config
from examples.iu_text.data import render_split
from examples.iu_text.pipeline import run
from examples.iu_text.prompts import build_sample

CFG = [Path("examples/iu_text/configs/cpu"), Path("examples/iu_text/configs/tiny")]
WORDS = ("opacity nodule effusion pleural hilar apical basilar lobe granuloma calcified interstitial "
         "markings vascular congestion atelectasis scarring thickening fissure costophrenic angle blunting "
         "mediastinal contour aortic tortuous spine degenerative osteophytes clavicle fracture healed rib "
         "diaphragm elevated hemidiaphragm cardiac silhouette enlarged borderline lucency hyperinflation").split()

XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation><meta type="rr"/><uId id="{uid}"/><MedlineCitation><Article><Abstract>
<AbstractText Label="FINDINGS">{findings}</AbstractText>
<AbstractText Label="IMPRESSION">{impression}</AbstractText>
</Abstract></Article></MedlineCitation><MeSH><major>normal</major></MeSH></eCitation>
"""


def long_report(seed: int, n_sentences: int = 90) -> str:
    rng = random.Random(seed)
    return " ".join(" ".join(rng.choice(WORDS) for _ in range(6)).capitalize() + "." for _ in range(n_sentences))


def test_the_data_stage_drops_bad_studies_into_the_rejects_file(few_reports, tmp_path) -> None:
    reports = tmp_path / "reports"
    shutil.copytree(few_reports, reports)
    (reports / "9001.xml").write_bytes(XML.format(uid="CXR9001", findings="Heart normal.", impression="Clear.")
                                       .encode().replace(b"Heart", b"He\xffart"))
    for i in (9002, 9003, 9004):
        (reports / f"{i}.xml").write_text(XML.format(uid=f"CXR{i}", findings=long_report(i), impression="Abnormal."))
    cfg = load_text_config(CFG, [f"run_dir={tmp_path / 'run'}", f"data.reports={reports}"])
    run(cfg, stages=["data"], log=lambda _: None)
    data = tmp_path / "run" / "data"
    summary = json.loads((data / "summary.json").read_text())

    # non-UTF-8: the curation's reader rejects it (counted in the summary's curation rows)
    curated_rejects = [Rejected.from_json(x) for x in (tmp_path / "run" / "curate" / "rejects.jsonl").read_text().splitlines()]
    assert [r.key for r in curated_rejects if "not valid UTF-8" in r.reason] == ["iu_xray/CXR9001"]
    assert {s["stage"]: s for s in summary["curation"]}["read"]["rejected"] == sum(r.stage == "read" for r in curated_rejects)

    from blockdistill.models.backbones import load_tokenizer
    from examples.echo_cxr.data.dataset import read_records
    from examples.iu_text.prompts import response_text

    tok = load_tokenizer(tmp_path / "run" / "tokenizer")
    long_ids = {"CXR9002", "CXR9003", "CXR9004"}
    dropped, seen = set(), set()
    for split, file in (("train", "train.jsonl"), ("test", "eval_en.jsonl"), ("dcd", "dcd.jsonl")):
        records = read_records(tmp_path / "run" / "curate" / "splits" / file)
        n_tokens = {r.study_id: len(tok(response_text(r.findings, r.impression), add_special_tokens=False)["input_ids"])
                    for r in records}
        expected = set() if split == "test" else {k for k, n in n_tokens.items() if n > 320}
        rejects = [Rejected.from_json(x) for x in (data / f"{split}.rejects.jsonl").read_text().splitlines()]
        kept = {json.loads(x)["study_id"] for x in (data / f"{split}.jsonl").read_text().splitlines()}
        assert {r.key.split("/", 1)[1] for r in rejects} == expected and kept == set(n_tokens) - expected
        s = summary[split]
        assert (s["studies"], s["kept"], s["rejected"]) == (len(records), len(kept), len(rejects))
        assert s["rejected_by_kind"] == ({"too_long": len(rejects)} if rejects else {}) and s["too_long"] == len(rejects)
        for r in rejects:
            n = n_tokens[r.key.split("/", 1)[1]]
            assert r.stage == "data" and r.reason == f"study {r.key}: response of {n} tokens exceeds data.max_response_tokens (320)"
        dropped |= expected & long_ids
        seen |= set(n_tokens)
        if split == "test":  # the test split keeps long reports (scored; generation is capped)
            assert long_ids & set(n_tokens) <= kept
    assert long_ids <= seen, "the long reports reach the data stage"
    assert dropped, "an injected long report landed in a training split and was dropped"


def test_unusable_records_are_rejected_with_their_reason(few_reports, tiny_tok) -> None:
    real = list(IUXrayReader(few_reports).read(lambda r: None))[:6]
    good = [build_sample(tiny_tok, r) for r in real]
    context = max(int(clean_length(len(s["prompt_ids"]), len(s["response_ids"]), 8)) for s in good)
    base = real[0]
    bad = {
        "empty": replace(base, study_id="E1", findings="", impression="  "),
        "surrogate": replace(base, study_id="E2", findings=base.findings + " Heart \udcff normal."),
        "nul": replace(base, study_id="E3", impression="Clear\x00."),
        "over_context": replace(base, study_id="E4", findings=" ".join([base.findings] * 40)),
    }
    kept, rejects, kinds = render_split(tiny_tok, real + list(bad.values()), "train", max_response_tokens=None,
                                        context=context, block_size=8)
    assert [s["study_id"] for s in kept] == [r.study_id for r in real]  # every real study is kept, as built
    assert [s["response_ids"] for s in kept] == [s["response_ids"] for s in good]
    reasons = {r.key.split("/", 1)[1]: r.reason for r in rejects}
    assert list(reasons) == ["E1", "E2", "E3", "E4"] and all(r.stage == "data" for r in rejects)
    assert reasons["E1"] == f"study {bad['empty'].key}: empty response after rendering (a report needs findings or an impression)"
    assert reasons["E2"].endswith("findings is not valid UTF-8 (lone surrogate U+DCFF at character "
                                  f"{len(base.findings) + 7})")
    assert reasons["E3"].endswith("impression holds control character U+0000 at character 5")
    assert f"exceed the backbone's context ({context})" in reasons["E4"]
    assert kinds == {"empty": 1, "over_context": 1, "unusable_text": 2}

    # the test split checks only that the prompt fits; a capped response length applies to train/dcd
    kept, rejects, kinds = render_split(tiny_tok, [bad["over_context"]], "test", max_response_tokens=None,
                                        context=context, block_size=8)
    assert len(kept) == 1 and not rejects
    n = len(build_sample(tiny_tok, bad["over_context"])["response_ids"])
    _, rejects, kinds = render_split(tiny_tok, [bad["over_context"]], "train", max_response_tokens=n - 1,
                                     context=None, block_size=8)
    assert kinds == {"too_long": 1} and rejects[0].reason.endswith(f"response of {n} tokens exceeds data.max_response_tokens ({n - 1})")
    _, rejects, kinds = render_split(tiny_tok, real[:1], "train", max_response_tokens=None, context=None, block_size=8)
    assert not rejects
    small_vocab = type("Tok", (), {"__len__": lambda self: 5, "__call__": tiny_tok.__call__,
                                   "apply_chat_template": tiny_tok.apply_chat_template,
                                   "chat_template": tiny_tok.chat_template})()
    _, rejects, kinds = render_split(small_vocab, real[:1], "train", max_response_tokens=None, context=None, block_size=8)
    assert kinds == {"bad_ids": 1} and "outside the model's vocabulary [0, 5)" in rejects[0].reason
