"""Where an ECHO run keeps things, and the shared loaders every stage uses.

Layout under ``run_dir``::

    data/train/records.jsonl, data/eval/records.jsonl   synthetic studies (PNG + CXRRecord JSONL)
    tokenizer/                                          the run's tokenizer
    ar/model, rad_L{L}/model, dcd_L{L}/model            save_pretrained checkpoints (+ tokenizer)
    <stage>/train/checkpoints/last.ckpt                 Lightning checkpoints (resume)
    traj_L{L}/                                          DCD trajectory shards + manifest
    eval/, results.json, report.md, plots/              evaluation and the report
    manifest.json                                       which stages finished, with what config
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from examples.echo_cxr.config import EchoConfig
from examples.echo_cxr.data.dataset import CXRRecordDataset, read_records
from examples.echo_cxr.data.processor import CXRProcessor, VisionSettings
from examples.echo_cxr.data.records import CXRRecord


def build_processor(cfg: EchoConfig, tokenizer: Any, vision_config: Any = None) -> CXRProcessor:
    """The processor a run's config asks for: prompt style, images per study, and pixel bounds (the tiny
    backbone's fixed size, or ``vision_config``'s patching with ``data.min_pixels`` / ``data.max_pixels``)."""
    m, d = cfg.model, cfg.data
    if m.kind == "tiny" and vision_config is None:
        vision = VisionSettings.tiny(d.image_size, m.patch_size)
    else:
        if vision_config is None:
            raise ValueError("a pretrained backbone's processor needs its vision_config (patch and merge sizes)")
        bounds = {k: getattr(d, k) for k in ("min_pixels", "max_pixels") if getattr(d, k) is not None}
        vision = VisionSettings.from_vision_config(vision_config, **bounds)
    return CXRProcessor(tokenizer, vision, max_images=d.max_images, style=d.prompt_style)


class CachedSamples(Dataset):
    """Processor samples of a list of records, processed once (images decoded once, not per epoch).

    A record whose image cannot be decoded (truncated, corrupt, empty) or whose sample has an
    empty prompt or response is dropped before training and listed in ``rejects`` (and in the
    ``rejects_path`` JSONL, written atomically) with its study id and the reason.
    """

    def __init__(self, records: list[CXRRecord], processor: CXRProcessor, image_root: str | None = None,
                 desc: str = "processing", rejects_path: Path | None = None) -> None:
        from tqdm.auto import tqdm

        from blockdistill.data.checks import example_problem
        from blockdistill.evaluation.report import atomic_write_text
        from examples.echo_cxr.data.processor import ImageDecodeError
        from examples.echo_cxr.data.records import Rejected

        self.records, self.samples, self.rejects = [], [], []
        for r in tqdm(records, desc=desc, leave=False):
            try:
                sample = processor.from_record(r, image_root)
                problem = example_problem(sample, block_size=1)
            except ImageDecodeError as err:
                problem = str(err)
            if problem is not None:
                self.rejects.append(Rejected.of(r, "data", problem if problem.startswith("study ")
                                                else f"study {r.key}: {problem}"))
                continue
            self.records.append(r)
            self.samples.append(sample)
        if rejects_path is not None:
            atomic_write_text(rejects_path, "".join(j.to_json() + "\n" for j in self.rejects))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.samples[i]


class RunPaths:
    """Where one run keeps its stages' outputs (``<run_dir>/<stage>/model``, ``.../train``,
    ``traj_L<L>``); shared by the ECHO and IU-Xray text examples."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.root = Path(cfg.run_dir)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def tokenizer_dir(self) -> Path:
        return self.root / "tokenizer"

    def model_dir(self, name: str) -> Path:
        """``ar``, ``rad_L8``, ``dcd_L8``, ... -> the saved model directory."""
        return self.root / name / "model"

    def train_dir(self, name: str) -> Path:
        return self.root / name / "train"

    def traj_dir(self, block_size: int) -> Path:
        return self.root / f"traj_L{block_size}"

    def finished(self, name: str) -> bool:
        """Whether the sub-stage ``name`` (``rad_L4``, one block size of a stage) saved its model
        and was marked done: a rerun of its stage keeps it."""
        return (self.model_dir(name) / "config.json").is_file() and (self.root / name / "DONE").is_file()

    def pending_sizes(self, stage: str, sizes: Iterable[int], out: dict[str, Any]) -> Iterator[tuple[int, str]]:
        """``(L, f"{stage}_L{L}")`` for each block size of ``stage`` still to run, in order; a
        :meth:`finished` one is recorded in ``out`` as ``"kept"`` and skipped."""
        for size in sizes:
            name = f"{stage}_L{size}"
            if self.finished(name):
                out[name] = "kept"
            else:
                yield size, name

    def mark_finished(self, name: str, summary: dict[str, Any]) -> None:
        """Mark ``name`` done (atomically) once its model is saved."""
        from examples.echo_cxr.data.curation.base import atomic_open

        with atomic_open(self.root / name / "DONE") as f:
            json.dump(summary, f)

    def stage_outputs(self, stage: str) -> list[Path]:
        """What a stage of the shared chain (``ar`` .. ``report``) writes, from the run's block
        sizes; the pipeline deletes these before a stage reruns from scratch."""
        c = self.cfg
        return {
            "ar": [self.root / "ar"],
            "rad": [self.root / f"rad_L{s}" for s in c.rad.block_sizes],
            "collect": [self.traj_dir(c.collect.block_size)],
            "dcd": [self.root / f"dcd_L{c.collect.block_size}"],
            "eval": [self.root / "eval", self.root / "results.json"],
            "report": [self.root / "report.md", self.root / "plots"],
        }[stage]


