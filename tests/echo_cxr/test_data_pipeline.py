"""The whole curation pipeline on every fixture: nothing is lost, runs resume, splits are fair.

All four real-format readers feed stages 1-5 (translation through a loopback LLM server);
every input study must end in the curated output or in a reject with a reason.

Run: OMP_NUM_THREADS=1 PYTHONPATH=src:. .venv/bin/python -m pytest tests/echo_cxr/test_data_pipeline.py -q
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from examples.echo_cxr.data.curation import (
    AccountingError,
    BilingualAugment,
    HashingEmbedder,
    JsonlRecords,
    ModalityFilter,
    Pipeline,
    RuleStandardizer,
    SemanticDedup,
    SplitAssigner,
    write_splits,
)
from examples.echo_cxr.data.llm_client import ChatClient
from examples.echo_cxr.data.readers import (
    CheXpertPlusReader,
    IUXrayReader,
    MimicCXRReader,
    ReXGradientReader,
)
from examples.echo_cxr.data.records import CXRRecord, Rejected, RejectSink
from tests.echo_cxr.fixtures.chat_server import ChatServer, Reply, scripted

FIX = Path(__file__).resolve().parent / "fixtures"
ZH = json.dumps({"findings": "心影大小正常。无胸腔积液。", "impression": "未见急性心肺异常。"}, ensure_ascii=False)
STUDIES_IN_FIXTURES = 8 + 7 + 7 + 6  # mimic, chexpert, rexgradient, iu


def readers() -> list:
    return [
        MimicCXRReader(FIX / "mimic_cxr"),
        CheXpertPlusReader(FIX / "chexpert_plus"),
        ReXGradientReader(FIX / "rexgradient", "metadata/test_metadata.json"),
        IUXrayReader(FIX / "iu_xray" / "ecgen-radiology", FIX / "iu_xray" / "images"),
    ]


def stages(url: str, threshold: float = 0.95) -> list:
    client = ChatClient(url, "test-model", timeout_s=5, max_retries=0)
    return [
        ModalityFilter(),
        RuleStandardizer(),
        SemanticDedup(HashingEmbedder(), threshold=threshold, block_size=4),
        BilingualAugment(client, fraction=0.5, seed=1),
        SplitAssigner(dcd_size=4, eval_sizes={"en": 3, "zh": 3}, strict=False, seed=0),
    ]


def test_count_in_equals_out_plus_rejected(tmp_path: Path) -> None:
    """Guards against silent loss: every study of every fixture is accounted for, end to end."""
    with ChatServer(scripted([Reply(content=ZH)])) as srv:
        summary = Pipeline(stages(srv.url), tmp_path, progress=False).run(readers())
    curated = list(JsonlRecords(tmp_path / "curated.jsonl"))
    rejects = [Rejected.from_json(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert len(curated) + len(rejects) == STUDIES_IN_FIXTURES
    for step in summary["stages"]:
        assert step["in"] == step["out"] + step["rejected"], step
        for source, counts in step["by_source"].items():
            assert counts["in"] == counts["out"] + counts["rejected"], (step["stage"], source)
    assert summary["stages"][0]["in"] == STUDIES_IN_FIXTURES
    assert [s["stage"] for s in summary["stages"]] == ["read", "modality", "standardize", "dedup",
                                                       "translate", "splits"]
    reasons = Counter(r.stage for r in rejects)
    assert reasons["read"] == 16  # 4 broken studies per data set
    text = "\n".join(r.reason for r in rejects)
    for why in ("empty report", "not valid UTF-8", "missing image file", "corrupt image",
                "not a chest study", "no clinical content", "near-duplicate of mimic_cxr/s50000001"):
        assert why in text, why
    # Standardised (explicit negatives), bilingual, split-labelled.
    assert all(r.metadata["split"] in ("eval", "train") for r in curated)
    assert {r.language for r in curated} == {"en", "zh"}
    english = [r for r in curated if r.language == "en"]
    assert all(r.metadata["standardizer"] == "rules" for r in english)
    headerless = next(r for r in curated if r.study_id == "s50000003")
    assert headerless.metadata["sections_from"] == "heuristic" or headerless.language == "zh"
    counts = write_splits(tmp_path / "curated.jsonl", tmp_path / "splits")
    assert counts["train"]["total"] + sum(v["total"] for k, v in counts.items() if k.startswith("eval")) == len(curated)
    assert counts["dcd"]["total"] == 4


def test_resume_skips_finished_stages_and_reruns_changed_ones(tmp_path: Path) -> None:
    with ChatServer(scripted([Reply(content=ZH)])) as srv:
        Pipeline(stages(srv.url), tmp_path, progress=False).run(readers())
        calls = len(srv.requests)
        first = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "stages").glob("*.jsonl")}
        Pipeline(stages(srv.url), tmp_path, progress=False).run(readers())
        assert len(srv.requests) == calls, "a finished translation stage must not call the LLM again"
        same = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "stages").glob("*.jsonl")}
        assert same == first
        # A changed dedup threshold re-runs dedup and everything after it, not before.
        Pipeline(stages(srv.url, threshold=0.99), tmp_path, progress=False).run(readers())
    again = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "stages").glob("*.jsonl")}
    assert again["02_standardize.jsonl"] == first["02_standardize.jsonl"]
    assert again["03_dedup.jsonl"] != first["03_dedup.jsonl"]
    assert again["05_splits.jsonl"] != first["05_splits.jsonl"]


class Crashing:
    """A stage that dies after ``after`` records (a killed job)."""

    name = "crashing"

    def __init__(self, after: int) -> None:
        self.after = after

    def params(self) -> dict:
        return {}

    def process(self, records: Iterable[CXRRecord], reject: RejectSink) -> Iterator[CXRRecord]:
        for i, record in enumerate(records):
            if i == self.after:
                raise KeyboardInterrupt("killed")
            yield record


def test_crash_leaves_no_partial_output_and_resume_finishes(tmp_path: Path) -> None:
    """Guards against resuming from a half-written file: writes are temp-then-rename."""
    with pytest.raises(KeyboardInterrupt):
        Pipeline([ModalityFilter(), Crashing(after=3)], tmp_path, progress=False).run(readers())
    names = sorted(p.name for p in (tmp_path / "stages").iterdir())
    assert "01_modality.jsonl" in names and not any(n.startswith("02_crashing") for n in names)
    assert not any(".tmp-" in n for n in names)
    summary = Pipeline([ModalityFilter(), Crashing(after=10**6)], tmp_path, progress=False).run(readers())
    assert summary["stages"][-1]["out"] == summary["stages"][1]["out"]


class Losing:
    """A buggy stage that drops records without rejecting them."""

    name = "losing"

    def params(self) -> dict:
        return {}

    def process(self, records: Iterable[CXRRecord], reject: RejectSink) -> Iterator[CXRRecord]:
        yield from list(records)[1:]


def test_silent_loss_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(AccountingError, match="every record must end in the output or the rejects"):
        Pipeline([Losing()], tmp_path, progress=False).run(readers())
    assert not (tmp_path / "stages" / "01_losing.jsonl").exists()


def corpus() -> list[CXRRecord]:
    records = []
    for source, n in (("mimic_cxr", 300), ("chexpert_plus", 200), ("rexgradient", 100), ("iu_xray", 40)):
        for i in range(n):
            records.append(CXRRecord(f"{source[:3]}{i}", source, findings="x",
                                     language="zh" if i % 2 else "en"))
    return records


def test_splits_balanced_proportional_reproducible() -> None:
    assigner = SplitAssigner(dcd_size=200, eval_sizes={"en": 60, "zh": 60}, seed=3)
    out = list(assigner.process(corpus(), print))
    shuffled = corpus()
    random.Random(0).shuffle(shuffled)
    again = {r.key: (r.metadata["split"], r.metadata["dcd"]) for r in assigner.process(shuffled, print)}
    assert again == {r.key: (r.metadata["split"], r.metadata["dcd"]) for r in out}
    eval_counts = Counter((r.source, r.language) for r in out if r.metadata["split"] == "eval")
    assert eval_counts == {(s, lang): 20 for s in ("mimic_cxr", "chexpert_plus", "rexgradient")
                           for lang in ("en", "zh")}
    dcd = Counter(r.source for r in out if r.metadata["dcd"])
    assert not any(r.metadata["dcd"] and r.metadata["split"] == "eval" for r in out)
    train = Counter(r.source for r in out if r.metadata["split"] == "train")
    assert sum(dcd.values()) == 200
    for source, n in train.items():  # proportional to the training pool, to rounding
        assert abs(dcd[source] - 200 * n / sum(train.values())) <= 1
    other_seed = SplitAssigner(dcd_size=200, eval_sizes={"en": 60, "zh": 60}, seed=4)
    assert {r.key for r in other_seed.process(corpus(), print) if r.metadata["dcd"]} != {
        r.key for r in out if r.metadata["dcd"]}


def test_splits_fail_early_when_a_source_is_short() -> None:
    with pytest.raises(ValueError, match="needs 80 'en' records from 'rexgradient' but only 50"):
        list(SplitAssigner(dcd_size=0, eval_sizes={"en": 240}).process(corpus(), print))
