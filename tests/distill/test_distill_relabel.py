"""On-policy DCD: the teacher relabels every block of a stream at once.

Guards against: the parallel relabelling drifting from what the sequential sampler would
commit after the same prefix (mask leaks between blocks, padding rows clobbering real
positions, the prompt tail, shift alignment, commit order and ties), and the on-policy batch
mixing up the student's context with the teacher's targets.
"""

from __future__ import annotations

import copy

import pytest
import torch

from blockdistill.config import OptimConfig
from blockdistill.distill import TrajectoryCollector, collate_prompts, collate_records
from blockdistill.distill.prompts import PromptBatch
from blockdistill.distill.relabel import StudentRolloutCollector, relabel_blocks, rollout_streams
from blockdistill.distill.targets import HardTokenTarget
from blockdistill.layout import response_block_start
from blockdistill.lightning.dcd import DCDSystem
from blockdistill.sampling import ConfidenceThreshold, FixedCount, OneStep, block_generate
from blockdistill.sampling.hf import HFDenoiser
from blockdistill.sampling.trace import TraceSpec
from tests.sampling.helpers import (
    VOCAB_WORDS,
    image_prompt,
    images,
    random_prompts,
    text_bd,
    variant,
    vl_bd,
)


def _streams(bd, prompt_ids, prompt_lens, blocks: list[int], seed: int = 0):
    """Clean streams: each prompt, then random ordinary tokens up to ``blocks[b]`` blocks past ``s``."""
    L = bd.spec.block_size
    g = torch.Generator().manual_seed(seed)
    seq = torch.tensor([int(response_block_start(int(p), L)) + k * L for p, k in zip(prompt_lens, blocks)])
    ids = torch.full((len(blocks), int(seq.max())), bd.spec.pad_token_id, dtype=torch.long)
    for b, p in enumerate(prompt_lens.tolist()):
        ids[b, :p] = prompt_ids[b, :p]
        ids[b, p:int(seq[b])] = torch.randint(0, VOCAB_WORDS, (int(seq[b]) - p,), generator=g)
    return ids, seq


def _brute_force(bd, ids, prompt_lens, seq_lens, policy, vision_of=None):
    """Per row and block: ``block_generate`` after the stream's own prefix, one block at a time."""
    L = bd.spec.block_size
    den = HFDenoiser(bd)
    tokens, steps = [], []
    for b in range(ids.shape[0]):
        p, n = int(prompt_lens[b]), int(seq_lens[b])
        row_t, row_s = [], []
        start = p
        while start < n:
            prefix = ids[b:b + 1, :start]
            new = L - start % L
            out = block_generate(den, prefix, torch.tensor([start]), None if vision_of is None else vision_of(b),
                                 policy=policy, max_new_tokens=new, stop_at_eos=False, record=TraceSpec(top_k=None))
            row_t += out.sequences[0].tolist()
            row_s += out.traces[0].step.tolist()
            start += new
        tokens.append(row_t)
        steps.append(row_s)
    return tokens, steps


def _rows(t: torch.Tensor, valid: torch.Tensor) -> list[list[int]]:
    return [t[b][valid[b]].tolist() for b in range(t.shape[0])]


@pytest.mark.parametrize("L,shift", [(1, True), (2, False), (4, True), (4, False)])
@pytest.mark.parametrize("policy", [ConfidenceThreshold(0.6), FixedCount(1), OneStep()], ids=["tau", "fixed", "onestep"])
def test_relabel_equals_sequential_decoding_after_each_prefix(L, shift, policy):
    bd = variant(text_bd(), L, shift)
    prompts, plen = random_prompts([5, 8, 3], seed=L)
    ids, seq = _streams(bd, prompts, plen, [3, 1, 4], seed=L + 1)
    lab = relabel_blocks(bd, ids, plen, seq, policy=policy)
    ref_t, ref_s = _brute_force(bd, ids, plen, seq, policy)
    assert _rows(lab.tokens, lab.gen_valid) == ref_t
    assert _rows(lab.commit_step, lab.gen_valid) == ref_s
    assert lab.meta["relabel_forwards"] <= L
    # Not a copy of the context: the teacher's answers differ from the random stream.
    ctx = ids.gather(1, lab.gen_index)
    assert bool(((lab.tokens != ctx) & lab.gen_valid).any())
    assert len(set(sum(ref_t, []))) >= 4


