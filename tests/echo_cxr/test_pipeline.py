"""ECHO end to end at its smallest size, and every shipped ECHO config loaded and validated."""

import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from blockdistill.config import ConfigError
from examples.echo_cxr.config import EchoConfig, load_echo_config
from examples.echo_cxr.model import build_backbone, freeze_vision, tiny_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "examples" / "echo_cxr" / "configs"


@pytest.mark.parametrize("size", ["tiny", "smoke", "lingshu7b"])
def test_every_shipped_size_loads_and_validates(size):
    cfg = load_echo_config(CONFIGS / size, all_stages=True)
    assert isinstance(cfg, EchoConfig)
    assert cfg.collect.block_size in cfg.rad.block_sizes  # the teacher is trained by the same config


def test_lingshu7b_configs_follow_the_paper():
    cfg = load_echo_config(CONFIGS / "lingshu7b", all_stages=True)
    assert cfg.model.kind == "pretrained" and cfg.model.dtype == "bfloat16"
    assert (cfg.ar.optim.lr, cfg.ar.optim.weight_decay, cfg.ar.optim.warmup_ratio) == (1e-5, 0.01, 0.03)
    assert cfg.collect.n_prompts == 30000
    for section in (cfg.ar, cfg.rad, cfg.dcd):
        assert section.trainer.precision == "bf16-true" and section.trainer.gradient_checkpointing
        assert section.trainer.strategy in L.pytorch.strategies.StrategyRegistry
    for size in (4, 8):
        one = load_echo_config([CONFIGS / "lingshu7b", CONFIGS / "lingshu7b" / f"rad_L{size}.yaml"], all_stages=True)
        assert one.rad.block_sizes == [size] if size == 8 else one.rad.block_sizes == [4]


def test_lingshu7b_backbone_builds_from_a_tiny_stand_in(tmp_path):
    """The 7B path (AutoModel from a local directory, bf16) runs on a tiny Qwen2.5-VL checkpoint."""
    from blockdistill.testing import tiny_qwen2_5_vl

    tiny_qwen2_5_vl().save_pretrained(tmp_path / "stand_in")
    cfg = load_echo_config(CONFIGS / "lingshu7b", all_stages=True, overrides=[f"model.pretrained={tmp_path / 'stand_in'}"])
    model = build_backbone(cfg.model)
    assert model.config.model_type == "qwen2_5_vl" and next(model.parameters()).dtype == torch.bfloat16
    n = freeze_vision(model)
    assert n > 0 and not any(p.requires_grad for p in model.model.visual.parameters())
    assert any(p.requires_grad for p in model.model.language_model.parameters())


def test_missing_lingshu_weights_give_a_clear_error(tmp_path):
    cfg = load_echo_config(CONFIGS / "lingshu7b", all_stages=True, overrides=[f"model.pretrained={tmp_path / 'nope'}"])
    with pytest.raises(FileNotFoundError, match="Download Lingshu-7B"):
        build_backbone(cfg.model)


def test_bad_echo_config_values_name_the_field():
    with pytest.raises(ConfigError, match="^data.zh_fraction"):
        load_echo_config(CONFIGS / "tiny", all_stages=True, overrides=["data.zh_fraction=2"])
    with pytest.raises(ConfigError, match="^rad.blok_sizes"):
        load_echo_config(CONFIGS / "tiny", all_stages=True, overrides=["rad.blok_sizes=[4]"])
    with pytest.raises(ConfigError, match="^data.num_workers"):
        load_echo_config(CONFIGS / "tiny", all_stages=True, overrides=["data.num_workers=-1"])
    with pytest.raises(ConfigError, match="^rad.max_steps_by_size"):
        load_echo_config(CONFIGS / "tiny", all_stages=True, overrides=["rad.max_steps_by_size={16: 3}"])


def test_a_new_tiny_tokenizer_recipe_reruns_every_stage_that_reads_tokens(monkeypatch):
    """Stages skip on a matching fingerprint; a tokenizer recipe bump changes every token id, so
    it must change the fingerprint of every stage from data on, and only on the tiny tokenizer."""
    from examples.echo_cxr.data import tokenizer as tk
    from examples.echo_cxr.pipeline import DEPENDS, fingerprint

    tiny = load_echo_config(CONFIGS / "tiny", all_stages=True)
    lingshu = load_echo_config(CONFIGS / "lingshu7b", all_stages=True)
    before = {size: {s: fingerprint(cfg, s) for s in DEPENDS} for size, cfg in (("tiny", tiny), ("lingshu", lingshu))}
    monkeypatch.setattr(tk, "TINY_TOKENIZER_VERSION", tk.TINY_TOKENIZER_VERSION + 1)
    changed = {s for s in DEPENDS if fingerprint(tiny, s) != before["tiny"][s]}
    assert changed == set(DEPENDS) - {"curate"}
    assert all(fingerprint(lingshu, s) == before["lingshu"][s] for s in DEPENDS)


