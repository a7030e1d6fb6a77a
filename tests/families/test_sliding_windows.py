"""Sliding-window attention (issue 16): the block mask is intersected with each layer's window,
per layer type, in training (RAD), the AR baseline and every cache mode.

Tiny models of every family that has windows get a window of 3 tokens (far shorter than the
sequences): Mistral-style configs on every layer (``sliding_window``), Qwen2/3 and Gemma-2/3 on
some layers only (``config.layer_types``), which reach the decoder as ``{layer type: mask}``.
Checks: at L=1 the wrapper equals HF's own sliding-window forward (and differs from the same
model without a window, so the window is in force); RAD ≡ full duplication; none ≡ block ≡ fused
≡ the brute-force no-cache reference; AR ≡ HF generate; a Hypothesis property of the mask
against a brute-force rule (block rule ∧ window); a family whose decoder takes one mask for
layers with different windows is refused naming the field.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blockdistill import BlockDiffusionLM
from blockdistill.layout import clean_layout, dense_mask, full_dup_layout, mask_mod, rad_layout
from blockdistill.models.attention import layer_windows
from blockdistill.sampling import FixedCount, HFDenoiser, OneStep, ar_generate, block_generate
from blockdistill.testing import tiny_tokenizer
from tests.families.tiny import EOS, VOCAB, prompts, rad_and_full_dup, tiny_model
from tests.sampling.helpers import as_lists, pad_rows, reference_block_decode, variant

W = 3
MIXED = ["sliding_attention", "full_attention"]
WINDOWED = {
    "mistral": dict(sliding_window=W), "mixtral": dict(sliding_window=W), "starcoder2": dict(sliding_window=W),
    "phi3": dict(sliding_window=W), "qwen3_moe": dict(sliding_window=W, use_sliding_window=True),
    "qwen2": dict(use_sliding_window=True, sliding_window=W, max_window_layers=1),
    "qwen3": dict(use_sliding_window=True, sliding_window=W, max_window_layers=1),
    "gemma2": dict(sliding_window=W, layer_types=MIXED), "gemma3_text": dict(sliding_window=W, layer_types=MIXED),
}
_BD: dict = {}


def windowed_bd(model_type: str) -> BlockDiffusionLM:
    if model_type not in _BD:
        _BD[model_type] = BlockDiffusionLM.from_causal_lm(tiny_model(model_type, **WINDOWED[model_type]),
                                                          tiny_tokenizer(VOCAB), block_size=4)
    return _BD[model_type]


def test_the_windows_are_read_per_layer_type():
    assert set(windowed_bd("mistral").windows.values()) == {W}
    for mt in ("qwen2", "gemma2", "gemma3_text"):
        assert windowed_bd(mt).windows == {"sliding_attention": W, "full_attention": None}, mt
    assert set(layer_windows(tiny_model("llama")).values()) == {None}


@pytest.mark.parametrize("model_type", sorted(WINDOWED))
def test_block_size_one_equals_hfs_own_sliding_window_forward(model_type):
    bd = windowed_bd(model_type)
    rows = prompts([12, 7, 10], seed=1)
    ids, lens = pad_rows(rows, EOS)
    unwindowed = tiny_model(model_type, **{**WINDOWED[model_type], "sliding_window": 512})
    with torch.no_grad():
        ours = bd.clean_logits(ids, lens, block_size=1)
        for b, r in enumerate(rows):
            theirs = bd.model(input_ids=torch.tensor([r])).logits[0].float()
            torch.testing.assert_close(ours[b, : len(r)], theirs, atol=1e-6, rtol=0)
        t = torch.tensor([rows[0]])
        free = unwindowed(input_ids=t).logits[0, :, :VOCAB].float()
        assert float((free - ours[0, : len(rows[0]), :VOCAB]).abs().max()) > 1e-3  # the window is in force


@pytest.mark.parametrize("model_type", sorted(WINDOWED))
def test_rad_equals_full_duplication_with_windows(model_type):
    bd = windowed_bd(model_type)
    args, rad, dup = rad_and_full_dup(bd, [3, 7], [9, 6])
    with torch.no_grad():
        free = BlockDiffusionLM(bd.model, bd.spec, attn_backend=bd.attn_backend)
        free.windows = {t: None for t in bd.windows}
        assert float((free.diffusion_logits(*args) - rad).abs().max()) > 1e-3  # training sees the window
    torch.testing.assert_close(rad, dup, atol=1e-6, rtol=0)


@pytest.mark.parametrize("shift", [False, True], ids=["noshift", "shift"])
@pytest.mark.parametrize("model_type", sorted(WINDOWED))
def test_cache_modes_agree_with_the_brute_force_reference_under_windows(model_type, shift):
    bd = variant(windowed_bd(model_type), 4, shift)
    rows = prompts([5, 10], seed=4)
    ids, lens = pad_rows(rows, EOS)
    for policy in (FixedCount(2), OneStep()):
        outs = {c: as_lists(block_generate(HFDenoiser(bd), ids, lens, policy=policy, cache=c, max_new_tokens=12,
                                           stop_at_eos=False)) for c in ("none", "block", "fused")}
        assert outs["none"] == outs["block"] == outs["fused"], policy
    for b, r in enumerate(rows):
        assert outs["fused"][b] == reference_block_decode(bd, r, 12, None)[:12]
    assert len({t for o in outs["fused"] for t in o}) >= 4


@pytest.mark.parametrize("model_type", sorted(WINDOWED))
def test_ar_baseline_equals_hf_generate_with_windows(model_type):
    bd = windowed_bd(model_type)
    rows = prompts([4, 9], seed=5)
    ids, lens = pad_rows(rows, EOS)
    ours = as_lists(ar_generate(bd, ids, lens, max_new_tokens=10))
    for b, r in enumerate(rows):
        t = torch.tensor([r])
        out = bd.model.generate(input_ids=t, attention_mask=torch.ones_like(t), max_new_tokens=10, do_sample=False,
                                suppress_tokens=[bd.spec.mask_token_id], eos_token_id=EOS, pad_token_id=EOS)
        assert ours[b] == out[0, len(r):].tolist(), b


def test_one_mask_decoder_with_mixed_windows_is_refused():
    """Mistral's decoder takes one mask for every layer; layer types that differ cannot be honoured."""
    model = tiny_model("mistral", sliding_window=W)
    model.config.layer_types = MIXED
    with pytest.raises(ValueError, match=r"model_type='mistral': its layers differ in sliding window "
                                         r"\(config.layer_types / sliding_window"):
        BlockDiffusionLM.from_causal_lm(model, tiny_tokenizer(VOCAB), block_size=4)


