"""Hypothesis strategies for toy joint distributions over blocks (see :mod:`blockdistill.testing.toy`).

Probabilities are integer weights over a common total, so ties are exact and non-ties differ
by far more than float error: properties about argmaxes never flake on rounding.

- :func:`block_joints`: any distribution over a few blocks of a given width;
- :func:`multimodal_joints`: distributions built so that the per-position marginals' argmax is
  a block of probability zero (the "no no effusion" failure of factorised one-step decoding),
  either by an exact swap (``"A B"``/``"B A"`` at 0.5 each) or strictly (no ties);
- :func:`toy_joints`: a :class:`~blockdistill.testing.toy.ToyJoint` over several prompts.

Example::

    @given(toy_joints(multimodal=True))
    def test_my_target(toy): ...
"""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

from blockdistill.testing.toy import ToyJoint, ToyVocab

__all__ = ["ToyVocab", "block_joints", "multimodal_joints", "strict_trap_joints", "swap_joints", "toy_joints"]

Block = tuple[int, ...]


def _normalise(blocks: Sequence[Block], weights: Sequence[int]) -> dict[Block, float]:
    total = sum(weights)
    out: dict[Block, float] = {}
    for b, w in zip(blocks, weights):
        out[b] = out.get(b, 0.0) + w / total
    return out


@st.composite
def block_joints(draw, tokens: Sequence[int] = (0, 1, 2, 3), width: int = 2, max_support: int = 5,
                 max_weight: int = 12) -> dict[Block, float]:
    """A distribution over 1..``max_support`` distinct ``width``-token blocks over ``tokens``."""
    block = st.tuples(*[st.sampled_from(list(tokens))] * width)
    support = draw(st.lists(block, min_size=1, max_size=max_support, unique=True))
    weights = draw(st.lists(st.integers(1, max_weight), min_size=len(support), max_size=len(support)))
    return _normalise(support, weights)


def _embed(draw, pair_blocks: list[tuple[int, int]], weights: list[int], tokens: Sequence[int],
           width: int) -> dict[Block, float]:
    """Place two-token patterns at positions (i, j) of ``width``-token blocks sharing the other tokens."""
    i, j = sorted(draw(st.lists(st.integers(0, width - 1), min_size=2, max_size=2, unique=True)))
    fill = draw(st.lists(st.sampled_from(list(tokens)), min_size=width, max_size=width))
    blocks = []
    for x, y in pair_blocks:
        b = list(fill)
        b[i], b[j] = x, y
        blocks.append(tuple(b))
    return _normalise(blocks, weights)


@st.composite
def swap_joints(draw, tokens: Sequence[int] = (0, 1, 2, 3), width: int = 2) -> dict[Block, float]:
    """``"A B"`` and ``"B A"`` at 0.5 each (at two positions of the block): each position's
    marginal is a tie, and argmax's tie-break picks the same token twice: probability 0."""
    if width < 2:
        raise ValueError("multimodal joints need blocks of at least 2 tokens")
    a, b = draw(st.lists(st.sampled_from(list(tokens)), min_size=2, max_size=2, unique=True))
    return _embed(draw, [(a, b), (b, a)], [1, 1], tokens, width)


@st.composite
def strict_trap_joints(draw, tokens: Sequence[int] = (0, 1, 2, 3), width: int = 2) -> dict[Block, float]:
    """Blocks ``(a, b)``, ``(c, a)``, ``(d, a)`` with weights ``w1 > w2, w3`` and ``w2 + w3 > w1``:
    position 1's argmax is ``a`` (mass ``w1``), position 2's is ``a`` (mass ``w2 + w3``), yet
    ``(a, a)`` has probability 0. No ties anywhere, so this fails for any tie-break rule."""
    if width < 2 or len(tokens) < 4:
        raise ValueError("strict traps need blocks of >= 2 tokens and >= 4 distinct tokens")
    a, b, c, d = draw(st.lists(st.sampled_from(list(tokens)), min_size=4, max_size=4, unique=True))
    w1 = draw(st.integers(3, 20))
    w2 = draw(st.integers(w1 // 2 + 1, w1 - 1))
    w3 = draw(st.integers(max(w1 - w2 + 1, 1), w1 - 1))
    return _embed(draw, [(a, b), (c, a), (d, a)], [w1, w2, w3], tokens, width)


def multimodal_joints(tokens: Sequence[int] = (0, 1, 2, 3), width: int = 2) -> st.SearchStrategy[dict[Block, float]]:
    """Joints whose mean-field (per-position argmax) block has probability zero."""
    return st.one_of(swap_joints(tokens, width), strict_trap_joints(tokens, width))


@st.composite
def toy_joints(draw, vocab: ToyVocab | None = None, block_size: int = 2, max_prompts: int = 3,
               max_prompt_len: int = 5, multimodal: bool | None = None, second_block: bool = False) -> ToyJoint:
    """A :class:`ToyJoint` over 1..``max_prompts`` distinct prompts.

    Args:
        multimodal: True = every prompt's joint is from :func:`multimodal_joints`; False = from
            :func:`block_joints`; None = either.
        second_block: also give every first-block continuation a distribution for the next block
            (so trajectories span two blocks).
    """
    vocab = vocab or ToyVocab()
    prompt = st.lists(st.sampled_from(vocab.prompt), min_size=1, max_size=max_prompt_len).map(tuple)
    prompts = draw(st.lists(prompt, min_size=1, max_size=max_prompts, unique=True))
    table: dict[Block, dict[Block, float]] = {}
    content = vocab.content

    def joint(width: int):
        if width < 2 or multimodal is False:
            return block_joints(content, width)
        if multimodal:
            return multimodal_joints(content, width)
        return st.one_of(block_joints(content, width), multimodal_joints(content, width))

    for p in prompts:
        width = block_size - len(p) % block_size
        table[p] = draw(joint(width))
        if second_block:
            for cont in table[p]:
                table[p + cont] = draw(joint(block_size))
    return vocab.toy(table, block_size)