def test_tiny_config_mrope_sections_fit_the_head_dim():
    from examples.echo_cxr.model import BackboneConfig

    for hidden, heads in ((64, 4), (128, 4), (96, 2)):
        c = tiny_config(BackboneConfig(hidden_size=hidden, num_heads=heads), _Ids(), 100)
        assert sum(c.text_config.rope_parameters["mrope_section"]) == hidden // heads // 2


class _Ids:
    image_token_id, video_token_id, vision_start_token_id, vision_end_token_id = 6, 7, 3, 4
    eos_token_id, pad_token_id = 2, 0

    def config_kwargs(self):
        return {"image_token_id": 6, "video_token_id": 7, "vision_start_token_id": 3, "vision_end_token_id": 4}


def run_echo(args, timeout=900):
    env = {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}",
           "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "examples.echo_cxr", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout)


def test_smoke_pipeline_runs_every_stage_and_writes_every_artefact(tmp_path):
    run_dir = tmp_path / "smoke"
    r = run_echo(["all", "--config", str(CONFIGS / "smoke"), f"run_dir={run_dir}"])
    assert r.returncode == 0, r.stderr[-4000:]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert set(manifest) == {"data", "ar", "rad", "collect", "dcd", "eval", "report"}
    for model in ("ar", "rad_L4", "rad_L8", "dcd_L8"):
        assert (run_dir / model / "model" / "model.safetensors").is_file(), model
    traj = json.loads((run_dir / "traj_L8" / "manifest.json").read_text())
    assert traj["num_examples"] == 12
    results = json.loads((run_dir / "results.json").read_text())
    assert {"machine", "wall_s", "rows"} <= set(results)
    variants = {(row["variant"], row["lang"]) for row in results["rows"]}
    for v in ("ar", "base_multistep_L4", "base_multistep_L8", "base_onestep_L8", "echo_onestep_L8"):
        assert (v, "en") in variants and (v, "zh") in variants
    keys = {"variant", "lang", "clinical_macro_f1", "clinical_micro_f1", "rouge_l", "bleu4", "cider_d", "semscore",
            "repetition_rate", "tokens_per_s", "tokens_per_s_decode", "tpf", "nfe", "n"}
    assert all(set(row) == keys for row in results["rows"])
    assert all(0.0 <= row["repetition_rate"] < 1.0 for row in results["rows"])
    assert results["echo_full_block_tpf"] == 8.0
    limit = results["speed"]["forward_cost_limit"]
    assert limit["block_size"] == 8 and limit["limit"] == pytest.approx(8 * limit["t1_s"] / limit["t2L_s"])
    assert 0 < results["command_s"] and results["wall_s"] > 0  # the whole command, recorded by the report stage
    report = (run_dir / "report.md").read_text()
    assert "Quality against speed" in report and "base_onestep_L8" in report
    assert "zh: ECHO repetition rate - ECHO_AR's" in report and "that ratio / the limit" in report
    assert "L*t(1)/t(2L) = " in report and "for the whole command, set-up included" in report
    assert "## How each model was trained" in report and "target=" in report
    assert "| ECHO_Base L=4 | 2: RAD | 2 |" in report  # rad.max_steps_by_size
    assert "on-policy (student decodes, teacher relabels) on 0.5 of the steps" in report  # smoke dcd.yaml
    dcd_log = (run_dir / "dcd_L8" / "train" / "logs" / "version_0" / "metrics.csv").read_text()
    assert "train/on_policy_relabel_forwards" in dcd_log.splitlines()[0]
    for png in ("quality_vs_speed.png", "metrics.png", "per_finding.png", "training.png"):
        assert (run_dir / "plots" / png).stat().st_size > 1000, png
    # idempotent: a rerun skips every finished stage
    r = run_echo(["all", "--config", str(CONFIGS / "smoke"), f"run_dir={run_dir}"])
    assert r.returncode == 0 and r.stdout.count("skipped") == 7, r.stdout
