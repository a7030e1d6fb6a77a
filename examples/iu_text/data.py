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
    data/{split}.rejects.jsonl  studies left out before training, each with its study id and reason
    data/summary.json           counts (rejects by kind), lengths, the labeler ceiling, the mapping's coverage

A curated study the stage cannot train on is left out before training, never met at a batch:
report text that is not valid UTF-8 (lone surrogates) or holds control characters, an empty
response after rendering (no findings and no impression), an empty prompt, a response longer
than ``data.max_response_tokens`` (train and dcd: the test split keeps long reports, generation
is capped), or an example longer than the backbone's context (``model.max_position_embeddings``
for the tiny model, the model folder's ``config.json`` otherwise; for the test split the prompt
alone). Each goes to ``data/<split>.rejects.jsonl`` and is counted in the summary.
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


def model_context(cfg: TextConfig) -> int | None:
    """The backbone's context length: ``model.max_position_embeddings`` for the tiny model, else
    its folder's ``config.json`` (None when it records none)."""
    if cfg.model.kind == "tiny":
        return cfg.model.max_position_embeddings
    from examples.iu_text.model import model_source

    value = json.loads((model_source(cfg.model) / "config.json").read_text()).get("max_position_embeddings")
    return int(value) if value else None


def _text_problem(record: Any) -> tuple[str, str] | None:
    """``(kind, reason)`` for report text no tokenizer should be given: lone surrogates (bytes
    that were not UTF-8, kept by ``errors="surrogateescape"``) or control characters other than
    tab and newline; None when the text is usable."""
    for part in ("findings", "impression"):
        text = getattr(record, part) or ""
        for i, ch in enumerate(text):
            if "\ud800" <= ch <= "\udfff":
                return "unusable_text", f"{part} is not valid UTF-8 (lone surrogate U+{ord(ch):04X} at character {i})"
            if (ord(ch) < 32 and ch not in "\t\n\r") or ord(ch) == 127:
                return "unusable_text", f"{part} holds control character U+{ord(ch):04X} at character {i}"
    return None


def render_split(tok: Any, records: list[Any], split: str, *, max_response_tokens: int | None,
                 context: int | None, block_size: int) -> tuple[list[dict[str, Any]], list[Any], dict[str, int]]:
    """The split's examples, the rejected studies (:class:`Rejected`, stage ``data``, reason
    ``study <key>: ...``) and the rejects counted by kind. ``max_response_tokens`` None: no cap;
    the context check pads to whole blocks of ``block_size`` (the run's largest)."""
    from collections import Counter

    from blockdistill.data.checks import example_problem
    from examples.echo_cxr.data.records import Rejected
    from examples.iu_text.prompts import build_sample

    kept, rejects, kinds = [], [], Counter()
    for r in records:
        problem = _text_problem(r)
        if problem is None:
            try:
                sample = build_sample(tok, r)
            except ValueError as e:  # a report with neither findings nor impression
                problem = "empty", f"empty response after rendering ({str(e).split(': ', 1)[-1]})"
            else:
                n = len(sample["response_ids"])
                if max_response_tokens is not None and n > max_response_tokens:
                    problem = "too_long", f"response of {n} tokens exceeds data.max_response_tokens ({max_response_tokens})"
                else:
                    check = sample if split != "test" else {**sample, "response_ids": [0]}  # test: the prompt must fit
                    why = example_problem(check, block_size=block_size, vocab_size=len(tok), context=context)
                    if why is not None:
                        problem = ("over_context" if "context" in why else "empty" if why.startswith("empty") else "bad_ids"), why
        if problem is None:
            kept.append(sample)
            continue
        kind, why = problem
        kinds[kind] += 1
        rejects.append(Rejected.of(r, "data", f"study {r.key}: {why}"))
    return kept, rejects, dict(sorted(kinds.items()))


def stage_data(cfg: TextConfig, ws: Workspace) -> dict[str, Any]:
    from examples.iu_text.mesh import coverage

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
    context = model_context(cfg)
    block = max([*cfg.rad.block_sizes, cfg.collect.block_size])
    for name, records in recs.items():
        # the test split keeps its long reports: they are scored too (generation is capped)
        limit = None if name == "test" else cfg.data.max_response_tokens
        kept, rejects, kinds = render_split(tok, records, name, max_response_tokens=limit, context=context,
                                            block_size=block)
        _write_jsonl(ws.data_dir / f"{name}.jsonl", kept)
        _write_jsonl(ws.data_dir / f"{name}.rejects.jsonl", [json.loads(j.to_json()) for j in rejects])
        summary[name] = {"studies": len(records), "kept": len(kept), "rejected": len(rejects),
                         "rejected_by_kind": kinds, "too_long": kinds.get("too_long", 0),
                         "rejects": str(ws.data_dir / f"{name}.rejects.jsonl"),
                         "prompt_tokens": _lengths(kept, "prompt_ids"), "response_tokens": _lengths(kept, "response_ids")}
    summary["labeler_ceiling"] = labeler_ceilings(ws, recs["test"])
    summary["mesh_coverage"] = coverage(r.metadata.get("mesh_major") or [] for r in recs["train"] + recs["test"])
    write_json(ws.data_dir / "summary.json", summary)
    return {k: summary[k]["kept"] for k in SPLITS} | {
        "ceiling_test_macro_f1": summary["labeler_ceiling"]["test"]["macro"]["f1"]}
