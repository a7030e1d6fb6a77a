"""Trajectory records: what the teacher did on one prompt, and their safetensors encoding.

A record holds, for every generated position of the clean stream (clean indices
``P .. n-1``, from the prompt end to the last block boundary the teacher decoded):

- the committed token;
- ``k(i)``, the 1-based step of its block at which it was committed, and the number of steps
  that block took;
- the teacher's distribution at that step, ``q_i`` (full row or top-k) and, optionally, at
  the block's first step (the mean-field baseline's target);
- where the response ends: ``response_len`` tokens, then EOS padding to the block boundary.

Shards store many records as concatenated tensors plus offsets in one safetensors file;
example ids and constants go in its string metadata. Loading never unpickles.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from blockdistill.layout import on_block_boundary
from blockdistill.losses.rows import TokenDists

__all__ = ["FORMAT", "TrajectoryRecord", "decode_records", "encode_records", "load_records", "response_length",
           "save_records"]

FORMAT = "blockdistill.trajectories/1"


@dataclass
class TrajectoryRecord:
    """One example's teacher trajectory. ``G`` = number of generated positions.

    Invariant: ``len(prompt_ids) + G`` is a multiple of ``block_size`` (the teacher decodes
    whole blocks), and ``tokens[response_len]`` is EOS when ``response_len < G``.
    """

    example_id: str
    """Stable id of the prompt in its data set (resume and deduplication key)."""
    prompt_ids: Tensor
    """Long ``(P,)``."""
    tokens: Tensor
    """Long ``(G,)``: committed tokens at clean indices ``P .. P+G-1``."""
    commit_step: Tensor
    """Long ``(G,)``: ``k(i) >= 1``, the step of its block at which position i was committed."""
    block_steps: Tensor
    """Long ``(G,)``: number of steps the block of position i took (``>= commit_step``)."""
    target: TokenDists
    """``(G,)`` rows: the teacher's distribution ``q_i`` at step ``k(i)``."""
    block_size: int
    """L used by the teacher."""
    eos_token_id: int
    """The EOS id that ends the response and pads the last block."""
    response_len: int
    """R: tokens before the first EOS (``G`` when the teacher never emitted EOS)."""
    first_step: TokenDists | None = None
    """``(G,)`` rows at the first step of each position's block (mean-field baseline), if recorded."""
    pixel_values: Tensor | None = None
    """Float ``(num_patches, D)``: vision inputs of the prompt, if any (Qwen2.5-VL conventions)."""
    image_grid_thw: Tensor | None = None
    """Long ``(num_images, 3)``."""
    eos_token_ids: tuple[int, ...] = ()
    """Every id that ends the response (the teacher's ``BlockSpec.eos_token_ids``; the first is
    ``eos_token_id``). Empty: ``(eos_token_id,)``."""

    def __post_init__(self) -> None:
        self.eos_token_ids = tuple(int(i) for i in self.eos_token_ids) or (int(self.eos_token_id),)
        if self.eos_token_ids[0] != self.eos_token_id:
            raise ValueError(f"record {self.example_id!r}: eos_token_ids={list(self.eos_token_ids)} must start "
                             f"with eos_token_id={self.eos_token_id}")
        g = self.tokens.shape[0]
        for name in ("commit_step", "block_steps"):
            if getattr(self, name).shape != (g,):
                raise ValueError(f"record {self.example_id!r}: {name} has shape {tuple(getattr(self, name).shape)}, "
                                 f"expected ({g},)")
        if self.target.shape != (g,):
            raise ValueError(f"record {self.example_id!r}: target has leading shape {tuple(self.target.shape)}, "
                             f"expected ({g},)")
        if self.first_step is not None and self.first_step.shape != (g,):
            raise ValueError(f"record {self.example_id!r}: first_step has leading shape "
                             f"{tuple(self.first_step.shape)}, expected ({g},)")
        if not on_block_boundary(self.prompt_ids.shape[0] + g, self.block_size):
            raise ValueError(f"record {self.example_id!r}: prompt ({self.prompt_ids.shape[0]}) + generated ({g}) "
                             f"tokens do not end on a block boundary (L={self.block_size})")
        if not 0 <= self.response_len <= g:
            raise ValueError(f"record {self.example_id!r}: response_len={self.response_len} outside 0..{g}")
        if self.response_len < g and int(self.tokens[self.response_len]) not in self.eos_token_ids:
            raise ValueError(f"record {self.example_id!r}: token at response_len={self.response_len} is "
                             f"{int(self.tokens[self.response_len])}, not EOS ({list(self.eos_token_ids)})")
        if g and bool((self.commit_step < 1).any() | (self.commit_step > self.block_steps).any()):
            raise ValueError(f"record {self.example_id!r}: commit steps must lie in 1..block_steps")

    @property
    def num_generated(self) -> int:
        return self.tokens.shape[0]

    @property
    def finished(self) -> bool:
        """The teacher emitted EOS before its token budget ran out."""
        return self.response_len < self.num_generated

    @property
    def response(self) -> Tensor:
        """Long ``(R,)``: the response tokens without EOS."""
        return self.tokens[: self.response_len]

    @property
    def eos_mask(self) -> Tensor:
        """Bool ``(G,)``: EOS-padding positions (the terminating EOS and the padding after it)."""
        return torch.arange(self.num_generated) >= self.response_len

    @property
    def clean_ids(self) -> Tensor:
        """Long ``(P + G,)``: the clean stream the student trains on: prompt + response, then EOS
        to the block boundary (whatever the teacher committed after its first EOS)."""
        gen = self.tokens.clone()
        gen[self.response_len:] = self.eos_token_id
        return torch.cat([self.prompt_ids.long(), gen.long()])


