"""``generate``: transformers' calling conventions on the block samplers (padding either side, vision
inputs, per-row forwards, AR through the block sampler) and streaming through transformers' own
``TextStreamer`` / ``TextIteratorStreamer``."""

import threading

import pytest
import torch
from transformers import TextIteratorStreamer, TextStreamer

from blockdistill.sampling import ConfidenceThreshold, OneStep, ar_generate, block_generate
from blockdistill.sampling.generate import generate, right_align
from blockdistill.testing import tiny_tokenizer
from tests.sampling.helpers import (
    denoiser,
    image_prompt,
    images,
    pad_rows,
    random_prompts,
    text_bd,
    variant,
    vl_bd,
)


def _left_pad(ids, lens, pad):
    out = torch.full_like(ids, pad)
    mask = torch.zeros_like(ids)
    for b, n in enumerate(lens.tolist()):
        out[b, ids.shape[1] - n:] = ids[b, :n]
        mask[b, ids.shape[1] - n:] = 1
    return out, mask


@pytest.mark.parametrize("policy,cache", [("threshold", "fused"), ("one_step", "fused"), ("threshold", "block"),
                                          ("one_step", "none")])
def test_generate_equals_the_block_sampler_left_or_right_padded(policy, cache):
    bd = variant(text_bd(), 4, False, eos=7)
    ids, lens = random_prompts([3, 9, 6], seed=1)
    ref = block_generate(denoiser(text_bd(), 4, False, eos=7), ids, lens,
                         policy=ConfidenceThreshold(0.6) if policy == "threshold" else OneStep(), cache=cache,
                         max_new_tokens=14)
    mask = (torch.arange(ids.shape[1])[None] < lens[:, None]).long()
    right = generate(bd, ids, mask, policy=policy, tau=0.6 if policy == "threshold" else None, cache=cache,
                     max_new_tokens=14)
    lids, lmask = _left_pad(ids, lens, bd.spec.pad_token_id)
    left = generate(bd, lids, lmask, policy=policy, tau=0.6 if policy == "threshold" else None, cache=cache,
                    max_new_tokens=14)
    want = [s.tolist() for s in ref.sequences]
    assert [s.tolist() for s in right.generated] == want == [s.tolist() for s in left.generated]
    assert len({t for s in want for t in s}) >= 4  # diverse, so equality means something
    # sequences: the inputs as given, then the new tokens right-padded
    assert torch.equal(left.sequences[:, : ids.shape[1]], lids)
    for b, s in enumerate(want):
        assert left.sequences[b, ids.shape[1]: ids.shape[1] + len(s)].tolist() == s
    assert right.stats.nfe == ref.stats.nfe and right.stats.row_forwards == ref.stats.row_forwards


def test_row_forwards_are_each_rows_own_nfe():
    ids, lens = random_prompts([5, 9, 6], seed=2)
    mask = (torch.arange(ids.shape[1])[None] < lens[:, None]).long()
    free = generate(text_bd(), ids, mask, policy="threshold", tau=0.7, max_new_tokens=20, stop_at_eos=False)
    bd = variant(text_bd(), 4, False, eos=free.generated[0].tolist()[5])  # row 0 stops early
    batch = generate(bd, ids, mask, policy="threshold", tau=0.7, max_new_tokens=20)
    alone = [generate(bd, ids[b: b + 1, : lens[b]], policy="threshold", tau=0.7, max_new_tokens=20)
             for b in range(3)]
    assert [s.tolist() for s in batch.generated] == [a.generated[0].tolist() for a in alone]
    assert max(batch.row_forwards) == batch.stats.nfe
    assert sum(f - 1 for f in batch.row_forwards) == batch.stats.row_forwards  # prefill ran once for all
    assert all(a.row_forwards == [a.stats.nfe] for a in alone)
    assert len(set(batch.row_forwards)) > 1  # rows finished at different times


def test_policy_ar_is_the_ar_baseline():
    bd = text_bd()
    ids, lens = random_prompts([4, 8], seed=3)
    ref = ar_generate(bd, ids, lens, max_new_tokens=10, stop_at_eos=False)
    mask = (torch.arange(ids.shape[1])[None] < lens[:, None]).long()
    out = generate(bd, ids, mask, policy="ar", max_new_tokens=10, stop_at_eos=False)
    assert [s.tolist() for s in out.generated] == [s.tolist() for s in ref.sequences]
    assert out.row_forwards == [ref.stats.nfe] * 2 == [10, 10]  # prefill gives token 1, one forward per later token


def test_vision_inputs_left_padded():
    bd = vl_bd()
    rows = [image_prompt(bd, 2, 3, seed=0), image_prompt(bd, 5, 1, seed=1)]
    ids, lens = pad_rows(rows, bd.spec.pad_token_id)
    vis = images(bd, 2)
    ref = block_generate(denoiser(bd, 4, False), ids, lens, vis, policy=OneStep(), max_new_tokens=12,
                         stop_at_eos=False)
    lids, lmask = _left_pad(ids, lens, bd.spec.pad_token_id)
    out = generate(bd, lids, lmask, pixel_values=vis.pixel_values, image_grid_thw=vis.image_grid_thw,
                   policy="one_step", max_new_tokens=12, stop_at_eos=False)
    assert [s.tolist() for s in out.generated] == [s.tolist() for s in ref.sequences]
    assert len({t for s in ref.sequences for t in s.tolist()}) >= 4


