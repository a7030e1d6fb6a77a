"""LoRA through PEFT for RAD and DCD: what trains, merged against unmerged, the adapter alone,
checkpoints that hold only the trained weights, resume, and the config / CLI / recipe paths."""

from __future__ import annotations

import functools
import json

import lightning as L
import pytest
import torch

from blockdistill import BlockDiffusionLM
from blockdistill.config import ConfigError, LoraConfig, NoiseConfig, OptimConfig, TrainerConfig
from blockdistill.data import BlockCollator
from blockdistill.lightning import BlockDataModule, RADSystem, build_trainer, resume_path
from blockdistill.lightning.common import LORA_CHECKPOINT_KEY
from blockdistill.models.lora import (
    apply_lora,
    is_lora,
    load_lora,
    lora_targets,
    merge_lora,
    trainable_parameter_names,
)
from blockdistill.recipes import train_rad
from blockdistill.sampling import ConfidenceThreshold, HFDenoiser, block_generate
from blockdistill.testing import tiny_qwen2, tiny_tokenizer
from tests.foundation.helpers import random_examples

LORA = LoraConfig(r=4, alpha=8.0)
OPTIM = OptimConfig(lr=5e-3, warmup_ratio=0.25)


def make_bd(seed: int = 0, tied: bool = False) -> BlockDiffusionLM:
    if tied:
        from transformers import Qwen2Config, Qwen2ForCausalLM

        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(Qwen2Config(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2, initializer_range=0.1,
                                             tie_word_embeddings=True, eos_token_id=89, pad_token_id=89))
    else:
        model = tiny_qwen2(seed=seed)
    return BlockDiffusionLM.from_causal_lm(model, tiny_tokenizer(), block_size=4).train()


def data(bd: BlockDiffusionLM, batch_size: int = 4) -> BlockDataModule:
    ex = random_examples([5, 7, 3, 9, 4, 6, 8, 2], [6, 3, 8, 2, 7, 5, 4, 9], seed=11)
    coll = BlockCollator(bd.block_size, bd.spec.eos_token_id, bd.spec.pad_token_id)
    return BlockDataModule(ex, coll, batch_size=batch_size, shuffle=False)


def trainer_cfg(root, steps: int = 4, every: int = 1) -> TrainerConfig:
    return TrainerConfig(max_steps=steps, accelerator="cpu", default_root_dir=str(root), save_every_n_steps=every,
                         enable_progress_bar=False)


