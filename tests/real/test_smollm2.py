"""Every exactness claim of the library on real pretrained weights: SmolLM2-135M-Instruct
(30 layers), dequantized from its GGUF. Prompts are chat-templated; generations are short
(one cached forward costs ~0.1 s on 2 cores)."""

import json
import os
import shutil

import pytest
import torch

from blockdistill import BlockDiffusionLM
from blockdistill.data import BlockCollator
from blockdistill.models.gguf import KEY_FILE, cache_matches, gguf_key, smollm2_gguf
from blockdistill.sampling import FixedCount, HFDenoiser, OneStep, ar_generate, block_generate
from tests.real.conftest import chat_prompts, smollm2_dir
from tests.sampling.helpers import as_lists, pad_rows, variant


def test_the_cache_is_a_plain_model_that_saves_and_reloads(smollm2, tmp_path):
    """No quantizer stays attached: the dequantized model saves like any other and reloads with
    its block rules and the same logits."""
    bd, tok = smollm2
    assert getattr(bd.model, "hf_quantizer", None) is None
    assert "quantization_config" not in bd.model.config.to_dict()
    assert bd.model.config.num_hidden_layers == 30 and bd.model.config.model_type == "llama"
    bd.save_pretrained(tmp_path / "m", tokenizer=tok)
    back = BlockDiffusionLM.from_pretrained(tmp_path / "m")
    assert back.spec == bd.spec
    ids = torch.tensor([chat_prompts(tok)[0]])
    lens = torch.tensor([ids.shape[1]])
    with torch.no_grad():
        torch.testing.assert_close(back.clean_logits(ids, lens), bd.clean_logits(ids, lens), atol=0, rtol=0)


def test_a_partial_or_foreign_cache_is_not_used(tmp_path):
    """A cache missing a file (killed run), with a truncated key, or made from another file or
    transformers version does not match; the real one does."""
    real = smollm2_dir()
    key = gguf_key(smollm2_gguf())
    assert cache_matches(real, key)
    part = tmp_path / "c"
    shutil.copytree(real, part, ignore=shutil.ignore_patterns("model.safetensors"))
    assert not cache_matches(part, key)
    os.link(real / "model.safetensors", part / "model.safetensors")
    assert cache_matches(part, key)
    assert not cache_matches(part, {**key, "transformers": "0.0"})
    assert not cache_matches(part, {**key, "sha256": "0" * 64})
    (part / KEY_FILE).write_text(json.dumps(key)[:20])
    assert not cache_matches(part, key)


def _hf_greedy(model, ids, n):
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                         pad_token_id=2, eos_token_id=2)
    return out[0, ids.shape[1]:].tolist()


def test_ar_baseline_equals_hf_generate_on_chat_prompts(smollm2):
    """Batched (right-padded prompts of different lengths) AR decoding equals HF's own greedy
    ``generate`` row by row. The new [MASK] row of the head is never the argmax here."""
    bd, tok = smollm2
    rows = chat_prompts(tok)
    ids, lens = pad_rows(rows, bd.spec.pad_token_id)
    ours = as_lists(ar_generate(bd, ids, lens, max_new_tokens=10))
    theirs = [_hf_greedy(bd.model, torch.tensor([r]), 10) for r in rows]
    assert ours == theirs
    assert tok.decode(ours[0]) == "The capital of France is Paris.<|im_end|>"  # stopped at its EOS
    assert ours[1][-1] != bd.spec.eos_token_id and len(ours[1]) == 10