class _Recorder:
    """A streamer that records what it is given and when (the forward count at each put)."""

    def __init__(self, counter):
        self.puts, self.counter, self.ended = [], counter, False

    def put(self, value):
        self.puts.append((value.tolist(), self.counter[0]))

    def end(self):
        self.ended = True


@pytest.mark.parametrize("cache", ["fused", "block", "none"])
def test_streaming_is_block_by_block_and_adds_up(cache):
    bd = variant(text_bd(), 4, False, eos=7)
    ids, _ = random_prompts([6], seed=4)
    count = [0]

    def on_step(view):
        count[0] += 1

    rec = _Recorder(count)
    out = generate(bd, ids, policy="one_step", cache=cache, max_new_tokens=18, stop_at_eos=False, streamer=rec,
                   on_step=on_step)
    gen = out.generated[0].tolist()
    assert rec.puts[0][0] == [ids[0].tolist()] and rec.ended
    chunks = [p for p, _ in rec.puts[1:]]
    assert [t for c in chunks for t in c] == gen  # everything once, in order
    assert [len(c) for c in chunks] == [2, 4, 4, 4, 4]  # 6-token prompt: block 0 holds 2 new tokens
    assert len({at for _, at in rec.puts[1:]}) == len(chunks)  # each block arrived at its own forward


def test_streaming_cuts_at_eos_like_the_output():
    bd = text_bd()
    ids, _ = random_prompts([5], seed=5)
    free = generate(bd, ids, policy="one_step", max_new_tokens=16, stop_at_eos=False).generated[0].tolist()
    eos = free[6]  # a token the model produces mid-block: make it the EOS
    rec = _Recorder([0])
    out = generate(bd, ids, policy="one_step", max_new_tokens=16, eos_token_id=eos, streamer=rec)
    gen = out.generated[0].tolist()
    assert gen == free[: free.index(eos) + 1]
    assert [t for p, _ in rec.puts[1:] for t in p] == gen


def test_transformers_text_streamers_work_unchanged(capsys):
    tok = tiny_tokenizer()
    bd = variant(text_bd(), 4, False, eos=7)
    ids, _ = random_prompts([6], seed=6)
    out = generate(bd, ids, policy="one_step", max_new_tokens=16, stop_at_eos=False,
                   streamer=TextStreamer(tok, skip_prompt=True))
    text = tok.decode(out.generated[0], skip_special_tokens=True)
    assert capsys.readouterr().out.strip() == text.strip() and len(text.split()) >= 8

    it = TextIteratorStreamer(tok, skip_prompt=True)
    res = {}
    th = threading.Thread(target=lambda: res.setdefault("out", generate(
        bd, ids, policy="one_step", max_new_tokens=16, stop_at_eos=False, streamer=it)))
    th.start()
    pieces = list(it)
    th.join()
    assert "".join(pieces).strip() == text.strip() and len(pieces) >= 2


def test_one_step_view_shows_the_block_still_masked():
    bd = variant(text_bd(), 4, False, eos=7)
    ids, _ = random_prompts([8], seed=7)
    views = []
    out = generate(bd, ids, policy="one_step", max_new_tokens=12, stop_at_eos=False, on_step=views.append)
    live = [v for v in views if not v.done]
    assert all(v.draft == [bd.spec.mask_token_id] * 4 for v in live)  # one step: all masks, then final
    assert [len(v.final) for v in live] == [0, 4, 8]
    assert views[-1].done and views[-1].final == out.generated[0].tolist()


def test_bad_inputs_are_named():
    bd = text_bd()
    ids, _ = random_prompts([6], seed=8)
    with pytest.raises(ValueError, match="set temperature > 0"):
        generate(bd, ids, top_k=5)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        generate(bd, ids, temperature=-1.0)
    with pytest.raises(ValueError, match="2 generators for a batch of 1"):
        generate(bd, ids, temperature=0.7, generator=[torch.Generator(), torch.Generator()])
    with pytest.raises(ValueError, match="not both"):
        generate(bd, ids, temperature=0.7, generator=torch.Generator(), seed=1)
    with pytest.raises(ValueError, match="top_p must be in"):
        generate(bd, ids, temperature=0.7, top_p=0.0)
    with pytest.raises(ValueError, match=r"rows \[0\] are not one non-empty run"):
        right_align(ids, torch.tensor([[1, 0, 1, 1, 1, 1]]), 0)
    with pytest.raises(ValueError, match="an empty list of EOS ids"):
        generate(bd, ids, eos_token_id=[])
    with pytest.raises(ValueError, match="streamer takes one sequence"):
        generate(bd, torch.cat([ids, ids]), streamer=_Recorder([0]))
    assert generate(bd, ids, temperature=0.0, max_new_tokens=4).generated[0].shape[0] >= 1