class Crash(L.Callback):
    """A killed job: dies before optimiser step ``at``."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.at:
            raise SystemExit("killed")


def fit(system, bd, root, steps=4, crash_at=None, ckpt_path=None):
    tr = build_trainer(trainer_cfg(root, steps), callbacks=[Crash(crash_at)] if crash_at else [])
    try:
        tr.fit(system, data(bd), ckpt_path=ckpt_path)
    except SystemExit:
        assert crash_at is not None
    return tr


def probe_logits(bd: BlockDiffusionLM) -> torch.Tensor:
    """Diffusion logits of every response position of a fixed batch, half of it masked."""
    batch = BlockCollator(bd.block_size, bd.spec.eos_token_id, bd.spec.pad_token_id)(
        random_examples([4, 6], [7, 5], seed=3))
    maskable = batch.maskable()
    masked = maskable & (torch.arange(batch.input_ids.shape[1]) % 2 == 0)
    targets = torch.stack([torch.arange(5) + int(p) for p in batch.prompt_lens])  # both responses are >= 5 long
    with torch.no_grad():
        return bd.eval().diffusion_logits(batch.input_ids, batch.prompt_lens, batch.seq_lens, masked, targets)


def decode(bd: BlockDiffusionLM) -> torch.Tensor:
    prompt = torch.tensor([[3, 14, 15, 9, 26, 5, 35, 8], [2, 7, 1, 8, 2, 8, 0, 0]])
    with torch.no_grad():
        out = block_generate(HFDenoiser(bd.eval()), prompt, torch.tensor([8, 6]), policy=ConfidenceThreshold(0.9),
                             max_new_tokens=12)
    return out.padded(bd.spec.pad_token_id)


def trained_lora(tmp_path, tied: bool = False) -> tuple[BlockDiffusionLM, dict[str, torch.Tensor]]:
    """A tiny model whose LoRA adapters trained 4 RAD steps, and its weights before."""
    bd = make_bd(tied=tied)
    before = {k: v.detach().clone() for k, v in bd.model.state_dict().items()}
    system = RADSystem(bd, OPTIM, NoiseConfig(), lora=LORA)
    fit(system, bd, tmp_path / "run")
    assert is_lora(bd)
    return bd, before


# ---------------------------------------------------------------------------------------------------- what trains
@pytest.mark.parametrize("tied", [False, True], ids=["untied_head", "tied_head"])
def test_only_adapters_and_the_mask_rows_change(tmp_path, tied):
    targets = set(lora_targets(make_bd(tied=tied)))
    bd, before = trained_lora(tmp_path, tied=tied)
    names = trainable_parameter_names(bd)
    assert names and all("lora_" in n or "trainable_tokens_delta" in n for n in names), names
    assert len(targets) == 2 * 7  # q k v o gate up down, per layer; never the LM head
    merge_lora(bd)
    after = bd.model.state_dict()
    assert set(after) == set(before)  # merged: the plain backbone's names, nothing of PEFT left
    mask = bd.spec.mask_token_id
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    linear = {f"{t}.weight" for t in targets}
    emb, head = "model.embed_tokens.weight", "lm_head.weight"
    assert linear <= changed  # every adapted layer moved
    assert changed - linear <= {emb, head} and emb in changed, changed - linear
    for key in {emb, head} & changed:
        rows = (before[key] != after[key]).any(1).nonzero().flatten().tolist()
        assert rows == [mask], (key, rows)  # of the embedding (and head) only the [MASK] row trained


def test_target_modules_choose_layers_and_unknown_names_are_listed():
    bd = make_bd()
    assert lora_targets(bd, ["q_proj", "self_attn.v_proj"]) == [
        f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")]
    with pytest.raises(ValueError, match=r"\['qkv'\] match no linear layer.*'q_proj'"):
        lora_targets(bd, ["q_proj", "qkv"])
    apply_lora(bd, LoraConfig(r=2, target_modules=["q_proj"]))
    assert {n.split(".lora_")[0] for n in trainable_parameter_names(bd) if "lora_" in n} == {
        f"model.model.layers.{i}.self_attn.q_proj" for i in range(2)}
    with pytest.raises(ValueError, match="already carries LoRA"):
        apply_lora(bd, LORA)


def test_fresh_adapters_leave_the_model_unchanged():
    bd = make_bd()
    ref = probe_logits(bd)
    apply_lora(bd, LORA)
    assert torch.equal(probe_logits(bd), ref)  # B = 0 and the [MASK] row starts at its value


@pytest.mark.parametrize("field,value,msg", [("r", 0, "lora.r"), ("alpha", 0.0, "lora.alpha"),
                                             ("dropout", 1.0, "lora.dropout"), ("target_modules", [], "lora.target")])
def test_lora_config_is_validated(field, value, msg):
    with pytest.raises(ConfigError, match=msg):
        LoraConfig(**{field: value})


# ---------------------------------------------------------------------------------------------------- merge and save
def test_merged_logits_and_tokens_equal_the_unmerged_model(tmp_path):
    bd, _ = trained_lora(tmp_path)
    unmerged, tokens = probe_logits(bd), decode(bd)
    assert not torch.equal(unmerged, probe_logits(make_bd()))  # it did train
    bd.save_pretrained(tmp_path / "merged", tokenizer=tiny_tokenizer())  # default: merged, in place
    assert not is_lora(bd)
    assert torch.allclose(probe_logits(bd), unmerged, atol=1e-5, rtol=1e-5)
    assert torch.equal(decode(bd), tokens)
    loaded = BlockDiffusionLM.from_pretrained(tmp_path / "merged")
    assert loaded.spec == bd.spec
    assert torch.allclose(probe_logits(loaded), unmerged, atol=1e-5, rtol=1e-5)
    assert torch.equal(decode(loaded), tokens)
    assert not any("lora" in k for k in loaded.model.state_dict())


def test_adapter_alone_is_small_and_goes_back_on_its_base(tmp_path):
    bd, _ = trained_lora(tmp_path)
    ref, tokens = probe_logits(bd), decode(bd)
    bd.save_pretrained(tmp_path / "adapter", lora="adapter")
    assert is_lora(bd)  # saving the adapter leaves it on
    files = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "blockdistill_block.json"} <= files
    assert "model.safetensors" not in files
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    n_saved = sum(t.numel() for t in saved.values())
    n_trained = sum(p.numel() for p in bd.parameters() if p.requires_grad)
    assert n_saved == n_trained < sum(p.numel() for p in bd.parameters()) // 4
    base = make_bd()  # the base the adapter was trained on, rebuilt the same way
    load_lora(base, tmp_path / "adapter")
    assert torch.allclose(probe_logits(base), ref, atol=1e-6) and torch.equal(decode(base), tokens)
    merged = load_lora(make_bd(), tmp_path / "adapter", merge=True)
    assert not is_lora(merged) and torch.allclose(probe_logits(merged), ref, atol=1e-5)
    other = BlockDiffusionLM.from_causal_lm(tiny_qwen2(), tiny_tokenizer(), block_size=8)
    with pytest.raises(ValueError, match="block rules"):
        load_lora(other, tmp_path / "adapter")
    with pytest.raises(ValueError, match="no LoRA adapters"):
        make_bd().save_pretrained(tmp_path / "x", lora="adapter")


# ---------------------------------------------------------------------------------------------------- checkpoints
def test_lora_checkpoints_hold_only_trained_weights_and_resume_exactly(tmp_path):
    full_bd = make_bd()
    fit(RADSystem(full_bd, OPTIM, NoiseConfig(), lora=LORA), full_bd, tmp_path / "a")
    # killed after 2 steps, then resumed up to step 4 on a freshly built model
    part_bd = make_bd()
    part = fit(RADSystem(part_bd, OPTIM, NoiseConfig(), lora=LORA), part_bd, tmp_path / "b", crash_at=2)
    last = resume_path(trainer_cfg(tmp_path / "b"))
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 2
    trained = trainable_parameter_names(RADSystem(make_bd(), OPTIM, NoiseConfig(), lora=LORA))
    assert sorted(ckpt["state_dict"]) == sorted(trained) == ckpt[LORA_CHECKPOINT_KEY]
    (opt,) = ckpt["optimizer_states"]
    assert len(opt["state"]) == len(trained)  # AdamW moments for the trained weights only
    assert sum(len(g["params"]) for g in opt["param_groups"]) == len(trained)
    del part
    rest_bd = make_bd()
    fit(RADSystem(rest_bd, OPTIM, NoiseConfig(), lora=LORA), rest_bd, tmp_path / "b", ckpt_path=last)
    a, b = merge_lora(full_bd).model.state_dict(), merge_lora(rest_bd).model.state_dict()
    assert set(a) == set(b)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5), k


def test_resuming_a_lora_checkpoint_into_a_full_run_is_refused(tmp_path):
    bd = make_bd()
    fit(RADSystem(bd, OPTIM, NoiseConfig(), lora=LORA), bd, tmp_path / "a", steps=1)
    last = resume_path(trainer_cfg(tmp_path / "a"))
    full = make_bd()
    with pytest.raises(ValueError, match="checkpoint is of a LoRA run but this run trains with full fine-tuning"):
        fit(RADSystem(full, OPTIM, NoiseConfig()), full, tmp_path / "a", ckpt_path=last)
    other = make_bd()
    with pytest.raises(ValueError, match="LoRA weights differ"):
        fit(RADSystem(other, OPTIM, NoiseConfig(), lora=LoraConfig(r=4, target_modules=["q_proj"])), other,
            tmp_path / "a", ckpt_path=last)


# ---------------------------------------------------------------------------------------------------- recipes and CLI
def test_train_rad_recipe_saves_merged_and_the_adapter(tmp_path):
    L.seed_everything(0)
    bd = make_bd()
    lora = LoraConfig(r=4, alpha=8.0, adapter_dir=str(tmp_path / "adapter"))
    train_rad(bd, data(bd), optim=OPTIM, noise=NoiseConfig(), trainer=trainer_cfg(tmp_path / "run", steps=3),
              lora=lora, out_dir=tmp_path / "model", tokenizer=tiny_tokenizer())
    merged = BlockDiffusionLM.from_pretrained(tmp_path / "model")
    adapted = load_lora(make_bd(), tmp_path / "adapter")
    assert torch.allclose(probe_logits(merged), probe_logits(adapted), atol=1e-5)
    assert not torch.allclose(probe_logits(merged), probe_logits(make_bd()), atol=1e-3)
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and cfg["peft_type"] == "LORA"


def test_dcd_trains_lora_on_the_student_only(tmp_path):
    """Offline DCD with LoRA: the teacher's weights become the student's base (no copy), only the
    adapters and the [MASK] rows train; the saved student is merged."""
    from blockdistill.config import DistillConfig
    from blockdistill.distill.batch import collate_records
    from blockdistill.distill.collectors import TrajectoryCollector
    from blockdistill.recipes import train_dcd

    teacher = make_bd().eval()
    prompts = torch.tensor([[3, 14, 15, 9, 0, 0], [26, 5, 35, 8, 9, 7], [2, 7, 1, 8, 2, 0]])
    records = TrajectoryCollector(teacher, max_new_tokens=8)(prompts, torch.tensor([4, 6, 5]), ["a", "b", "c"])

    dm = BlockDataModule(records, functools.partial(collate_records, pad_token_id=teacher.spec.pad_token_id),
                         batch_size=3, shuffle=False)
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    train_dcd(teacher, dm, optim=OPTIM, distill=DistillConfig(), trainer=trainer_cfg(tmp_path / "run", steps=2),
              online=False, lora=LORA, out_dir=tmp_path / "student", tokenizer=tiny_tokenizer())
    student = BlockDiffusionLM.from_pretrained(tmp_path / "student")
    after = student.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.endswith("proj.weight") or k in ("model.embed_tokens.weight", "lm_head.weight")
                           for k in changed), changed
    rows = (before["model.embed_tokens.weight"] != after["model.embed_tokens.weight"]).any(1).nonzero().flatten()
    assert rows.tolist() == [teacher.spec.mask_token_id]  # the [MASK] row trains in DCD too


def test_cli_train_rad_with_a_lora_section(tmp_path):
    from tests.foundation.test_training import run_cli, write_inputs

    tok, train = write_inputs(tmp_path)
    r = run_cli(["train-rad", "--config", "configs/tiny/rad.yaml", f"data.tokenizer={tok}", f"data.train_file={train}",
                 "trainer.max_steps=2", "trainer.enable_progress_bar=false", f"output_dir={tmp_path / 'rad'}",
                 f"trainer.default_root_dir={tmp_path / 'run'}", "lora.r=4",
                 f"lora.adapter_dir={tmp_path / 'adapter'}"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    saved = json.loads((tmp_path / "rad" / "config.json").read_text())
    assert saved["blockdistill"]["block_size"] == 4
    assert "lora:\n  r: 4" in (tmp_path / "rad" / "blockdistill_train.yaml").read_text()
    r = run_cli(["train-rad", "--config", "configs/tiny/rad.yaml", "lora.r=0"])
    assert r.returncode == 2 and "lora.r" in r.stderr
