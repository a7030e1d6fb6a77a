"""On-policy DCD: the teacher relabels every block of the student's own decodes.

Offline DCD trains the one-step student on the teacher's trajectories, so block ``k`` is always
learnt after the *teacher's* blocks ``< k``. At inference the student reads its *own* earlier
blocks, and its errors compound (exposure bias). The fix is DAgger's: decode prompts with the
student, then ask the teacher what it would have written in each block given the student's
prefix, and train on that.

:func:`relabel_blocks` computes those answers for every block of a batch of clean streams *at
once*: the RAD layout (DESIGN.md §2) already conditions each noisy block on the clean blocks
before it, so one forward denoises all blocks in parallel, each exactly as the sequential
sampler would denoise it after that prefix (same policy, same commit order, same ties). The
clean streams' KV is computed once and cached; each of the at most ``L`` steps then runs only
the noisy copy (decoding a stream's ``m`` blocks one after another would take up to ``m * L``
forwards). On the teacher's own decode it reproduces the teacher's tokens (tested).

:class:`StudentRolloutCollector` wraps rollout + relabelling into a :class:`DistillBatch` whose
clean streams are the student's and whose targets are the teacher's, for
:class:`~blockdistill.lightning.dcd.DCDSystem` (``on_policy=...``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from blockdistill.distill.batch import DistillBatch
from blockdistill.distill.prompts import PromptBatch
from blockdistill.distill.records import response_length
from blockdistill.layout import (
    block_id,
    clean_layout,
    clean_length,
    num_blocks,
    on_block_boundary,
    padding_mask,
    rad_layout,
    response_block_start,
)
from blockdistill.losses.rows import TokenDists
from blockdistill.models.adapter import BlockDiffusionLM
from blockdistill.models.families import VisionInputs
from blockdistill.sampling.block import block_generate
from blockdistill.sampling.hf import HFDenoiser
from blockdistill.sampling.policies import ConfidenceThreshold, OneStep, UnmaskPolicy, proposals

__all__ = ["StudentRolloutCollector", "relabel_blocks", "rollout_streams"]


@torch.no_grad()
def relabel_blocks(teacher: BlockDiffusionLM, input_ids: Tensor, prompt_lens: Tensor, seq_lens: Tensor,
                   vision: VisionInputs | None = None, *, image_rows: Tensor | None = None,
                   example_ids: list[str] | None = None, policy: UnmaskPolicy | None = None,
                   top_k: int | None = None) -> DistillBatch:
    """Decode every generated block of each clean stream with ``teacher``, all blocks at once.

    Block ``k`` of row ``b`` is denoised from all-masks (the prompt tail stays visible in the
    first block) given ``input_ids[b]``'s clean blocks before it, with ``policy`` (default:
    confidence threshold 0.85): exactly what ``block_generate`` would commit in that block after
    that prefix. The streams' own tokens in the block being decoded are never shown.

    Args:
        input_ids: long ``(B, n)`` clean streams (prompt + generated blocks), right-padded.
        prompt_lens, seq_lens: ``(B,)``; every ``seq_lens`` is a block boundary.
        image_rows: long ``(num_images,)``: row of each image (carried into the batch).
        example_ids: row ids (default: the row numbers).
        top_k: keep the teacher's commit rows as top-k (None: full rows).
    Returns:
        A :class:`DistillBatch` whose clean streams are ``input_ids`` and whose ``tokens``,
        ``commit_step``, ``block_steps`` and ``target`` are the teacher's decode of each block;
        ``response_lens`` is the teacher's first EOS (later positions train towards EOS: the
        teacher would have stopped there); ``meta["relabel_forwards"]`` counts its forwards (<= L).
    """
    policy = policy if policy is not None else ConfidenceThreshold()
    spec = teacher.spec
    L, dev = spec.block_size, input_ids.device
    if not bool(on_block_boundary(seq_lens, L).all()):
        raise ValueError(f"clean streams must end on a block boundary (block size {L}), got lengths "
                         f"{seq_lens.tolist()}")
    if bool((seq_lens <= prompt_lens).any()):
        raise ValueError("every stream needs at least one generated position (seq_lens > prompt_lens)")
    b, n = input_ids.shape
    glen = seq_lens - prompt_lens
    g_max = int(glen.max())
    ar_g = torch.arange(g_max, device=dev)[None]
    gen_valid = ar_g < glen[:, None]
    gen_index = torch.where(gen_valid, prompt_lens[:, None] + ar_g, prompt_lens[:, None])
    # Grid of whole blocks from each row's first response block: (B, NB * L) slots.
    start = response_block_start(prompt_lens, L)
    slot = (gen_index - start[:, None]).masked_fill(~gen_valid, 0)
    nb = num_blocks(int((seq_lens - start).max()), L)

    def grid(values: Tensor, fill) -> Tensor:
        return _scatter_valid(torch.full((b, nb * L), fill, dtype=values.dtype, device=dev), slot, values, gen_valid)

    ctx = _CleanContext(teacher, input_ids, prompt_lens, seq_lens, vision)
    pending = gen_valid.clone()
    shown = input_ids.clone()  # tokens the noisy copy shows where it is not masked
    tokens = torch.full((b, g_max), spec.eos_token_id, dtype=torch.long, device=dev)
    step_of = torch.ones(b, g_max, dtype=torch.long, device=dev)
    rows: TokenDists | None = None
    forwards = 0
    for step in range(1, L + 1):
        if not bool(pending.any()):
            break
        masked = _scatter_valid(torch.zeros(b, n, dtype=torch.bool, device=dev), gen_index, pending, gen_valid)
        logits = ctx.logits(masked, shown, gen_index)
        forwards += 1
        tok, conf = proposals(logits, spec.mask_token_id, policy.needs_confidence)
        cand = grid(pending, False).view(b * nb, L)
        conf_g = None if conf is None else grid(conf, 0.0).view(b * nb, L)
        commit_g = policy(conf_g, cand, step) & cand
        commit = commit_g.view(b, nb * L).gather(1, slot) & pending
        tokens = torch.where(commit, tok, tokens)
        step_of = torch.where(commit, step, step_of)
        new = TokenDists.from_probs(torch.softmax(logits, -1), top_k)
        rows = new if rows is None else new.where(commit, rows)
        shown = _scatter_valid(shown, gen_index, tok, commit)
        pending = pending & ~commit
    if bool(pending.any()):  # a policy that commits nothing leaves masks behind
        raise RuntimeError(f"policy {policy!r} left masked positions after {L} steps")
    per_block = grid(step_of, 1).view(b, nb, L).amax(-1)
    block_steps = per_block.gather(1, block_id(slot, L))
    assert rows is not None
    is_eos = spec.is_eos(tokens) & gen_valid
    first_eos = torch.where(is_eos, ar_g, g_max).min(1).values
    return DistillBatch(
        example_ids=list(example_ids) if example_ids is not None else [str(i) for i in range(b)],
        input_ids=input_ids, prompt_lens=prompt_lens, seq_lens=seq_lens,
        response_lens=torch.minimum(first_eos, glen), gen_index=gen_index, gen_valid=gen_valid, tokens=tokens,
        commit_step=torch.where(gen_valid, step_of, 1), block_steps=torch.where(gen_valid, block_steps, 1),
        target=rows, block_size=L, eos_token_id=spec.eos_token_id, vision=vision, image_rows=image_rows,
        meta={"relabel_forwards": forwards},
    )


class _CleanContext:
    """The RAD view of fixed clean streams with their KV cached: the clean stream runs once, then
    each call runs only the noisy copy (block-causal rules of DESIGN.md §2, the same slots and
    masks as :meth:`BlockDiffusionLM.diffusion_logits`)."""

    def __init__(self, bd: BlockDiffusionLM, input_ids: Tensor, prompt_lens: Tensor, seq_lens: Tensor,
                 vision: VisionInputs | None) -> None:

        b, n = input_ids.shape
        L = bd.spec.block_size
        self.bd, self.n, self.input_ids = bd, n, input_ids
        self.lay = rad_layout(prompt_lens, seq_lens, L, width=n)
        self.clean = bd.embed(input_ids, vision)
        pos_clean, _ = bd.positions(input_ids, padding_mask(seq_lens, n), vision)
        self.pos = self.lay.positions(pos_clean)
        self.cache = bd.new_cache()
        self.hidden_clean = bd.run(self.clean, pos_clean, clean_layout(seq_lens, L, width=n), cache=self.cache)
        self.q = self.lay.clean_index.shape[1] - n
        self.mask = bd.render_mask(self.lay, self.clean.dtype, num_queries=self.q)

    def logits(self, masked: Tensor, shown: Tensor, targets: Tensor) -> Tensor:
        """``(B, K, V)`` logits at clean indices ``targets``; the noisy copy masks ``masked`` and shows
        ``shown`` elsewhere (the clean embedding, image features included, where it equals the stream)."""
        bd, n = self.bd, self.n
        noisy = bd.noisy_copy(self.clean, self.lay, masked, self.input_ids, shown)
        hidden = bd.run(noisy, self.pos[..., n:], None, num_queries=self.q, cache=self.cache, attn_mask=self.mask)
        self.cache.crop(-self.q)  # back to the clean stream for the next step
        return bd.logits_at(torch.cat([self.hidden_clean, hidden], 1), self.lay, targets)


def _scatter_valid(dst: Tensor, index: Tensor, src: Tensor, valid: Tensor) -> Tensor:
    """``dst`` with ``src`` written at ``index`` where ``valid`` (along dim 1). Invalid entries go to
    a scratch column, so padding that shares an index with a real entry never overwrites it."""
    out = torch.cat([dst, dst[:, :1]], 1)
    out = out.scatter(1, torch.where(valid, index, dst.shape[1]), src.to(dst.dtype))
    return out[:, :-1].contiguous()


@torch.no_grad()
def rollout_streams(student: BlockDiffusionLM, prompts: PromptBatch, max_new_tokens: int,
                    policy: UnmaskPolicy | None = None, cache: str = "fused") -> tuple[Tensor, Tensor]:
    """The student's decode of ``prompts`` as clean streams ``(input_ids (B, n), seq_lens (B,))``:
    prompt + response (up to its first EOS), then EOS to the block boundary, of
    :func:`~blockdistill.layout.clean_length` (DESIGN.md §2, as every clean stream)."""
    was_training = student.training
    student.eval()
    try:
        out = block_generate(HFDenoiser(student), prompts.prompt_ids, prompts.prompt_lens, prompts.vision,
                             policy=policy if policy is not None else OneStep(), cache=cache,
                             max_new_tokens=max_new_tokens)
    finally:
        student.train(was_training)
    spec = student.spec
    P = prompts.prompt_lens
    resp = torch.tensor([response_length(s, spec.eos_token_ids) for s in out.sequences], device=P.device)
    seq = clean_length(P, resp, spec.block_size)
    ids = torch.full((len(P), int(seq.max())), spec.pad_token_id, dtype=torch.long, device=P.device)
    for i, s in enumerate(out.sequences):
        p, r = int(P[i]), int(resp[i])
        ids[i, :p] = prompts.prompt_ids[i, :p]
        ids[i, p:int(seq[i])] = spec.eos_token_id
        ids[i, p:p + r] = s[:r]
    return ids, seq


class StudentRolloutCollector(nn.Module):
    """DAgger for DCD: prompts in, a :class:`DistillBatch` out whose clean streams are the
    student's own one-step decodes and whose targets are the teacher's relabelling of each block.

    The teacher is frozen and stays in eval mode. The batch's ``response_lens`` is the teacher's
    first EOS: positions up to it carry its tokens, later ones are trained towards EOS (the
    teacher would have stopped there).
    """

    def __init__(self, teacher: BlockDiffusionLM, *, max_new_tokens: int, policy: UnmaskPolicy | None = None,
                 top_k: int | None = None) -> None:
        super().__init__()
        teacher.requires_grad_(False)
        teacher.eval()
        self.teacher = teacher
        self.max_new_tokens, self.policy, self.top_k = max_new_tokens, policy, top_k

    def train(self, mode: bool = True) -> StudentRolloutCollector:
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, student: BlockDiffusionLM, prompts: PromptBatch) -> DistillBatch:
        spec = self.teacher.spec
        if student.spec.block_size != spec.block_size:
            raise ValueError(f"student block size {student.spec.block_size} != teacher's {spec.block_size}")
        ids, seq = rollout_streams(student, prompts, self.max_new_tokens)
        return relabel_blocks(self.teacher, ids, prompts.prompt_lens, seq, prompts.vision,
                              image_rows=prompts.image_rows, example_ids=list(prompts.example_ids),
                              policy=self.policy, top_k=self.top_k)
