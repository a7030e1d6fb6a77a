"""The ECHO stages train LoRA when their config section asks (``rad.lora``, ``dcd.lora``).

The smoke pipeline runs data -> AR -> RAD -> collect -> DCD in process, one step per training
stage. Every RAD and DCD system handed to Lightning must carry adapters and train nothing but
them and the ``[MASK]`` rows; the saved models are merged (plain weights, no adapter names) and
differ from the model they started from only in adapted layers and the ``[MASK]`` row.
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file

from examples.echo_cxr.config import load_echo_config

CONFIGS = Path(__file__).resolve().parents[2] / "examples" / "echo_cxr" / "configs"


def _changed(before: dict, after: dict) -> set[str]:
    assert set(before) == set(after)
    return {k for k in before if not (before[k].shape == after[k].shape and bool((before[k] == after[k]).all()))}


def test_echo_rad_and_dcd_stages_train_lora_and_save_merged(tmp_path, monkeypatch) -> None:
    import blockdistill.recipes.distill as recipes_distill
    import blockdistill.recipes.train as recipes_train
    from blockdistill.models.lora import is_lora
    from examples.echo_cxr.pipeline import run

    overrides = [f"run_dir={tmp_path / 'run'}", "collect.n_prompts=4", "collect.batch_size=2",
                 "collect.decode.max_new_tokens=16", "data.n_eval=2", "data.n_eval_zh=1", "rad.max_steps_by_size={4: 1}",
                 "dcd.distill.on_policy_fraction=0.0",
                 "rad.lora.r=4", "rad.lora.alpha=8", "dcd.lora.r=4", "dcd.lora.alpha=8"]
    for stage in ("ar", "rad", "dcd"):
        overrides += [f"{stage}.batch_size=2", f"{stage}.trainer.max_steps=1"]
    cfg = load_echo_config(CONFIGS / "smoke", overrides=overrides, all_stages=True)
    assert cfg.rad.lora.r == 4 and cfg.dcd.lora.r == 4

    fitted: list[tuple[str, bool, list[str]]] = []
    real_fit = recipes_train.fit

    def fit(system, data, trainer_cfg, **kw):
        net = getattr(system, "net", None)
        trains = [n for n, p in system.named_parameters() if p.requires_grad]
        fitted.append((Path(trainer_cfg.default_root_dir).parent.name, net is not None and is_lora(net), trains))
        return real_fit(system, data, trainer_cfg, **kw)

    monkeypatch.setattr(recipes_train, "fit", fit)
    monkeypatch.setattr(recipes_distill, "fit", fit)
    run(cfg, ("data", "ar", "rad", "collect", "dcd"))

    assert [name for name, *_ in fitted] == ["ar", "rad_L4", "rad_L8", "dcd_L8"], fitted
    for name, lora, trains in fitted:
        assert lora == (name != "ar"), name
        if lora:
            assert trains and all("lora_" in n or "trainable_tokens_delta" in n for n in trains), (name, trains)
            assert any("trainable_tokens_delta" in n for n in trains), name  # the [MASK] row trains

    root = tmp_path / "run"
    weights = {m: load_file(root / m / "model" / "model.safetensors") for m in ("rad_L8", "dcd_L8")}
    for m, w in weights.items():
        assert not [k for k in w if "lora" in k or "trainable_tokens" in k or "base_layer" in k], m
    # DCD starts from the RAD model: LoRA changed adapted projections and the [MASK] row only
    changed = _changed(weights["rad_L8"], weights["dcd_L8"])
    assert changed, "DCD with LoRA changed no weight"
    emb = [k for k in changed if "embed_tokens" in k]
    assert all(k.endswith("proj.weight") or k in emb or k.endswith("lm_head.weight") for k in changed), changed
    import json

    mask = json.loads((root / "rad_L8" / "model" / "config.json").read_text())["blockdistill"]["mask_token_id"]
    for k in emb:
        rows = (weights["rad_L8"][k] != weights["dcd_L8"][k]).any(1).nonzero().flatten().tolist()
        assert rows == [mask], (k, rows)
