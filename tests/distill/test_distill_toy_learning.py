"""Distilling a multimodal toy teacher into a tiny transformer, judged by one-step decoding.

The teacher is an exact joint over 4-token blocks (3 content tokens + EOS) per prompt; about
a third of the prompts are "traps" whose per-position marginals' argmax is a block of zero
probability. A tiny Qwen2 wrapped in ``BlockDiffusionLM`` is trained from scratch with the
DCD system's loss on the teacher's recorded trajectories, once with the commit-step target
(DCD) and once with the first-step target (mean field), then decodes every prompt with the
one-step sampler. Guards against a target builder, weight schedule or training layout that
loses the joint structure DCD is about.
"""

from __future__ import annotations

import random

import torch

from blockdistill import BlockDiffusionLM
from blockdistill.config import OptimConfig
from blockdistill.distill import (
    CommitStepTarget,
    FirstStepTarget,
    TrajectoryCollector,
    collate_prompts,
    collate_records,
)
from blockdistill.lightning.dcd import DCDSystem
from blockdistill.sampling.block import block_generate
from blockdistill.sampling.hf import HFDenoiser
from blockdistill.sampling.policies import OneStep
from blockdistill.testing import tiny_qwen2, tiny_tokenizer
from blockdistill.testing.toy import ToyJoint

L, EOS, MASK, V = 4, 89, 96, 97  # tiny_tokenizer(96): EOS = 89; [MASK] is added as id 96
CONTENT = list(range(8))
PROMPT_TOKENS = list(range(20, 60))
N_PROMPTS, STEPS = 100, 300


def trap_joint(r: random.Random) -> dict:
    """(a, b), (c, a), (d, a) at two of three slots, weights w1 > w2, w3 and w2 + w3 > w1."""
    a, b, c, d = r.sample(CONTENT, 4)
    w1 = r.randint(10, 20)
    w2 = r.randint(w1 // 2 + 2, w1 - 2)
    w3 = r.randint(max(w1 - w2 + 2, 1), w1 - 2)
    i, j = sorted(r.sample(range(3), 2))
    fill = r.choice(CONTENT)
    out = {}
    for (x, y), w in zip([(a, b), (c, a), (d, a)], [w1, w2, w3]):
        block = [fill] * 3
        block[i], block[j] = x, y
        out[(*block, EOS)] = w / (w1 + w2 + w3)
    return out


def plain_joint(r: random.Random) -> dict:
    blocks: set = set()
    n = r.randint(1, 3)
    while len(blocks) < n:
        blocks.add((*(r.choice(CONTENT) for _ in range(3)), EOS))
    weights = [r.randint(1, 10) for _ in blocks]
    return {b: w / sum(weights) for b, w in zip(blocks, weights)}


def teacher_margin(toy: ToyJoint, prefix: tuple) -> float:
    """Smallest top-1 minus top-2 probability over the teacher's commits (0 = a tie)."""
    vis, margin = [MASK] * L, 1.0
    while MASK in vis:
        p = toy.marginals(prefix, vis)
        p[:, MASK] = 0
        top = p.topk(2, -1).values
        open_ = [j for j in range(L) if vis[j] == MASK]
        commit = [j for j in open_ if top[j, 0] > 0.85] or [max(open_, key=lambda j: (float(top[j, 0]), -j))]
        for j in commit:
            margin = min(margin, float(top[j, 0] - top[j, 1]))
            vis[j] = int(p[j].argmax())
    return margin


def toy_teacher(seed: int = 0) -> ToyJoint:
    r = random.Random(seed)
    table: dict = {}
    while len(table) < N_PROMPTS:
        prompt = tuple(r.sample(PROMPT_TOKENS, 4))
        joint = trap_joint(r) if r.random() < 0.5 else plain_joint(r)
        single = ToyJoint({prompt: joint}, block_size=L, vocab_size=V, eos_token_id=EOS, mask_token_id=MASK)
        # Ties in the teacher's conditionals would make even a perfect student's argmax arbitrary.
        if teacher_margin(single, prompt) >= 0.1:
            table[prompt] = joint
    return ToyJoint(table, block_size=L, vocab_size=V, eos_token_id=EOS, mask_token_id=MASK)


def distill_and_decode(toy: ToyJoint, batch, prompts, target) -> float:
    student = BlockDiffusionLM.from_causal_lm(tiny_qwen2(seed=0), tiny_tokenizer(), block_size=L).train()
    assert (student.spec.mask_token_id, student.spec.eos_token_id) == (MASK, EOS)
    system = DCDSystem(student, OptimConfig(), target=target)
    opt = torch.optim.AdamW(student.parameters(), lr=3e-3, weight_decay=0.0)
    torch.manual_seed(0)
    for _ in range(STEPS):
        loss, _ = system.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    student.eval()
    ids = torch.tensor([list(p) for p in prompts])
    out = block_generate(HFDenoiser(student), ids, torch.full((len(prompts),), 4), policy=OneStep(),
                         max_new_tokens=L)
    coherent = 0
    for p, seq in zip(prompts, out.sequences):
        block = seq[:L].tolist()
        block += [EOS] * (L - len(block))  # the sampler cuts after EOS; the rest of the block is EOS
        coherent += toy.prob(p, block) > 0
    return coherent / len(prompts)


def test_dcd_student_decodes_coherent_blocks_where_mean_field_does_not() -> None:
    toy = toy_teacher()
    prompts = list(toy.table)
    traps = sum(toy.prob(p, toy.mean_field_block(p)) == 0 for p in prompts)
    assert traps >= 20, "the toy should contain enough multimodal traps"
    rows = [{"id": str(i), "prompt_ids": list(p)} for i, p in enumerate(prompts)]
    pb = collate_prompts(rows, EOS)
    records = TrajectoryCollector(toy, max_new_tokens=L, record_first_step=True)(
        pb.prompt_ids, pb.prompt_lens, pb.example_ids)
    batch = collate_records(records)
    dcd = distill_and_decode(toy, batch, prompts, CommitStepTarget())
    mean_field = distill_and_decode(toy, batch, prompts, FirstStepTarget())
    print(f"\none-step coherent blocks: DCD {dcd:.1%}, mean-field {mean_field:.1%} "
          f"({traps}/{len(prompts)} prompts are mean-field traps)")
    assert dcd >= 0.99
    assert mean_field <= dcd - 0.15