def response_length(tokens: Tensor, eos_token_id: int | Sequence[int]) -> int:
    """Index of the first EOS (any of the ids given) in ``tokens`` ``(G,)`` (``G`` when there is none)."""
    ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    hits = torch.isin(tokens, torch.tensor(ids, dtype=tokens.dtype, device=tokens.device)).nonzero()
    return int(hits[0, 0]) if hits.numel() else tokens.shape[0]


def encode_records(records: list[TrajectoryRecord]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Records -> (named contiguous tensors, string metadata) for one safetensors file.

    All records must share vocabulary, target form (full or the same k), block size and EOS id.
    """
    if not records:
        raise ValueError("cannot encode an empty list of records")
    r0 = records[0]
    for r in records[1:]:
        if (r.block_size, r.eos_token_ids) != (r0.block_size, r0.eos_token_ids):
            raise ValueError(f"record {r.example_id!r} has block_size/eos {r.block_size}/{list(r.eos_token_ids)}, "
                             f"but {r0.example_id!r} has {r0.block_size}/{list(r0.eos_token_ids)}")
        if (r.first_step is None) != (r0.first_step is None):
            raise ValueError(f"record {r.example_id!r}: first-step rows are recorded for some records only")
    t: dict[str, Tensor] = {
        "prompt_ids": torch.cat([r.prompt_ids.long() for r in records]),
        "prompt_lens": torch.tensor([r.prompt_ids.shape[0] for r in records]),
        "tokens": torch.cat([r.tokens.long() for r in records]),
        "gen_lens": torch.tensor([r.num_generated for r in records]),
        "commit_step": torch.cat([r.commit_step.long() for r in records]),
        "block_steps": torch.cat([r.block_steps.long() for r in records]),
        "response_lens": torch.tensor([r.response_len for r in records]),
    }
    t.update(TokenDists.cat([r.target for r in records]).tensors("target"))
    if r0.first_step is not None:
        t.update(TokenDists.cat([r.first_step for r in records]).tensors("first_step"))
    with_vision = [r for r in records if r.pixel_values is not None]
    if with_vision:
        t["pixel_values"] = torch.cat([r.pixel_values for r in with_vision])
        t["image_grid_thw"] = torch.cat([r.image_grid_thw.long().reshape(-1, 3) for r in with_vision])
        t["num_images"] = torch.tensor([0 if r.image_grid_thw is None else r.image_grid_thw.reshape(-1, 3).shape[0]
                                        for r in records])
    meta = {
        "format": FORMAT,
        "example_ids": json.dumps([r.example_id for r in records]),
        "block_size": str(r0.block_size),
        "eos_token_id": str(r0.eos_token_id),
        "eos_token_ids": json.dumps(list(r0.eos_token_ids)),
        "vocab_size": str(r0.target.vocab_size),
    }
    return {k: v.contiguous() for k, v in t.items()}, meta


def _split(t: Tensor, lens: Tensor) -> list[Tensor]:
    return list(torch.split(t, lens.tolist()))


def decode_records(tensors: dict[str, Tensor], meta: dict[str, str], source: str = "<memory>") -> list[TrajectoryRecord]:
    """Inverse of :func:`encode_records`. ``source`` names the file in error messages."""
    if meta.get("format") != FORMAT:
        raise ValueError(f"{source}: not a trajectory shard (format {meta.get('format')!r}, expected {FORMAT!r})")
    ids = json.loads(meta["example_ids"])
    vocab = int(meta["vocab_size"])
    gen_lens = tensors["gen_lens"]
    prompts = _split(tensors["prompt_ids"], tensors["prompt_lens"])
    cols = {k: _split(tensors[k], gen_lens) for k in ("tokens", "commit_step", "block_steps")}
    target = TokenDists.from_tensors(tensors, "target", vocab)
    first = TokenDists.from_tensors(tensors, "first_step", vocab)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), gen_lens.cumsum(0)]).tolist()
    pix = thw = None
    if "num_images" in tensors:
        nimg = tensors["num_images"]
        thw = _split(tensors["image_grid_thw"], nimg)
        pix = _split(tensors["pixel_values"], torch.stack([g.prod(-1).sum() for g in thw]))
    out = []
    for j, ex in enumerate(ids):
        sl = slice(offsets[j], offsets[j + 1])
        has_img = thw is not None and thw[j].shape[0] > 0
        out.append(TrajectoryRecord(
            example_id=ex, prompt_ids=prompts[j], tokens=cols["tokens"][j], commit_step=cols["commit_step"][j],
            block_steps=cols["block_steps"][j], target=target[sl], block_size=int(meta["block_size"]),
            eos_token_id=int(meta["eos_token_id"]), response_len=int(tensors["response_lens"][j]),
            eos_token_ids=tuple(json.loads(meta.get("eos_token_ids", "[]"))),
            first_step=None if first is None else first[sl],
            pixel_values=pix[j] if has_img else None, image_grid_thw=thw[j] if has_img else None,
        ))
    return out


def save_records(path: str | Path, records: list[TrajectoryRecord]) -> None:
    """Write records to one safetensors file (not atomic; see :mod:`blockdistill.distill.writer`)."""
    tensors, meta = encode_records(records)
    save_file(tensors, str(path), metadata=meta)


def load_records(path: str | Path) -> list[TrajectoryRecord]:
    """Read a safetensors shard written by :func:`save_records`. Never unpickles."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return decode_records(tensors, meta, source=str(path))