def _brute(lay, window):
    """The rule written out slot by slot (DESIGN.md §2) ∧ HF's window ``j > i - window``."""
    b, t = lay.clean_index.shape
    out = torch.zeros(b, 1, t, t, dtype=torch.bool)
    L = lay.block_size
    for r in range(b):
        for q in range(t):
            for k in range(t):
                qi, ki = int(lay.clean_index[r, q]), int(lay.clean_index[r, k])
                qn, kn = bool(lay.noisy[r, q]), bool(lay.noisy[r, k])
                if not bool(lay.valid[r, q]):
                    out[r, 0, q, k] = q == k
                    continue
                if not bool(lay.valid[r, k]):
                    continue
                if not qn:
                    ok = (not kn) and ki // L <= qi // L
                else:
                    ok = (not kn and ki // L < qi // L) or (kn and ki // L == qi // L)
                out[r, 0, q, k] = ok and (window is None or ki > qi - window)
    return out


@settings(max_examples=40, deadline=None)
@given(data=st.data(), L=st.integers(1, 4), window=st.one_of(st.none(), st.integers(1, 9)),
       kind=st.sampled_from(["clean", "rad", "full_dup"]))
def test_windowed_mask_equals_the_brute_force_rule(data, L, window, kind):
    n_rows = data.draw(st.integers(1, 2))
    seq = [data.draw(st.integers(1, 12)) for _ in range(n_rows)]
    prompt = [data.draw(st.integers(0, s - 1)) for s in seq]
    seq_lens, prompt_lens = torch.tensor(seq), torch.tensor(prompt)
    lay = {"clean": lambda: clean_layout(seq_lens, L), "rad": lambda: rad_layout(prompt_lens, seq_lens, L),
           "full_dup": lambda: full_dup_layout(seq_lens, L)}[kind]()
    want = _brute(lay, window)
    assert torch.equal(dense_mask(lay, window=window), want)
    q = data.draw(st.integers(1, lay.num_slots))
    assert torch.equal(dense_mask(lay, q, window), want[:, :, -q:])
    t = lay.num_slots
    bi, qi, ki = torch.meshgrid(torch.arange(lay.clean_index.shape[0]), torch.arange(t), torch.arange(t), indexing="ij")
    assert torch.equal(mask_mod(lay, window=window)(bi, 0, qi, ki), want[:, 0])
