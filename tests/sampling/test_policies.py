"""Unmasking policies against their written rules (DESIGN.md §3)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blockdistill.sampling import ConfidenceThreshold, FixedCount, OneStep, policy_from_name


@st.composite
def confidences(draw):
    b = draw(st.integers(1, 4))
    k = draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    conf = torch.rand(b, k, generator=g)
    cand = torch.rand(b, k, generator=g) < 0.7
    return conf, cand


@settings(max_examples=40)
@given(confidences(), st.floats(0.0, 1.0))
def test_threshold_commits_strictly_above_tau_or_the_single_best(data, tau):
    """Guards: committing a non-candidate, committing nothing (a block that never finishes),
    or using >= where the teacher uses >."""
    conf, cand = data
    commit = ConfidenceThreshold(tau)(conf, cand, step=1)
    for b in range(conf.shape[0]):
        c = cand[b]
        assert not (commit[b] & ~c).any()
        if not c.any():
            assert not commit[b].any()
            continue
        above = c & (conf[b] > tau)
        if above.any():
            assert torch.equal(commit[b], above)
        else:
            best = int(conf[b].masked_fill(~c, -1).argmax())
            assert commit[b].nonzero()[:, 0].tolist() == [best]


def test_threshold_is_strict():
    conf = torch.tensor([[0.85, 0.2, 0.9]])
    cand = torch.ones(1, 3, dtype=torch.bool)
    assert ConfidenceThreshold(0.85)(conf, cand, 1).tolist() == [[False, False, True]]
    assert ConfidenceThreshold(0.95)(conf, cand, 1).tolist() == [[False, False, True]]


@settings(max_examples=30)
@given(confidences(), st.integers(1, 5))
def test_fixed_count_commits_the_most_confident(data, count):
    conf, cand = data
    commit = FixedCount(count)(conf, cand, step=1)
    for b in range(conf.shape[0]):
        c = cand[b]
        assert not (commit[b] & ~c).any()
        assert int(commit[b].sum()) == min(count, int(c.sum()))
        if commit[b].any() and (c & ~commit[b]).any():
            assert conf[b][commit[b]].min() >= conf[b][c & ~commit[b]].max()


def test_one_step_commits_every_candidate():
    cand = torch.tensor([[True, False, True]])
    assert torch.equal(OneStep()(None, cand, 1), cand)
    assert OneStep().commits_all and not OneStep().needs_confidence


def test_bad_policy_arguments():
    with pytest.raises(ValueError, match="tau"):
        ConfidenceThreshold(1.5)
    with pytest.raises(ValueError, match="count"):
        FixedCount(0)
    with pytest.raises(ValueError, match="unknown unmasking policy"):
        policy_from_name("beam")
    assert policy_from_name("threshold", tau=0.5) == ConfidenceThreshold(0.5)