@pytest.mark.parametrize("size", [4, 8])
@pytest.mark.parametrize("one_step", [False, True], ids=["multi", "one"])
def test_cache_modes_agree_and_a_batch_equals_single_rows(smollm2, size, one_step):
    """none ≡ block ≡ fused with shift, multi-step (two steps per block: the L/2 most confident
    each) and one-step, over two blocks (the fused pass carries block 1 into block 2); the batch
    of two prompts equals each prompt alone (fused). The converted model is not trained for
    blocks yet, so its outputs are poor text, but they are diverse, data-dependent tokens."""
    bd, tok = smollm2
    m = variant(bd, size, True)
    rows = chat_prompts(tok)
    ids, lens = pad_rows(rows, bd.spec.pad_token_id)
    policy = OneStep() if one_step else FixedCount(size // 2)
    outs = {c: as_lists(block_generate(HFDenoiser(m), ids, lens, policy=policy, cache=c, max_new_tokens=2 * size,
                                       stop_at_eos=False)) for c in ("none", "block", "fused")}
    assert outs["none"] == outs["block"] == outs["fused"]
    for b, r in enumerate(rows):
        alone = block_generate(HFDenoiser(m), torch.tensor([r]), torch.tensor([len(r)]), policy=policy,
                               cache="fused", max_new_tokens=2 * size, stop_at_eos=False)
        assert as_lists(alone)[0] == outs["fused"][b]
    assert len({t for o in outs["fused"] for t in o}) >= 4  # not a degenerate all-[MASK]/one-token output
    assert bd.spec.mask_token_id not in {t for o in outs["fused"] for t in o}


def _rad_batch(bd, tok):
    answer = tok("The capital of France is Paris.", add_special_tokens=False)["input_ids"]
    ex = [{"prompt_ids": torch.tensor(p), "response_ids": torch.tensor(answer[: k])}
          for p, k in zip(chat_prompts(tok), (len(answer), 5))]
    batch = BlockCollator(bd.block_size, bd.spec.eos_token_id, bd.spec.pad_token_id)(ex)
    g = torch.Generator().manual_seed(0)
    masked = batch.maskable() & (torch.rand(batch.input_ids.shape, generator=g) < 0.5)
    masked[torch.arange(len(batch)), batch.prompt_lens] = True
    width = batch.input_ids.shape[1]
    idx = torch.arange(width)[None].expand(len(batch), -1)
    targets = torch.where(batch.maskable(), idx, batch.prompt_lens[:, None].expand(-1, width))
    return batch, masked, targets


def test_rad_equals_full_duplication(smollm2):
    """RAD ≡ full duplication on 30 layers. float64: the two differ only by summation order,
    so 1e-9 relative to the logits' scale (seen: exactly 0). float32 (logits of scale ~38):
    RAD vs full duplication 2e-3 absolute, ~14x the largest difference seen (1.4e-4); float32
    vs the float64 result 5e-3, ~5x the largest seen (9.4e-4, float32 rounding through 30 layers)."""
    bd, tok = smollm2
    batch, masked, targets = _rad_batch(bd, tok)
    args = (batch.input_ids, batch.prompt_lens, batch.seq_lens, masked, targets)
    with torch.no_grad():
        rad32 = bd.diffusion_logits(*args)
        dup32 = bd.diffusion_logits(*args, layout="full_dup")
        bd.model.double()
        try:
            rad64 = bd.diffusion_logits(*args).double()
            dup64 = bd.diffusion_logits(*args, layout="full_dup").double()
        finally:
            bd.model.float()
    scale = rad64.abs().max()
    assert rad64.std() > 1.0
    print(f"float64 max |rad-dup| {float((rad64 - dup64).abs().max()):.3g}, float32 {float((rad32 - dup32).abs().max()):.3g}, "
          f"float32 vs float64 {float((rad32.double() - rad64).abs().max()):.3g}, scale {float(scale):.3g}")
    torch.testing.assert_close(rad64, dup64, atol=1e-9 * float(scale), rtol=0)
    torch.testing.assert_close(rad32, dup32, atol=2e-3, rtol=0)
    torch.testing.assert_close(rad32.double(), rad64, atol=5e-3, rtol=0)


def test_model_config_loads_the_gguf_through_config_and_checks_the_name(smollm2, tmp_path):
    """``model.gguf_file`` validation; ``model.gguf_file=smollm2`` loads through ``load_backbone``
    (the converted cache: a plain model, the same weights) and the CLI's tokenizer is the GGUF's."""
    from blockdistill.cli.common import tokenizer_for
    from blockdistill.config import ConfigError, DataConfig, ModelConfig
    from blockdistill.models.backbones import load_backbone, load_tokenizer, model_dir

    with pytest.raises(ConfigError, match="^model.gguf_file"):
        ModelConfig(gguf_file="model.bin")
    with pytest.raises(ConfigError, match="^model.gguf_file"):
        ModelConfig(gguf_file="smollm2", tiny={"model_type": "llama"})
    with pytest.raises(FileNotFoundError, match="model.gguf_file"):
        load_backbone(ModelConfig(gguf_file="nope.gguf", pretrained=str(tmp_path)))
    cfg = ModelConfig(gguf_file="smollm2")
    assert model_dir(cfg) == smollm2_dir()
    model = load_backbone(cfg)
    assert getattr(model, "hf_quantizer", None) is None and type(model).__name__ == "LlamaForCausalLM"
    bd, tok = smollm2
    ours = bd.model.state_dict()  # the same weights; the block model's embeddings gained a [MASK] row
    for name, w in model.state_dict().items():
        assert torch.equal(w, ours[name][: w.shape[0]]), name
    cli_tok = tokenizer_for(cfg, DataConfig())
    q = chat_prompts(tok)[0]
    assert chat_prompts(cli_tok)[0] == q
    tok_gguf = load_tokenizer(smollm2_gguf())  # straight from the GGUF file: the same ids
    assert tok_gguf.eos_token_id == 2 and chat_prompts(tok_gguf)[0] == q
