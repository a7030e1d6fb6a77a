"""A short RAD fine-tune of the real SmolLM2-135M (slow: ~1-2 min on 2 cores)."""

import pytest
import torch

from blockdistill import BlockDiffusionLM
from blockdistill.config import NoiseConfig, OptimConfig
from blockdistill.data import BlockCollator
from blockdistill.lightning import RADSystem
from tests.real.conftest import chat_prompts, smollm2_dir

COUNTRIES = [("France", "Paris"), ("Italy", "Rome"), ("Japan", "Tokyo"), ("Spain", "Madrid"),
             ("Egypt", "Cairo"), ("Peru", "Lima"), ("Kenya", "Nairobi"), ("Greece", "Athens")]
HELD_OUT = [("Germany", "Berlin"), ("Russia", "Moscow")]


def _examples(tok, pairs):
    prompts = chat_prompts(tok, [f"What is the capital of {c}?" for c, _ in pairs])
    return [{"prompt_ids": torch.tensor(p),
             "response_ids": torch.tensor(tok(f"The capital of {c} is {city}.", add_special_tokens=False)["input_ids"])}
            for p, (c, city) in zip(prompts, pairs)]


@pytest.mark.slow
def test_rad_fine_tune_lowers_the_held_out_rad_loss():
    from transformers import AutoModelForCausalLM

    from blockdistill.models.backbones import load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer(smollm2_dir())
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir(), dtype=torch.float32)
    bd = BlockDiffusionLM.from_causal_lm(model, tok, block_size=4, shift=True).train()
    system = RADSystem(bd, OptimConfig(lr=1e-4, warmup_ratio=0.0, schedule="constant"), NoiseConfig())
    coll = BlockCollator(4, bd.spec.eos_token_id, bd.spec.pad_token_id)
    train, held = coll(_examples(tok, COUNTRIES)), coll(_examples(tok, HELD_OUT))

    def held_out_loss():
        with torch.no_grad():  # the same noise draws every time: a fixed held-out objective
            return sum(float(system.compute_loss(held, torch.Generator().manual_seed(s))[0]) for s in range(4)) / 4

    before = held_out_loss()
    opt = torch.optim.AdamW(bd.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(1)
    for _ in range(24):
        loss, _ = system.compute_loss(train, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = held_out_loss()
    print(f"held-out RAD loss {before:.3f} -> {after:.3f}")
    assert after < 0.7 * before, (before, after)
