"""The lingshu7b stage settings reach every stage through the library's recipes.

The ECHO stages are run end to end on the smoke model and data, with the lingshu7b stage files
layered on top (8 GPUs, FSDP for training, DDP for collection, bf16-true, gradient accumulation,
CUDA evaluation). ``lightning.Trainer`` is intercepted: each call is recorded as the stage asked
for it, then run on this machine's CPU in float32, so the later stages get real inputs. The test
fails if any stage drops, defaults or hard-codes a setting on its way to Lightning.
"""

from __future__ import annotations

from pathlib import Path

import lightning

from examples.echo_cxr.config import load_echo_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "examples" / "echo_cxr" / "configs"
STAGE_FILES = ("ar", "rad", "collect", "dcd", "eval")
LOCAL = {"accelerator": "cpu", "devices": 1, "strategy": "auto", "precision": "32-true"}


def test_lingshu7b_stage_settings_reach_lightning_in_every_stage(tmp_path, monkeypatch) -> None:
    import blockdistill.recipes.distill as recipes_distill
    import blockdistill.recipes.train as recipes_train
    import examples.echo_cxr.stages_eval as stages_eval
    from examples.echo_cxr.pipeline import run

    overrides = [f"run_dir={tmp_path / 'run'}", "collect.n_prompts=4", "collect.batch_size=2",
                 "collect.decode.max_new_tokens=16", "collect.decode.repetition_ngram=0", "eval.max_new_tokens=16", "eval.batch_size=4",
                 "eval.semscore=false", "data.n_eval=4", "data.n_eval_zh=2"]
    for stage in ("ar", "rad", "dcd"):
        overrides += [f"{stage}.batch_size=2", f"{stage}.trainer.max_steps=1", f"{stage}.trainer.enable_progress_bar=false",
                      f"{stage}.trainer.save_every_n_steps=1"]
    cfg = load_echo_config([CONFIGS / "smoke", *(CONFIGS / "lingshu7b" / f"{s}.yaml" for s in STAGE_FILES)],
                           overrides=overrides + ["rad.max_steps_by_size={4: 1}"], all_stages=True)
    # the layered config is the one under test: the lingshu7b settings, not the smoke ones
    assert cfg.ar.trainer.strategy == "fsdp" and cfg.collect.trainer.strategy == "ddp" and cfg.eval.device == "cuda"

    real_trainer = lightning.Trainer
    asked: list[dict] = []

    def trainer(**kw):
        asked.append({k: kw.get(k) for k in (*LOCAL, "accumulate_grad_batches", "default_root_dir")})
        return real_trainer(**{**kw, **LOCAL})

    devices: list[str] = []
    real_load = stages_eval.load_model

    def load_model(path, tok, device="cpu"):
        devices.append(device)
        return real_load(path, tok, device="cpu")

    fitted: list[tuple[str, bool, bool]] = []
    real_fit = recipes_train.fit

    def fit(system, data, trainer_cfg, **kw):
        checkpointing = any(getattr(m, "is_gradient_checkpointing", False) for m in system.modules())
        vision = [p.requires_grad for n, p in system.named_parameters() if ".visual." in n]
        assert vision, "no vision tower found in the trained system"
        fitted.append((Path(trainer_cfg.default_root_dir).parent.name, checkpointing, any(vision)))
        return real_fit(system, data, trainer_cfg, **kw)

    monkeypatch.setattr(recipes_train, "fit", fit)
    monkeypatch.setattr(recipes_distill, "fit", fit)
    monkeypatch.setattr(lightning, "Trainer", trainer)
    monkeypatch.setattr(stages_eval, "load_model", load_model)
    run(cfg, ("data", "ar", "rad", "collect", "dcd", "eval"))

    by_stage = {Path(a["default_root_dir"]).parent.name: a for a in asked}
    assert sorted(by_stage) == ["ar", "collect_L8", "dcd_L8", "rad_L4", "rad_L8"], sorted(by_stage)
    for name, got in by_stage.items():
        section = {"ar": cfg.ar, "rad_L4": cfg.rad, "rad_L8": cfg.rad, "collect_L8": cfg.collect, "dcd_L8": cfg.dcd}[name]
        want = section.trainer
        assert (got["accelerator"], got["devices"], got["strategy"], got["precision"]) == (
            want.accelerator, want.devices, want.strategy, want.precision), name
        assert got["accelerator"] == "gpu" and got["devices"] == 8 and got["precision"] == "bf16-true", name
        assert got["strategy"] == ("ddp" if name.startswith("collect") else "fsdp"), name
        if not name.startswith("collect"):
            assert got["accumulate_grad_batches"] == 4, name
    assert devices and set(devices) == {"cuda"}, devices  # every evaluated model is placed on the configured device

    # what each training stage handed to Lightning: activation checkpointing on, the vision tower
    # frozen exactly where the stage's config says (ar trains it, rad and dcd do not)
    assert [name for name, *_ in fitted] == ["ar", "rad_L4", "rad_L8", "dcd_L8"], fitted
    for name, checkpointing, vision_trains in fitted:
        section = {"ar": cfg.ar, "rad_L4": cfg.rad, "rad_L8": cfg.rad, "dcd_L8": cfg.dcd}[name]
        assert checkpointing, f"{name}: gradient checkpointing was configured but is off"
        assert vision_trains == (not section.freeze_vision), name
