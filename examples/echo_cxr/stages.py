"""The ECHO stages that build data and train models: data, curate, ar (stage 1), rad (stage 2).

Each stage is a function ``(cfg, ws) -> dict`` returning a small summary for the manifest. They
compose the library's parts (collator, Lightning systems, trainer builder) and the example's
data side; none re-implements them. Training resumes from ``<stage>/train/checkpoints/last.ckpt``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import lightning as L

from blockdistill.config import TrainerConfig
from blockdistill.lightning import BlockDataModule
from blockdistill.models.adapter import atomic_save_pretrained
from blockdistill.recipes import block_data, train_ar, train_rad, wrap_for_stage
from examples.echo_cxr.config import EchoConfig
from examples.echo_cxr.data.tokenizer import special_token_ids
from examples.echo_cxr.model import build_backbone, freeze_vision
from examples.echo_cxr.workspace import Workspace


def _trainer_cfg(t: TrainerConfig, ws: Workspace, name: str) -> TrainerConfig:
    """The stage's trainer settings, with checkpoints under ``<run_dir>/<name>/train``."""
    return replace(t, default_root_dir=str(ws.train_dir(name)), seed=ws.cfg.seed)


def stage_data(cfg: EchoConfig, ws: Workspace) -> dict[str, Any]:
    """Synthetic studies on disk (train and held-out eval, en + zh) and the run's tokenizer."""
    from examples.echo_cxr.data.dataset import write_synthetic_dataset
    from examples.echo_cxr.data.synthetic import SyntheticConfig
    from examples.echo_cxr.data.tokenizer import load_qwen_tokenizer, tiny_tokenizer

    d = cfg.data
    out: dict[str, Any] = {}
    if d.source == "synthetic":
        syn = SyntheticConfig(image_size=d.image_size)
        write_synthetic_dataset(ws.data_dir / "train", d.n_train, seed=d.seed, config=syn)
        write_synthetic_dataset(ws.data_dir / "eval", max(d.n_eval, d.n_eval_zh), seed=d.seed + 1, config=syn)
        out.update(n_train=d.n_train, n_eval=d.n_eval, n_eval_zh=d.n_eval_zh)
    if d.tokenizer is not None:
        tok = load_qwen_tokenizer(d.tokenizer)
    elif cfg.model.kind == "pretrained":
        tok = load_qwen_tokenizer(cfg.model.pretrained)
    else:
        tok = tiny_tokenizer(ws.root / ".tokenizer_cache", vocab_size=d.tokenizer_vocab)
    atomic_save_pretrained(None, ws.tokenizer_dir, tokenizer=tok)
    out["vocab"] = len(tok)
    return out


def stage_curate(cfg: EchoConfig, ws: Workspace) -> dict[str, Any]:
    """Offline curation (stages 1-3 and 5) of the real IU-Xray reports shipped by torchxrayvision."""
    from examples.echo_cxr.data.curate_iu import main as curate_main

    out = ws.root / "curate-iu"
    summary = curate_main(["--out", str(out), "--seed", str(cfg.seed)])
    return {"summary": str(out / "summary.json"), "stages": len(summary.get("stages", []))}


def _datamodule(ws: Workspace, block_size: int, eos: int, pad: int, batch_size: int) -> BlockDataModule:
    max_length = ws.cfg.model.max_position_embeddings if ws.cfg.model.kind == "tiny" else None
    return block_data(ws.samples("train"), block_size=block_size, eos_token_id=eos, pad_token_id=pad,
                      batch_size=batch_size, num_workers=ws.cfg.data.num_workers, max_length=max_length)


def csv_logger(tcfg: TrainerConfig):
    """The CSV log (``<train dir>/logs/version_0/metrics.csv``) that the report plots (appended by a resumed run)."""
    from blockdistill.lightning.logs import run_logger

    return run_logger(tcfg.default_root_dir)


def stage_ar(cfg: EchoConfig, ws: Workspace) -> dict[str, Any]:
    """Stage 1: AR continued pre-training -> ECHO_AR (``ar/model``)."""
    L.seed_everything(cfg.seed)
    tok = ws.tokenizer()
    ids = special_token_ids(tok)
    model = build_backbone(cfg.model, ids, len(tok), seed=cfg.seed)
    if cfg.ar.freeze_vision:
        freeze_vision(model)
    dm = _datamodule(ws, 1, ids.eos_token_id, ids.pad_token_id, cfg.ar.batch_size)
    tcfg = _trainer_cfg(cfg.ar.trainer, ws, "ar")
    res = train_ar(model, dm, optim=cfg.ar.optim, trainer=tcfg, out_dir=ws.model_dir("ar"), tokenizer=tok,
                   logger=csv_logger(tcfg))
    return {"wall_s": res.wall_s, "steps": tcfg.max_steps}


def stage_rad(cfg: EchoConfig, ws: Workspace) -> dict[str, Any]:
    """Stage 2: RAD adaptation from ECHO_AR, one ECHO_Base per block size (``rad_L{L}/model``)."""
    from transformers import AutoModelForImageTextToText

    out: dict[str, Any] = {}
    for size, name in ws.pending_sizes("rad", cfg.rad.block_sizes, out):
        L.seed_everything(cfg.seed)
        tok = ws.tokenizer()
        model = AutoModelForImageTextToText.from_pretrained(ws.model_dir("ar"))
        if cfg.rad.freeze_vision:
            freeze_vision(model)
        bd = wrap_for_stage(model, tok, block_size=size, shift=cfg.rad.shift, mask_token=cfg.model.mask_token,
                            allow_block_size_change=True)
        dm = _datamodule(ws, size, bd.spec.eos_token_id, bd.spec.pad_token_id, cfg.rad.batch_size)
        tcfg = _trainer_cfg(replace(cfg.rad.trainer, max_steps=cfg.rad.steps_for(size)), ws, name)
        res = train_rad(bd, dm, optim=cfg.rad.optim, noise=cfg.rad.noise, trainer=tcfg, layout=cfg.rad.layout,
                        lora=cfg.rad.lora, out_dir=ws.model_dir(name), tokenizer=tok, logger=csv_logger(tcfg))
        if res.trainer.is_global_zero:
            ws.mark_finished(name, {"wall_s": res.wall_s})
        out[name] = {"wall_s": res.wall_s, "steps": tcfg.max_steps}
    return out
