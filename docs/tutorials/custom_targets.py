"""Tutorial 2: write your own joint-target builder and step-weight schedule, and property-test
them against toy joints with exactly known probabilities (``blockdistill.testing``).

Runs on one CPU core in a few seconds (tests/docs/test_tutorials.py executes it); every
``test_*`` function also runs under pytest as is:

    python docs/tutorials/custom_targets.py
"""

# --8<-- [start:builder]
import torch

from blockdistill.distill import (
    CommitStepTarget,
    FirstStepTarget,
    TokenDists,
    TrajectoryCollector,
    collate_records,
    proportional,
    step_weights,
)


class TemperedCommitTarget:
    """DCD's commit-step rows ``q_i``, sharpened: ``q_i ** (1 / T)``, renormalised.

    ``T = 1`` is :class:`CommitStepTarget`; ``T -> 0`` approaches the hard committed tokens.
    A target builder is any callable ``trajectory -> TokenDists`` of the trajectory's leading
    shape (a record ``(G,)`` or a batch ``(B, G)``).
    """

    def __init__(self, temperature: float = 0.5) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def __call__(self, trajectory) -> TokenDists:
        q = trajectory.target.to_dense().probs.double()        # (*S, V); top-k rows are spread out
        sharp = q ** (1.0 / self.temperature)
        return TokenDists.full((sharp / sharp.sum(-1, keepdim=True)).float())
# --8<-- [end:builder]


# --8<-- [start:schedule]
def fraction_of_block(commit_step: torch.Tensor, block_steps: torch.Tensor) -> torch.Tensor:
    """Raw weight ``k(i) / K``: how late in its block a position was committed."""
    return commit_step.float() / block_steps.float()
# --8<-- [end:schedule]


# --8<-- [start:collect]
from hypothesis import given, settings  # noqa: E402

from blockdistill.testing import ToyJoint, ToyVocab  # noqa: E402
from blockdistill.testing.strategies import multimodal_joints, toy_joints  # noqa: E402


def collect(toy: ToyJoint):
    """Decode every prompt of ``toy`` with the multi-step teacher (tau 0.85), recording
    trajectories: the same sampler and collector that run on a real backbone."""
    prompts = [p for p in toy.table if not any(p[:-k] in toy.table for k in range(1, len(p)))]
    width = max(map(len, prompts))
    ids = torch.tensor([list(p) + [toy.spec.pad_token_id] * (width - len(p)) for p in prompts])
    lens = torch.tensor([len(p) for p in prompts])
    collector = TrajectoryCollector(toy, max_new_tokens=2 * toy.spec.block_size, record_first_step=True)
    return collector(ids, lens, [str(i) for i in range(len(prompts))])


def blocks(record):
    """``(prefix, slice)`` of each generated block: prefix = prompt + the teacher's earlier blocks."""
    size, p = record.block_size, record.prompt_ids.shape[0]
    full = record.prompt_ids.tolist() + record.tokens.tolist()
    start = p
    while start < len(full):
        end = (start // size + 1) * size
        yield tuple(full[:start]), slice(start - p, end - p)
        start = end
# --8<-- [end:collect]


# --8<-- [start:properties]
FAST = settings(max_examples=25, deadline=None, database=None)


@FAST
@given(toy_joints(block_size=3, second_block=True))
def test_rows_are_distributions_and_argmax_is_the_teacher_block(toy: ToyJoint) -> None:
    for record in collect(toy):
        target = TemperedCommitTarget(0.5)(record)
        torch.testing.assert_close(target.probs.sum(-1), torch.ones(target.shape))
        guess = target.argmax()                    # what a one-step student trained on it decodes
        assert torch.equal(guess, record.tokens)
        for prefix, sl in blocks(record):          # ... and it is a block the teacher can produce
            assert toy.prob(prefix, guess[sl].tolist()) > 0


@FAST
@given(toy_joints(block_size=3))
def test_temperature_one_is_dcd(toy: ToyJoint) -> None:
    for record in collect(toy):
        ours = TemperedCommitTarget(1.0)(record).probs
        torch.testing.assert_close(ours, CommitStepTarget()(record).to_dense().probs)


@FAST
@given(toy_joints(block_size=3, second_block=True))
def test_schedule_normalises_like_proportional(toy: ToyJoint) -> None:
    """``K`` is constant inside a block, so after the per-block normalisation ``k / K`` gives
    exactly the weights of ``proportional`` (``k``): mean 1 per block, zero off the KL positions."""
    batch = collate_records(collect(toy))
    args = (batch.commit_step, batch.block_steps, batch.block_index, batch.kl_mask)
    ours, dcd = step_weights(fraction_of_block, *args), step_weights(proportional, *args)
    torch.testing.assert_close(ours, dcd)
    assert bool((ours[~batch.kl_mask] == 0).all())
# --8<-- [end:properties]


# --8<-- [start:trap]
@FAST
@given(multimodal_joints(width=2))
def test_first_step_marginals_fall_into_the_trap(joint) -> None:
    """The same check fails for the mean-field baseline: on a multimodal joint, the argmax of
    the first-step marginals is a block of probability zero."""
    vocab = ToyVocab()
    prompt = (vocab.prompt[0],)
    toy = vocab.toy({prompt: joint}, block_size=3)
    (record,) = collect(toy)
    mean_field = FirstStepTarget()(record).argmax()[:2]
    ours = TemperedCommitTarget(0.5)(record).argmax()[:2]
    assert toy.prob(prompt, mean_field.tolist()) == 0
    assert toy.prob(prompt, ours.tolist()) > 0
# --8<-- [end:trap]


# --8<-- [start:example]
def show_one_trap() -> None:
    v = ToyVocab()                       # content ids 0-3, prompt ids 4-9, EOS 10, MASK 11
    a, b = v.content[:2]
    prompt = (v.prompt[0],)
    toy = v.toy({prompt: {(a, b): 0.5, (b, a): 0.5}}, block_size=3)   # "A B" or "B A"
    (record,) = collect(toy)
    print("teacher block    ", record.tokens[:2].tolist(), "committed at steps", record.commit_step[:2].tolist())
    print("mean-field argmax", FirstStepTarget()(record).argmax()[:2].tolist(),
          "p =", toy.prob(prompt, FirstStepTarget()(record).argmax()[:2].tolist()))
    print("tempered argmax  ", TemperedCommitTarget(0.5)(record).argmax()[:2].tolist(),
          "p =", toy.prob(prompt, TemperedCommitTarget(0.5)(record).argmax()[:2].tolist()))
# --8<-- [end:example]


if __name__ == "__main__":
    show_one_trap()
    for test in (test_rows_are_distributions_and_argmax_is_the_teacher_block, test_temperature_one_is_dcd,
                 test_schedule_normalises_like_proportional, test_first_step_marginals_fall_into_the_trap):
        test()
        print("passed:", test.__name__)
