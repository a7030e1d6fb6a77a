"""Tutorial 1: convert a Hugging Face causal LM with RAD and decode it with the fused sampler.

Runs on one CPU core in a few seconds (tests/docs/test_tutorials.py executes it):

    python docs/tutorials/convert_hf_model.py
"""

# --8<-- [start:load]
import tempfile

import torch

from blockdistill import BlockDiffusionLM
from blockdistill.data import BlockCollator
from blockdistill.losses import diffusion_loss
from blockdistill.losses.noise import complement, sample_noise
from blockdistill.sampling import ConfidenceThreshold, HFDenoiser, OneStep, block_generate
from blockdistill.testing import tiny_qwen2, tiny_tokenizer

torch.manual_seed(0)
# Any Hugging Face causal LM works the same way, e.g.
#   model = AutoModelForCausalLM.from_pretrained("/models/Qwen2.5-0.5B-Instruct")
#   tokenizer = AutoTokenizer.from_pretrained("/models/Qwen2.5-0.5B-Instruct")
# Here: a random 2-layer Qwen2 and a word-level tokenizer, both offline and tiny.
model = tiny_qwen2()
tokenizer = tiny_tokenizer()
# --8<-- [end:load]

# --8<-- [start:convert]
bd = BlockDiffusionLM.from_causal_lm(model, tokenizer, block_size=4)
print("block rules saved with the model:", bd.spec)
assert bd.spec.mask_token_id == tokenizer.convert_tokens_to_ids("[MASK]")
assert model.config.blockdistill["block_size"] == 4  # travels with save_pretrained
# --8<-- [end:convert]

# --8<-- [start:data]
# A toy task: the response counts on from the last prompt token, "t3 t4" -> "t5 t6 ... t12".
def example(start: int, prompt_len: int) -> dict:
    prompt = " ".join(f"t{start + i}" for i in range(prompt_len))
    response = " ".join(f"t{start + prompt_len + i}" for i in range(8))
    return {"prompt_ids": tokenizer(prompt)["input_ids"], "response_ids": tokenizer(response)["input_ids"]}


examples = [example(start, 2 + start % 3) for start in range(1, 60, 2)]
collate = BlockCollator(block_size=bd.block_size, eos_token_id=bd.spec.eos_token_id,
                        pad_token_id=bd.spec.pad_token_id)
batch = collate(examples)
# Clean streams: prompt + response + EOS, padded with EOS to a block boundary (multiples of L=4).
print("clean lengths:", batch.seq_lens.tolist()[:6], "prompt lengths:", batch.prompt_lens.tolist()[:6])
assert bool((batch.seq_lens % bd.block_size == 0).all())
# --8<-- [end:data]

# --8<-- [start:train]
optimizer = torch.optim.AdamW(bd.parameters(), lr=3e-3)
generator = torch.Generator().manual_seed(0)
maskable = batch.maskable()          # response + EOS padding; the prompt is never masked
bd.train()
for step in range(120):
    noise = sample_noise(maskable, bd.block_size, eps=1e-3, generator=generator)
    noises = [noise, complement(noise, maskable)]   # Fast-dLLM v2's complementary masks
    loss, stats = diffusion_loss(bd, batch.input_ids, batch.prompt_lens, batch.seq_lens, maskable, noises,
                                 layout="rad")
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if step % 30 == 0 or step == 119:
        print(f"step {step:3d}  loss {loss.item():.3f}  masked-token accuracy {stats['masked_acc']:.2f}")
bd.eval()
# --8<-- [end:train]

# --8<-- [start:save]
with tempfile.TemporaryDirectory() as tmp:
    bd.save_pretrained(tmp, tokenizer=tokenizer)
    bd = BlockDiffusionLM.from_pretrained(tmp)   # block size, mask id, EOS id and shift come back
assert bd.spec.block_size == 4
# --8<-- [end:save]

# --8<-- [start:decode]
prompts = [tokenizer("t21 t22")["input_ids"], tokenizer("t40 t41 t42")["input_ids"]]
width = max(map(len, prompts))
prompt_ids = torch.tensor([p + [bd.spec.pad_token_id] * (width - len(p)) for p in prompts])
prompt_lens = torch.tensor([len(p) for p in prompts])
den = HFDenoiser(bd)

multi = block_generate(den, prompt_ids, prompt_lens, policy=ConfidenceThreshold(0.85), cache="fused",
                       max_new_tokens=12)
one = block_generate(den, prompt_ids, prompt_lens, policy=OneStep(), cache="fused", max_new_tokens=12)
for name, out in [("multi-step", multi), ("one-step fused", one)]:
    text = [tokenizer.decode(s) for s in out.sequences]
    print(f"{name:>15}: forwards {out.stats.nfe:2d}  tokens/forward {out.stats.tpf:.2f}  {text}")
# --8<-- [end:decode]

# --8<-- [start:check]
# The fused cache changes the cost, never the tokens: compare against the no-cache reference.
ref = block_generate(den, prompt_ids, prompt_lens, policy=OneStep(), cache="none", max_new_tokens=12)
assert all(torch.equal(a, b) for a, b in zip(one.sequences, ref.sequences))
# One step per block: every decode forward commits a whole block of L tokens.
assert one.stats.nfe_decode <= -(-12 // bd.block_size) + 1
# The task was learned: one forward per block continues the count.
assert tokenizer.decode(one.sequences[0]) == "t23 t24 t25 t26 t27 t28 t29 t30 <|endoftext|>"
# --8<-- [end:check]
