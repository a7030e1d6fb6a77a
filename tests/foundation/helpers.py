"""Random batches of clean streams for the foundation tests."""

import torch

from blockdistill.data import BlockCollator


def random_examples(prompt_lens, response_lens, vocab=80, seed=0, prefix=None):
    g = torch.Generator().manual_seed(seed)
    out = []
    for p, r in zip(prompt_lens, response_lens):
        prompt = torch.randint(0, vocab, (p,), generator=g)
        if prefix is not None:
            prompt = torch.cat([torch.tensor(prefix), prompt])
        out.append({"prompt_ids": prompt, "response_ids": torch.randint(0, vocab, (r,), generator=g)})
    return out


def collate(bd, examples):
    return BlockCollator(bd.block_size, bd.spec.eos_token_id, bd.spec.pad_token_id)(examples)


def random_mask(batch, seed=0, rate=0.5):
    g = torch.Generator().manual_seed(seed)
    m = batch.maskable() & (torch.rand(batch.input_ids.shape, generator=g) < rate)
    m[torch.arange(len(batch)), batch.prompt_lens] = True
    return m


def all_response_targets(batch):
    width = batch.input_ids.shape[1]
    idx = torch.arange(width)[None].expand(len(batch), -1)
    return torch.where(batch.maskable(), idx, batch.prompt_lens[:, None].expand(-1, width))
