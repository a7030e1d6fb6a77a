"""The running example of the concept pages, in code: P=6 prompt tokens, R=5 response tokens,
blocks of L=4. Executed by tests/docs/test_tutorials.py.

    python docs/concepts/layout_example.py
"""

# --8<-- [start:grid]
import torch

from blockdistill.layout import (
    block_id,
    clean_layout,
    clean_length,
    dense_mask,
    full_dup_layout,
    rad_layout,
    response_block_start,
)

P, R, L = 6, 5, 4
n = clean_length(P, R, L)           # prompt + response + EOS, padded to a block boundary
s = response_block_start(P, L)      # first block that holds response tokens
print(f"n = {n}, s = {s}, block of index 5: {block_id(5, L)}")
assert (n, s) == (12, 4)
# --8<-- [end:grid]

# --8<-- [start:layouts]
prompt_lens, seq_lens = torch.tensor([P]), torch.tensor([n])
rad = rad_layout(prompt_lens, seq_lens, L)
dup = full_dup_layout(seq_lens, L)
print("RAD slots:", rad.num_slots, "clean index:", rad.clean_index[0].tolist())
print("noisy?   :", rad.noisy[0].int().tolist())
print("full duplication slots:", dup.num_slots)
assert rad.num_slots == n + (n - s) and dup.num_slots == 2 * n
# --8<-- [end:layouts]

# --8<-- [start:masks]
m = dense_mask(rad)[0, 0]          # bool (T, T): query row may attend to key column
noisy_5 = rad.clean_width + 5 - s  # slot of the noisy twin of clean index 5 (block 1)
print("noisy 5 sees clean:", [j for j in range(n) if m[noisy_5, j]],
      "noisy:", [int(rad.clean_index[0, j]) for j in range(n, rad.num_slots) if m[noisy_5, j]])
assert not m[:n, n:].any()                                   # clean never sees noisy
assert torch.equal(m[:n, :n], dense_mask(clean_layout(seq_lens, L))[0, 0])  # clean part: block-causal
# --8<-- [end:masks]
