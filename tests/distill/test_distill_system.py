"""The DCD LightningModule: student copied from the teacher, teacher frozen and untouched.

Guards against: the teacher's parameters sneaking into the optimiser (or receiving
gradients), ``trainer.fit`` switching the teacher to train mode (dropout in the teacher's
decoding), checkpoints that carry a second copy of the model, and online/offline paths that
build different training sequences from the same trajectories.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from blockdistill import BlockDiffusionLM
from blockdistill.config import OptimConfig, TrainerConfig, load_config
from blockdistill.distill import (
    DCDTrainConfig,
    DistillConfig,
    FirstStepTarget,
    OnlineCollector,
    TrajectoryCollector,
    collate_prompts,
    collate_records,
    uniform,
)
from blockdistill.lightning import build_trainer
from blockdistill.lightning.collect import PromptDataModule
from blockdistill.lightning.dcd import DCDSystem
from blockdistill.losses.distill import forward_kl
from blockdistill.testing import tiny_qwen2, tiny_tokenizer


def make_teacher(seed: int = 0) -> BlockDiffusionLM:
    return BlockDiffusionLM.from_causal_lm(tiny_qwen2(seed=seed), tiny_tokenizer(), block_size=4).eval()


def prompts(n: int = 6, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [{"id": f"p{i}", "prompt_ids": torch.randint(0, 80, (int(torch.randint(2, 9, (1,), generator=g)),),
                                                         generator=g).tolist()} for i in range(n)]


def test_student_is_a_deep_copy_and_teacher_is_frozen() -> None:
    teacher = make_teacher()
    system = DCDSystem.from_teacher(teacher, OptimConfig(lr=1e-3), online=True, collect={"max_new_tokens": 8})
    assert system.student is not teacher
    for (n1, p1), (n2, p2) in zip(system.student.named_parameters(), teacher.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2) and p1.data_ptr() != p2.data_ptr()
        assert p1.requires_grad and not p2.requires_grad
    system.train()
    assert system.student.training and not teacher.training
    assert not any(m.training for m in teacher.modules())


def test_teacher_unchanged_and_student_changed_after_a_training_step(tmp_path) -> None:
    teacher = make_teacher()
    before = copy.deepcopy(teacher.state_dict())
    system = DCDSystem.from_teacher(teacher, OptimConfig(lr=1e-2, warmup_ratio=0.0), online=True,
                                    collect={"max_new_tokens": 8, "top_k": 5})
    trainer = build_trainer(TrainerConfig(max_steps=2, accelerator="cpu", default_root_dir=str(tmp_path),
                                          enable_progress_bar=False, save_every_n_steps=1))
    dm = PromptDataModule(prompts(), pad_token_id=teacher.spec.pad_token_id, batch_size=3)
    trainer.fit(system, dm)
    opt_params = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert not opt_params & {id(p) for p in teacher.parameters()}
    assert opt_params == {id(p) for p in system.student.parameters()}
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), f"teacher parameter {k} changed"
    assert all(p.grad is None for p in teacher.parameters())
    changed = {n for n, p in system.student.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {n for n, _ in system.student.named_parameters()}, "some student parameters did not train"
    assert not teacher.training
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert not any(k.startswith("collector.") for k in ckpt["state_dict"])
    assert any(k.startswith("net.") for k in ckpt["state_dict"])


def test_online_batch_equals_offline_records_and_all_blocks_train_in_one_forward() -> None:
    teacher = make_teacher()
    rows = prompts(4)
    pb = collate_prompts(rows, teacher.spec.pad_token_id)
    online = OnlineCollector(teacher, max_new_tokens=10, top_k=None)(pb)
    records = TrajectoryCollector(teacher, max_new_tokens=10)(pb.prompt_ids, pb.prompt_lens, pb.example_ids)
    offline = collate_records(records, pad_token_id=teacher.spec.pad_token_id)
    assert torch.equal(online.input_ids, offline.input_ids)
    torch.testing.assert_close(online.target.probs, offline.target.probs)
    # Several blocks per row, all masked in the noisy copy, trained by a single forward.
    assert int((offline.seq_lens - (offline.prompt_lens // 4) * 4).max()) >= 8
    masked = offline.masked()
    assert torch.equal(masked.sum(1), offline.gen_valid.sum(1))
    calls = []
    student = copy.deepcopy(teacher)
    hook = student.model.model.register_forward_hook(lambda *a: calls.append(1))
    system = DCDSystem(student, OptimConfig())
    loss, stats = system.compute_loss(offline)
    hook.remove()
    assert len(calls) == 1 and torch.isfinite(loss)


def test_student_equal_to_teacher_has_near_zero_kl_at_one_step_blocks() -> None:
    """Positions committed at step 1 of their block see exactly what the student sees (every
    block position masked), so a student equal to the teacher matches those rows."""
    teacher = make_teacher()
    rows = prompts(4)
    pb = collate_prompts(rows, teacher.spec.pad_token_id)
    records = TrajectoryCollector(teacher, max_new_tokens=12)(pb.prompt_ids, pb.prompt_lens, pb.example_ids)
    batch = collate_records(records)
    logits = teacher.diffusion_logits(batch.input_ids, batch.prompt_lens, batch.seq_lens, batch.masked(),
                                      batch.gen_index)
    logits[..., teacher.spec.mask_token_id] = float("-inf")
    first = (batch.commit_step == 1) & batch.gen_valid
    kl = forward_kl(logits, batch.target.probs)
    assert bool(first.any())
    assert float(kl[first].detach().abs().max()) < 1e-4


def test_first_step_target_and_uniform_schedule_plug_in() -> None:
    teacher = make_teacher()
    pb = collate_prompts(prompts(3), teacher.spec.pad_token_id)
    records = TrajectoryCollector(teacher, max_new_tokens=8, record_first_step=True, top_k=4)(
        pb.prompt_ids, pb.prompt_lens, pb.example_ids)
    student = make_teacher(seed=1)  # another model, so the divergence is far from 0
    system = DCDSystem(student, OptimConfig(), target=FirstStepTarget(), schedule=uniform, lambda_eos=0.0)
    batch = collate_records(records)
    loss, _ = system.compute_loss(batch)
    # By hand: weight 1 everywhere, no EOS term, so the loss is the mean over KL positions of
    # KL(first-step row || student) on the 4 + 1 buckets of each top-4 row.
    with torch.no_grad():
        p = torch.softmax(student.diffusion_logits(batch.input_ids, batch.prompt_lens, batch.seq_lens,
                                                   batch.masked(), batch.gen_index).double(), -1)
    first, terms = batch.first_step, []
    for b, g in batch.kl_mask.nonzero().tolist():
        ids = first.indices[b, g]
        q = torch.cat([first.values[b, g], first.leftover[b, g, None]]).double()
        p_bg = torch.cat([p[b, g, ids], (1 - p[b, g, ids].sum())[None]])
        terms.append(sum(float(qi * (qi.log() - pi.log())) for qi, pi in zip(q, p_bg) if qi > 0))
    assert len(terms) > 4
    assert float(loss) == pytest.approx(sum(terms) / len(terms), rel=1e-4)
    # The commit-step target differs (later steps saw committed tokens), so the target is in play.
    commit_loss, _ = DCDSystem(student, OptimConfig(), schedule=uniform, lambda_eos=0.0).compute_loss(batch)
    assert abs(float(commit_loss) - float(loss)) > 1e-4
    with pytest.raises(TypeError, match="no online collector"):
        system.compute_loss(pb)


def test_block_size_mismatch_is_refused() -> None:
    teacher = make_teacher()
    pb = collate_prompts(prompts(2), teacher.spec.pad_token_id)
    records = TrajectoryCollector(teacher, max_new_tokens=8)(pb.prompt_ids, pb.prompt_lens, pb.example_ids)
    other = BlockDiffusionLM.from_causal_lm(tiny_qwen2(), tiny_tokenizer(), block_size=2)
    with pytest.raises(ValueError, match="block size 4 but the student's is 2"):
        DCDSystem(other, OptimConfig()).compute_loss(collate_records(records))


def test_config_loads_with_overrides(tmp_path) -> None:
    path = tmp_path / "dcd.yaml"
    path.write_text("model:\n  pretrained: runs/rad/model\ndistill:\n  lambda_eos: 0.5\n  schedule: power\n")
    cfg = load_config(DCDTrainConfig, path, ["distill.power=3", "decode.top_k=null", "trajectories=runs/t"])
    assert cfg.distill.lambda_eos == 0.5 and cfg.distill.power == 3 and cfg.decode.top_k is None
    assert cfg.trajectories == "runs/t"
    from blockdistill.config import ConfigError

    with pytest.raises(ConfigError, match="decode.record_first_step"):
        load_config(DCDTrainConfig, path, ["distill.target=first_step"])


def test_training_resumes_from_a_checkpoint_without_teacher_weights(tmp_path) -> None:
    teacher = make_teacher()
    dm = PromptDataModule(prompts(), pad_token_id=teacher.spec.pad_token_id, batch_size=3)

    def fit(steps, ckpt=None):
        system = DCDSystem.from_teacher(teacher, OptimConfig(lr=1e-3), online=True, collect={"max_new_tokens": 8})
        trainer = build_trainer(TrainerConfig(max_steps=steps, accelerator="cpu", default_root_dir=str(tmp_path),
                                              enable_progress_bar=False, save_every_n_steps=1))
        trainer.fit(system, dm, ckpt_path=ckpt)
        return trainer

    fit(1)
    trainer = fit(2, str(tmp_path / "checkpoints" / "last.ckpt"))
    assert trainer.global_step == 2


def test_online_degenerate_rows_stay_in_the_batch_but_not_in_the_loss() -> None:
    from blockdistill.distill import RepetitionFilter
    from blockdistill.testing import ToyVocab

    v = ToyVocab()
    a, b = v.content[:2]
    loop, fine = (v.prompt[0], v.prompt[1]), (v.prompt[2], v.prompt[3])
    toy = v.toy({loop: {(a, a): 1.0}, loop + (a, a): {(a, a): 1.0}, fine: {(a, b): 1.0},
                 fine + (a, b): {(v.eos, v.eos): 1.0}}, block_size=2)
    collector = OnlineCollector(toy, filter=RepetitionFilter(max_ngram=1, repeats=3), max_new_tokens=6)
    batch = collector(collate_prompts([{"id": "loop", "prompt_ids": list(loop)},
                                       {"id": "fine", "prompt_ids": list(fine)}], v.eos))
    assert batch.dropped.tolist() == [True, False] and batch.meta == {"dropped": 1}
    assert not batch.kl_mask[0].any() and not batch.eos_mask[0].any()
    assert batch.kl_mask[1].any()


def test_on_policy_steps_train_on_the_students_decodes_relabelled_by_the_teacher(tmp_path) -> None:
    """Offline batches in; on the scheduled steps the batch becomes the student's one-step decode
    of the same prompts with the teacher's relabelling; the teacher stays frozen and out of the
    checkpoint."""
    from blockdistill.distill.relabel import relabel_blocks, rollout_streams
    from blockdistill.lightning import BlockDataModule

    teacher = make_teacher()
    rows = prompts(6)
    records = TrajectoryCollector(teacher, max_new_tokens=10).collect(collate_prompts(rows, teacher.spec.pad_token_id))
    before = copy.deepcopy(teacher.state_dict())
    system = DCDSystem.from_teacher(teacher, OptimConfig(lr=1e-2, warmup_ratio=0.0), online=False,
                                    on_policy={"max_new_tokens": 10}, on_policy_fraction=0.5, on_policy_start=1)
    assert [system.is_on_policy_step(s) for s in range(6)] == [False, False, True, False, True, False]
    seen = []
    original = system.on_policy_batch
    system.on_policy_batch = lambda batch: seen.append(batch) or original(batch)  # type: ignore[method-assign]
    trainer = build_trainer(TrainerConfig(max_steps=4, accelerator="cpu", default_root_dir=str(tmp_path),
                                          enable_progress_bar=False, save_every_n_steps=1))
    dm = BlockDataModule(records, functools.partial(collate_records, pad_token_id=teacher.spec.pad_token_id),
                         batch_size=3)
    trainer.fit(system, dm)
    assert len(seen) == 1  # step 2 of 0..3
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k])
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert not any(k.startswith(("on_policy.", "collector.")) for k in ckpt["state_dict"])
    # The on-policy batch is exactly: the student's decode, the teacher's relabelling.
    batch = seen[0]
    out = system.on_policy_batch(batch)
    ids, seq = rollout_streams(system.student, batch.prompts(teacher.spec.pad_token_id), 10)
    assert torch.equal(out.input_ids, ids)
    lab = relabel_blocks(teacher, ids, batch.prompt_lens, seq)
    assert torch.equal(out.tokens, lab.tokens)


def test_on_policy_options_are_validated() -> None:
    from blockdistill.config import ConfigError

    with pytest.raises(ValueError, match="on_policy="):
        DCDSystem(make_teacher(), OptimConfig(), on_policy_fraction=0.5)
    with pytest.raises(ValueError, match="on_policy_fraction"):
        DCDSystem.from_teacher(make_teacher(), OptimConfig(), online=False, on_policy={"max_new_tokens": 4},
                               on_policy_fraction=1.5)
    with pytest.raises(ConfigError, match="distill.on_policy_fraction"):
        DistillConfig(on_policy_fraction=-0.1)
    with pytest.raises(ConfigError, match="distill.on_policy_start"):
        DistillConfig(on_policy_start=-1)
