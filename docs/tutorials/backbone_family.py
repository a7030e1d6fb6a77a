"""Tutorial 3: add a backbone family hook for a model type blockdistill does not know.

Runs on one CPU core in a few seconds (tests/docs/test_tutorials.py executes it):

    python docs/tutorials/backbone_family.py
"""

# --8<-- [start:unknown]
import torch
from transformers import StableLmConfig, StableLmForCausalLM

from blockdistill import BlockDiffusionLM, BlockSpec
from blockdistill.models.families import BackboneFamily, register_family, registered_families

# A tiny random StableLM (partial RoPE, LayerNorm): a family blockdistill does not register.
torch.manual_seed(0)
stablelm = StableLmForCausalLM(StableLmConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                              num_key_value_heads=4,
                                              intermediate_size=64, max_position_embeddings=128,
                                              initializer_range=0.1)).eval()
spec = BlockSpec(block_size=4, mask_token_id=63, eos_token_id=62, pad_token_id=62)
try:
    BlockDiffusionLM(stablelm, spec)
except ValueError as err:
    print(err)   # no backbone family registered for model_type='stablelm'; registered: [...]
# --8<-- [end:unknown]


# --8<-- [start:minimal]
class StableLmFamily(BackboneFamily):
    """StableLM: ``get_decoder()``, ``get_output_embeddings()`` and RoPE positions
    ``0..n-1`` are exactly the defaults, so the family only names its model type."""

    name = "stablelm"
    model_types = ("stablelm",)


register_family(StableLmFamily())
bd = BlockDiffusionLM(stablelm, spec)
print("registered:", sorted(registered_families()))
# --8<-- [end:minimal]


# --8<-- [start:checks]
from blockdistill.models.adapter import causal_logits  # noqa: E402
from blockdistill.sampling import HFDenoiser, OneStep, block_generate  # noqa: E402


def check_family(bd: BlockDiffusionLM, hf_logits, vocab: int) -> None:
    """The three checks every new family must pass (our tests run the same ones)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab - 2, (2, 12), generator=g)
    seq_lens = torch.tensor([12, 12])
    # 1. The wrapper does not change the backbone: block-causal attention with blocks of one
    #    token is causal attention, so its logits equal the model's own forward.
    keep = torch.arange(12)[None].expand(2, -1)
    with torch.no_grad():
        torch.testing.assert_close(causal_logits(bd.model, ids, seq_lens, keep), hf_logits(ids), atol=1e-5, rtol=1e-5)
    # 2. RAD and full duplication give the same logits at the noisy response positions.
    prompt_lens = torch.tensor([5, 6])
    masked = (torch.arange(12)[None] >= prompt_lens[:, None]) & (torch.rand(2, 12, generator=g) < 0.6)
    targets = torch.arange(6, 12)[None].expand(2, -1)
    with torch.no_grad():
        rad = bd.diffusion_logits(ids, prompt_lens, seq_lens, masked, targets, layout="rad")
        dup = bd.diffusion_logits(ids, prompt_lens, seq_lens, masked, targets, layout="full_dup")
    torch.testing.assert_close(rad, dup, atol=1e-5, rtol=1e-5)
    # 3. The fused block KV cache decodes exactly what the no-cache reference decodes, for a
    #    batch of prompts of different lengths.
    den = HFDenoiser(bd)
    lens = torch.tensor([7, 5])
    kw = dict(policy=OneStep(), max_new_tokens=12, stop_at_eos=False)
    fused = block_generate(den, ids[:, :7], lens, cache="fused", **kw)
    reference = block_generate(den, ids[:, :7], lens, cache="none", **kw)
    assert all(torch.equal(a, b) for a, b in zip(fused.sequences, reference.sequences))
    # One forward per block after the prefill: 12 new tokens after a prompt tail of 3 (or 1)
    # tokens in the first block of 4 fill 4 blocks.
    assert fused.stats.nfe == 1 + 4


check_family(bd, lambda ids: stablelm(ids).logits, vocab=64)
print("stablelm family: all checks passed")
# --8<-- [end:checks]


# --8<-- [start:custom]
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402


class OffsetGPT2Config(GPT2Config):
    """A custom checkpoint type (as ``trust_remote_code`` models often are): GPT-2, with
    learned absolute positions, trained with its first ``position_offset`` positions reserved."""

    model_type = "offset_gpt2"

    def __init__(self, position_offset: int = 1, **kw):
        self.position_offset = position_offset
        super().__init__(**kw)


class OffsetGPT2LMHeadModel(GPT2LMHeadModel):
    config_class = OffsetGPT2Config


class OffsetGPT2Family(BackboneFamily):
    """Overrides one hook: positions. Two rules to keep:

    - ``positions`` gives the clean stream's position ids; the library copies each noisy
      slot's position from its clean twin, and never derives blocks from positions;
    - ``text_positions(i, delta)`` must give clean index ``i`` the id that ``positions``
      gives it: the samplers use it for the tokens they generate after the prompt.
    """

    name = "offset_gpt2"
    model_types = ("offset_gpt2",)

    def positions(self, model, input_ids, valid, vision):
        if vision is not None:
            raise ValueError("offset_gpt2 takes no vision inputs")
        b, n = input_ids.shape
        offset = model.config.position_offset
        pos = torch.arange(n, device=input_ids.device).expand(b, n) + offset
        return pos, torch.full((b, 1), offset, dtype=torch.long, device=input_ids.device)
    # text_positions(index, delta) = index + delta: the default already agrees.


torch.manual_seed(0)
gpt = OffsetGPT2LMHeadModel(OffsetGPT2Config(position_offset=3, vocab_size=64, n_embd=32, n_layer=2, n_head=4,
                                             n_positions=128, initializer_range=0.1, bos_token_id=62,
                                             eos_token_id=62)).eval()


def gpt_forward(ids):   # the model's own forward at the positions it was trained with
    return gpt(ids, position_ids=torch.arange(ids.shape[1])[None] + 3).logits


# Without the hook, the default positions 0..n-1 are wrong for this model, and check 1 says so.
class NaiveFamily(BackboneFamily):
    model_types = ("offset_gpt2",)


register_family(NaiveFamily())
try:
    check_family(BlockDiffusionLM(gpt, spec), gpt_forward, vocab=64)
    raise RuntimeError("check 1 should have caught the wrong positions")
except AssertionError:
    print("default positions: check 1 fails, as it should")

register_family(OffsetGPT2Family())     # replaces the naive family for this model type
bd_gpt = BlockDiffusionLM(gpt, spec)
family = bd_gpt.family

# The rule above, checked: training positions == decoding positions at every clean index.
ids = torch.randint(0, 62, (2, 12))
pos, delta = family.positions(gpt, ids, torch.ones_like(ids, dtype=torch.bool), None)
torch.testing.assert_close(family.text_positions(torch.arange(12)[None].expand(2, -1), delta), pos)

check_family(bd_gpt, gpt_forward, vocab=64)
print("offset_gpt2 family: all checks passed")
# --8<-- [end:custom]