class Workspace(RunPaths):
    """Paths and cached loaders of one run."""

    cfg: EchoConfig

    # ------------------------------------------------------------------ tokenizer / processor
    def tokenizer(self, model: str | None = None):
        """A fresh tokenizer: the run's (no ``[MASK]``), or the one saved with model ``model``."""
        from blockdistill.models.backbones import load_tokenizer

        path = self.tokenizer_dir if model is None else self.model_dir(model)
        if not (path / "tokenizer_config.json").is_file():
            raise FileNotFoundError(f"{path} has no tokenizer; run the stage that writes it first")
        return load_tokenizer(path)

    @functools.cached_property
    def processor(self) -> CXRProcessor:
        vision_config = None
        if self.cfg.model.kind != "tiny":
            from transformers import AutoConfig

            vision_config = AutoConfig.from_pretrained(self.cfg.model.pretrained).vision_config
        return build_processor(self.cfg, self.tokenizer(), vision_config)

    # ------------------------------------------------------------------ records and samples
    def records(self, split: str) -> list[CXRRecord]:
        """``train`` (language mix per ``data.zh_fraction``), ``eval`` (en + zh), or ``dcd``."""
        d = self.cfg.data
        if d.source == "records":
            path = {"train": d.train_records, "eval": d.eval_records, "dcd": d.dcd_records or d.train_records}[split]
            return read_records(path)
        if split == "dcd":
            return self.records("train")[: self.cfg.collect.n_prompts]
        recs = read_records(self.data_dir / split / "records.jsonl")
        if split == "eval":
            en = [r for r in recs if r.language == "en"][: d.n_eval]
            zh = [r for r in recs if r.language == "zh"][: d.n_eval_zh]
            return en + zh
        # one language per training study: a seeded random zh_fraction of studies are Chinese
        by_study: dict[str, dict[str, CXRRecord]] = {}
        for r in recs:
            by_study.setdefault(r.study_id, {})[r.language] = r
        rng = random.Random(d.seed)
        return [langs["zh" if rng.random() < d.zh_fraction else "en"] for _, langs in sorted(by_study.items())]

    @functools.lru_cache(maxsize=4)  # noqa: B019 - one Workspace per run; caching the processed splits is the point
    def samples(self, split: str) -> Dataset:
        """Processor samples of a split: processed once and kept in memory (``data.cache_samples``,
        the tiny demo), or processed on access (real data: images are read by the data loader; a training
        study whose image fails to decode is skipped and listed in ``data/train.load-rejects.jsonl``)."""
        records = self.records(split)
        if self.cfg.data.cache_samples:
            return CachedSamples(records, self.processor, self.cfg.data.image_root, desc=f"{split} samples",
                                 rejects_path=self.data_dir / f"{split}.rejects.jsonl")
        # training skips (and lists) a study whose image was damaged after curation; evaluation and
        # collection index records and samples together, so there a damaged image still stops the stage
        rejects = self.data_dir / f"{split}.load-rejects.jsonl" if split == "train" else None
        return CXRRecordDataset(records, self.processor, self.cfg.data.image_root, rejects_path=rejects)
