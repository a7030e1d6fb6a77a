"""The data stage and the run's workspace.

``stage_data`` curates the real IU-Xray reports with the ECHO curation (modality filter, rule
standardiser, MiniLM semantic dedup, seeded splits: a held-out test split, the rest train with
a DCD subset), fixes the run's tokenizer (the backbone's own, or the tiny stand-in trained on
the training reports only), renders every study into a chat prompt plus target, and writes the
token files. It also computes the labeler's ceiling (the clinical F1 of the radiologists' own
text against their codes) on the test split, on all curated reports and on the raw reports.

Layout under ``run_dir``::

    curate/                     the curation's files (splits/train.jsonl, eval_en.jsonl, dcd.jsonl, ...)
    tokenizer/                  the run's tokenizer (no [MASK]; the adapter adds it)
    data/{train,test,dcd}.jsonl rendered examples: prompt_ids, response_ids, reference, mesh, key
    data/summary.json           counts, lengths, the labeler ceiling, the mapping's coverage
    ar/ rad_L{L}/ dcd_L{L}/     models (``model/``) and training runs (``train/``)
    traj_L{L}/                  teacher trajectories
    eval/ results.json report.md plots/
    manifest.json               finished stages, with their config fingerprints
"""

from __future__ import annotations

import functools
import json
import statistics
from pathlib import Path
from typing import Any

from blockdistill.evaluation import write_json
from examples.echo_cxr.workspace import RunPaths
from examples.iu_text.config import TextConfig

SPLITS = {"train": "train.jsonl", "test": "eval_en.jsonl", "dcd": "dcd.jsonl"}
"""Our split name -> the curation's split file."""


class Workspace(RunPaths):
    """Paths (the ECHO example's run layout, plus ``curate``) and loaders of one run."""

    cfg: TextConfig

    @property
    def curate_dir(self) -> Path:
        return self.root / "curate"

    def tokenizer(self, model: str | None = None) -> Any:
        """The run's tokenizer, or the one saved with model ``model`` (it carries ``[MASK]``)."""
        from blockdistill.models.backbones import load_tokenizer

        path = self.tokenizer_dir if model is None else self.model_dir(model)
        if not (path / "tokenizer_config.json").is_file():
            raise FileNotFoundError(f"{path} has no tokenizer; run the stage that writes it first")
        return load_tokenizer(path)

    @functools.lru_cache(maxsize=4)  # noqa: B019 - one Workspace per run
    def samples(self, split: str) -> list[dict[str, Any]]:
        """Rendered examples of ``train``, ``test`` or ``dcd``."""
        path = self.data_dir / f"{split}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; run the 'data' stage first")
        out = []
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not a JSON record ({e}); rerun the 'data' stage") from None
        return out


def _curate(cfg: TextConfig, ws: Workspace) -> dict[str, Any]:
    from examples.echo_cxr.data.curate_iu import main as curate_main

    d = cfg.data
    argv = ["--out", str(ws.curate_dir), "--embedder", d.embedder, "--threshold", str(d.dedup_threshold),
            "--eval-size", str(d.test_size), "--dcd-size", str(d.dcd_size), "--seed", str(cfg.seed), "--no-progress"]
    if d.reports:
        argv += ["--reports", d.reports]
    return curate_main(argv)


def _records(path: Path) -> list[Any]:
    from examples.echo_cxr.data.dataset import read_records

    return read_records(path) if path.is_file() else []


def _tokenizer(cfg: TextConfig, ws: Workspace, train: list[Any]) -> Any:
    from blockdistill.models.adapter import atomic_save_pretrained
    from examples.iu_text.model import load_base_tokenizer
    from examples.iu_text.prompts import messages, response_text, tiny_tokenizer

    if cfg.model.kind == "tiny":
        def corpus():
            for r in train:  # training reports only: the test split never shapes the vocabulary
                yield response_text(r.findings, r.impression)
                yield "\n".join(m["content"] for m in messages(r.metadata.get("mesh_major") or []))

        tok = tiny_tokenizer(corpus(), ws.root / ".tokenizer_cache", vocab_size=cfg.data.tokenizer_vocab)
    else:
        tok = load_base_tokenizer(cfg.model)
    atomic_save_pretrained(None, ws.tokenizer_dir, tokenizer=tok)
    return ws.tokenizer()


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    from examples.echo_cxr.data.curation.base import atomic_open

    with atomic_open(path) as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def _lengths(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    lens = [len(r[key]) for r in rows]
    return {"mean": statistics.fmean(lens), "max": max(lens), "median": statistics.median(lens)} if lens else {}


def labeler_ceilings(ws: Workspace, test: list[Any]) -> dict[str, Any]:
    """The labeler against the human codes on the radiologists' own text: the curated test split
    (the references every model is scored against), every curated report, and every raw report read."""
    from examples.iu_text.prompts import response_text
    from examples.iu_text.scoring import labeler_ceiling

    def of(records: list[Any]) -> dict[str, Any]:
        return labeler_ceiling([response_text(r.findings, r.impression) for r in records],
                               [r.metadata.get("mesh_major") or [] for r in records])

    return {"test": of(test), "curated": of(_records(ws.curate_dir / "curated.jsonl")),
            "raw": of(_records(ws.curate_dir / "stages" / "00_read.jsonl"))}


def stage_data(cfg: TextConfig, ws: Workspace) -> dict[str, Any]:
    from examples.iu_text.mesh import coverage
    from examples.iu_text.prompts import build_sample

    curation = _curate(cfg, ws)
    split_dir = ws.curate_dir / "splits"
    recs = {name: _records(split_dir / file) for name, file in SPLITS.items()}
    if not recs["test"] or not recs["train"]:
        raise RuntimeError(f"the curation left {len(recs['train'])} training and {len(recs['test'])} test studies "
                           f"in {split_dir}; both are needed")
    test_keys = {r.key for r in recs["test"]}
    leaked = [r.key for r in recs["train"] + recs["dcd"] if r.key in test_keys]
    if leaked:
        raise RuntimeError(f"test studies {leaked[:5]} are also in the training splits")
    if cfg.data.max_train:
        recs["train"] = recs["train"][: cfg.data.max_train]
    tok = _tokenizer(cfg, ws, recs["train"])
    summary: dict[str, Any] = {"curation": [{k: s[k] for k in ("stage", "in", "out", "rejected")}
                                            for s in curation.get("stages", [])]}
    for name, records in recs.items():
        # the test split keeps every study: its long reports are scored too (generation is capped)
        limit = None if name == "test" else cfg.data.max_response_tokens
        rows = [build_sample(tok, r, limit) for r in records]
        kept = [r for r in rows if r is not None]
        _write_jsonl(ws.data_dir / f"{name}.jsonl", kept)
        summary[name] = {"studies": len(records), "kept": len(kept), "too_long": len(rows) - len(kept),
                         "prompt_tokens": _lengths(kept, "prompt_ids"), "response_tokens": _lengths(kept, "response_ids")}
    summary["labeler_ceiling"] = labeler_ceilings(ws, recs["test"])
    summary["mesh_coverage"] = coverage(r.metadata.get("mesh_major") or [] for r in recs["train"] + recs["test"])
    write_json(ws.data_dir / "summary.json", summary)
    return {k: summary[k]["kept"] for k in SPLITS} | {
        "ceiling_test_macro_f1": summary["labeler_ceiling"]["test"]["macro"]["f1"]}
