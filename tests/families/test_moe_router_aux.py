"""MoE router load-balancing loss (issue 16): for Qwen3-MoE and Mixtral, training adds
``router_aux_loss_coef`` × HF's ``load_balancing_loss_func`` over the real tokens, the way HF's
``*ForCausalLM.forward`` adds it (only with ``output_router_logits``). The AR stage's added term
is checked against HF's own ``aux_loss`` on the same right-padded batch; RAD adds a term of the
same kind (linear in the coefficient, with gradient into the routers); evaluation adds none.
"""

import pytest
import torch

from blockdistill import BlockDiffusionLM
from blockdistill.config import NoiseConfig, OptimConfig
from blockdistill.layout import padding_mask
from blockdistill.lightning.ar import ARSystem
from blockdistill.lightning.rad import RADSystem
from blockdistill.testing import tiny_tokenizer
from tests.families.tiny import VOCAB, tiny_model
from tests.foundation.helpers import collate, random_examples

MOE = ["mixtral", "qwen3_moe"]
COEF = 0.3


def _setup(model_type):
    model = tiny_model(model_type, router_aux_loss_coef=COEF).train()
    bd = BlockDiffusionLM.from_causal_lm(model, tiny_tokenizer(VOCAB), block_size=4)
    batch = collate(bd, random_examples([3, 6, 4], [7, 1, 13], vocab=80, seed=2))
    return bd, batch


@pytest.mark.parametrize("model_type", MOE)
def test_ar_stage_adds_hfs_own_aux_loss(model_type):
    bd, batch = _setup(model_type)
    model = bd.model
    system = ARSystem(model, OptimConfig())
    model.config.output_router_logits = False
    off, stats_off = system.compute_loss(batch)
    assert "router_aux" not in stats_off
    model.config.output_router_logits = True
    on, stats = system.compute_loss(batch)
    mask = padding_mask(batch.seq_lens, batch.input_ids.shape[1]).long()
    hf = model(input_ids=batch.input_ids, attention_mask=mask, output_router_logits=True)
    want = COEF * float(hf.aux_loss)
    assert float(hf.aux_loss) > 0.5  # ~1 when balanced: a real value, not a default 0
    assert abs(stats["router_aux"] - want) < 1e-6
    assert abs(float(on - off) - want) < 1e-6
    # padding matters: HF's loss over every position differs from the one over real tokens
    everything = model(input_ids=batch.input_ids, output_router_logits=True)
    assert abs(COEF * float(everything.aux_loss) - want) > 1e-6


@pytest.mark.parametrize("model_type", MOE)
def test_rad_stage_adds_the_router_term_with_gradient_to_the_routers(model_type):
    bd, batch = _setup(model_type)
    system = RADSystem(bd, OptimConfig(), NoiseConfig())

    def loss(coef, on=True):
        bd.model.config.output_router_logits = on
        bd.model.config.router_aux_loss_coef = coef
        bd.model.zero_grad()
        out, stats = system.compute_loss(batch, torch.Generator().manual_seed(0))
        out.backward()
        gate = next(p for n, p in bd.model.named_parameters() if n.endswith(("gate.weight", "router.weight"))
                    and "layers.0." in n)
        return float(out), stats, gate.grad.clone()

    base, s0, g0 = loss(COEF, on=False)
    one, s1, g1 = loss(COEF)
    two, s2, g2 = loss(2 * COEF)
    assert "router_aux" not in s0 and s1["router_aux"] > 0.1
    assert abs((one - base) - s1["router_aux"]) < 1e-6
    assert abs((two - base) - 2 * s1["router_aux"]) < 1e-6
    assert float((g1 - g0).abs().max()) > 1e-6  # the term trains the router
    bd.model.eval()
    with torch.no_grad():
        _, s_eval = system.compute_loss(batch, torch.Generator().manual_seed(0))
    assert "router_aux" not in s_eval