@pytest.mark.parametrize("shift", [True, False])
def test_relabel_reproduces_the_teachers_own_trajectories(shift):
    """Relabelling the teacher's decode with the teacher gives back its tokens, commit steps,
    block steps and commit rows (the collected trajectory, EOS block included)."""
    bd = variant(text_bd(), 4, shift, eos=7)  # an ordinary token as EOS: rows end at different blocks
    prompts, plen = random_prompts([6, 9, 4, 11], seed=3)
    examples = [{"id": str(b), "prompt_ids": prompts[b, :int(plen[b])]} for b in range(4)]
    col = TrajectoryCollector(bd, policy=ConfidenceThreshold(0.5), max_new_tokens=20)
    batch = collate_records(col.collect(collate_prompts(examples, pad_token_id=bd.spec.pad_token_id)))
    assert len(set(batch.seq_lens.tolist())) > 1
    lab = relabel_blocks(bd, batch.input_ids, batch.prompt_lens, batch.seq_lens,
                         policy=ConfidenceThreshold(0.5))
    v = batch.gen_valid
    assert torch.equal(lab.gen_index, batch.gen_index) and torch.equal(lab.gen_valid, v)
    assert torch.equal(lab.tokens[v], batch.tokens[v])
    assert torch.equal(lab.commit_step[v], batch.commit_step[v])
    assert torch.equal(lab.block_steps[v], batch.block_steps[v])
    assert torch.allclose(lab.target.probs[v], batch.target.probs[v], atol=1e-9)
    assert int(batch.block_steps[v].max()) > 1


def test_relabel_vision_language():
    bd = variant(vl_bd(), 4, True)
    rows = [image_prompt(bd, 2, 3, seed=1), image_prompt(bd, 1, 6, seed=2)]
    width = max(map(len, rows))
    prompts = torch.full((2, width), bd.spec.pad_token_id)
    for b, r in enumerate(rows):
        prompts[b, :len(r)] = torch.tensor(r)
    plen = torch.tensor([len(r) for r in rows])
    vis = images(bd, 2, seed=4)
    ids, seq = _streams(bd, prompts, plen, [3, 2], seed=5)
    policy = ConfidenceThreshold(0.6)
    lab = relabel_blocks(bd, ids, plen, seq, vis, policy=policy)
    per = int(vis.image_grid_thw[0].prod())
    ref_t, ref_s = _brute_force(bd, ids, plen, seq, policy, vision_of=lambda b: type(vis)(
        vis.pixel_values[b * per:(b + 1) * per], vis.image_grid_thw[b:b + 1]))
    assert _rows(lab.tokens, lab.gen_valid) == ref_t
    assert _rows(lab.commit_step, lab.gen_valid) == ref_s


def test_relabel_rejects_streams_off_the_block_grid():
    bd = variant(text_bd(), 4, True)
    prompts, plen = random_prompts([5], seed=0)
    ids, seq = _streams(bd, prompts, plen, [2])
    with pytest.raises(ValueError, match="block boundary"):
        relabel_blocks(bd, ids[:, :-1], plen, seq - 1)
    with pytest.raises(ValueError, match="at least one generated"):
        relabel_blocks(bd, ids[:, :4], torch.tensor([4]), torch.tensor([4]))


def test_student_rollout_batch_pairs_student_context_with_teacher_targets():
    teacher = copy.deepcopy(variant(text_bd(), 4, True, eos=7))  # the collector freezes it
    student = variant(text_bd(), 4, True, eos=7)  # same weights, decoded one-step: another policy
    prompts, plen = random_prompts([6, 9, 4], seed=8)
    pb = PromptBatch(prompts, plen, ["a", "b", "c"])
    rollout = StudentRolloutCollector(teacher, max_new_tokens=14, policy=ConfidenceThreshold(0.5))
    batch = rollout(student, pb)
    # Clean streams = the student's one-step decode, EOS-padded to the block boundary.
    out = block_generate(HFDenoiser(student), prompts, plen, policy=OneStep(), max_new_tokens=14)
    for b, s in enumerate(out.sequences):
        p = int(plen[b])
        assert batch.input_ids[b, p:p + len(s)].tolist() == s.tolist()
        assert bool((batch.input_ids[b, p + len(s):int(batch.seq_lens[b])] == 7).all())
    ids, seq = rollout_streams(student, pb, 14)
    assert torch.equal(ids, batch.input_ids) and torch.equal(seq, batch.seq_lens)
    # Targets = the teacher's relabelling; response_lens = its first EOS.
    lab = relabel_blocks(teacher, ids, plen, seq, policy=ConfidenceThreshold(0.5))
    assert torch.equal(batch.tokens, lab.tokens)
    for b in range(3):
        row = batch.tokens[b][batch.gen_valid[b]].tolist()
        assert int(batch.response_lens[b]) == (row.index(7) if 7 in row else len(row))
    assert bool(((batch.tokens != batch.input_ids.gather(1, batch.gen_index)) & batch.gen_valid).any())
    # The DCD loss trains on it, and only the student gets gradients.
    system = DCDSystem(student_copy := copy.deepcopy(variant(text_bd(), 4, True, eos=7)).requires_grad_(True), OptimConfig(lr=1e-3),
                       target=HardTokenTarget())
    loss, _ = system.compute_loss(batch)
    assert torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None for p in student_copy.parameters())
    with pytest.raises(ValueError, match="block size"):
        rollout(variant(text_bd(), 2, True, eos=7), pb)
