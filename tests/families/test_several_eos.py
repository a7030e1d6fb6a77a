"""Several EOS ids (Llama-3-Instruct, Qwen2.5-Instruct list two or three in their generation config).

A tiny model decodes freely; one of the tokens it produces mid-answer is made a second EOS id.
Every sampler (every cache mode, every policy, AR, ``generate`` with a streamer) must then stop
at it, the output cut exactly after it, a batch equal to its rows alone; the ids travel through
conversion, save/load and trajectory shards; the DCD EOS term is ``-log`` of the probability of
any of them, checked against a hand computation.
"""

import json

import pytest
import torch

from blockdistill import BlockDiffusionLM
from blockdistill.distill.records import (
    TrajectoryRecord,
    decode_records,
    encode_records,
    response_length,
)
from blockdistill.losses.distill import dcd_loss, eos_cross_entropy
from blockdistill.losses.rows import TokenDists
from blockdistill.models.adapter import BlockSpec
from blockdistill.sampling import (
    ConfidenceThreshold,
    FixedCount,
    HFDenoiser,
    OneStep,
    ar_generate,
    block_generate,
)
from blockdistill.sampling.generate import generate
from blockdistill.testing import tiny_tokenizer
from tests.families.tiny import EOS, VOCAB, prompts, tiny_model
from tests.sampling.helpers import as_lists, pad_rows, variant

POLICIES = {"fixed2": FixedCount(2), "one_step": OneStep(), "threshold": ConfidenceThreshold(0.3)}


@pytest.fixture(scope="module")
def bd():
    return BlockDiffusionLM.from_causal_lm(tiny_model("qwen2"), tiny_tokenizer(VOCAB), block_size=4)


def _second_eos(free: list[list[int]]) -> tuple[int, int]:
    """``(row, token)``: a token a row first produces at generated position >= 2, before any
    primary EOS (so a stop there is the second id's doing)."""
    for b, row in enumerate(free):
        for j in range(2, len(row)):
            if row[j] == EOS:
                break
            if row[j] not in row[:j]:
                return b, row[j]
    raise AssertionError(f"the tiny model repeats itself: {free}")


def _cut(row: list[int], ids: set[int]) -> list[int]:
    hit = [j for j, t in enumerate(row) if t in ids]
    return row[: hit[0] + 1] if hit else row


def test_spec_holds_the_set_and_keeps_the_primary_first():
    spec = BlockSpec(block_size=4, mask_token_id=95, eos_token_id=3, pad_token_id=3)
    assert spec.eos_token_ids == (3,)
    two = spec.with_eos([5, 3, 5])
    assert (two.eos_token_id, two.eos_token_ids) == (5, (5, 3))
    assert two.is_eos(torch.tensor([1, 3, 5, 4])).tolist() == [False, True, True, False]
    assert spec.is_eos(torch.tensor([1, 3, 5])).tolist() == [False, True, False]
    with pytest.raises(ValueError, match=r"must start with eos_token_id=3"):
        BlockSpec(block_size=4, mask_token_id=95, eos_token_id=3, pad_token_id=3, eos_token_ids=(4, 3))
    with pytest.raises(ValueError, match="repeats an id"):
        BlockSpec(block_size=4, mask_token_id=95, eos_token_id=3, pad_token_id=3, eos_token_ids=(3, 3))
    with pytest.raises(ValueError, match="must differ from the EOS and pad ids"):
        BlockDiffusionLM(tiny_model("llama"), BlockSpec(4, 95, 3, 3, eos_token_ids=(3, 95)))


def test_conversion_takes_the_generation_configs_list_and_save_load_keeps_it(tmp_path):
    model = tiny_model("llama")
    model.generation_config.eos_token_id = [7, EOS]
    bd = BlockDiffusionLM.from_causal_lm(model, tiny_tokenizer(VOCAB), block_size=4)
    assert bd.spec.eos_token_ids == (EOS, 7)  # the tokenizer's EOS first: it pads
    assert BlockDiffusionLM.from_causal_lm(tiny_model("llama"), tiny_tokenizer(VOCAB), block_size=4,
                                           eos_token_id=[11, 12]).spec.eos_token_ids == (11, 12)
    bd.save_pretrained(tmp_path / "m", tokenizer=tiny_tokenizer(VOCAB))
    saved = json.loads((tmp_path / "m" / "config.json").read_text())["blockdistill"]
    assert saved["eos_token_ids"] == [EOS, 7]
    back = BlockDiffusionLM.from_pretrained(tmp_path / "m")
    assert back.spec == bd.spec
    # a model saved before the field existed loads with its one id
    del saved["eos_token_ids"]
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["blockdistill"] = saved
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "m" / "checksums.sha256").unlink()  # edited on purpose
    assert BlockDiffusionLM.from_pretrained(tmp_path / "m").spec.eos_token_ids == (EOS,)


@pytest.mark.parametrize("shift", [False, True], ids=["noshift", "shift"])
@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_every_cache_mode_stops_at_the_second_eos_and_a_batch_equals_its_rows(bd, policy, shift):
    rows = prompts([5, 9, 3], seed=11)
    ids, lens = pad_rows(rows, EOS)
    one = variant(bd, 4, shift)

    def run(m, i, n, c, **kw):
        return as_lists(block_generate(HFDenoiser(m), i, n, policy=POLICIES[policy], cache=c, max_new_tokens=20, **kw))

    free = run(one, ids, lens, "fused", stop_at_eos=False)
    row, second = _second_eos(free)
    two = variant(bd, 4, shift, eos=[EOS, second])
    want = [_cut(r, {EOS, second}) for r in free]
    assert want[row][-1] == second and len(want[row]) < len(_cut(free[row], {EOS}))  # stopped by the second id
    for cache in ("none", "block", "fused"):
        assert run(two, ids, lens, cache) == want, cache
        assert run(one, ids, lens, cache) == [_cut(r, {EOS}) for r in free], cache  # the primary alone
        for b, r in enumerate(rows):
            alone = run(two, torch.tensor([r]), torch.tensor([len(r)]), cache)
            assert alone == [want[b]], (cache, b)


def test_ar_and_generate_with_a_streamer_stop_at_any_id(bd):
    rows = prompts([6, 4], seed=13)
    ids, lens = pad_rows(rows, EOS)
    free = as_lists(ar_generate(bd, ids, lens, max_new_tokens=16, stop_at_eos=False))
    _, second = _second_eos(free)
    two = variant(bd, 4, False, eos=[EOS, second])
    assert as_lists(ar_generate(two, ids, lens, max_new_tokens=16)) == [_cut(r, {EOS, second}) for r in free]

    free = generate(bd, torch.tensor([rows[0]]), policy="one_step", max_new_tokens=16,
                    stop_at_eos=False).generated[0].tolist()
    _, second = _second_eos([free])

    class Recorder:
        def __init__(self):
            self.puts = []

        def put(self, t):
            self.puts.append(t.reshape(-1).tolist())

        def end(self):
            pass

    rec = Recorder()
    out = generate(bd, torch.tensor([rows[0]]), policy="one_step", max_new_tokens=16,
                   eos_token_id=[EOS, second], streamer=rec)
    assert out.generated[0].tolist() == free[: free.index(second) + 1]
    assert [t for p in rec.puts[1:] for t in p] == out.generated[0].tolist()


def test_dcd_eos_term_covers_every_id_by_hand():
    g = torch.Generator().manual_seed(0)
    V, ids = 7, [2, 5]
    logits = torch.randn(1, 4, V, generator=g, dtype=torch.float64) * 2
    q = torch.softmax(torch.randn(1, 4, V, generator=g, dtype=torch.float64), -1)
    kl_mask = torch.tensor([[True, True, False, False]])
    eos_mask = ~kl_mask
    w = torch.tensor([[1.5, 0.5, 1.0, 1.0]], dtype=torch.float64)
    loss, stats = dcd_loss(logits, TokenDists(V, probs=q), w, kl_mask, eos_mask, eos_token_id=ids, lambda_eos=0.7)
    p = torch.softmax(logits, -1)[0].tolist()
    qq = q[0].tolist()
    kl = [sum(qq[i][v] * (torch.tensor(qq[i][v]).log() - torch.tensor(p[i][v]).log()).item() for v in range(V))
          for i in range(2)]
    eos = [-torch.tensor(p[i][2] + p[i][5]).log().item() for i in (2, 3)]
    hand = (1.5 * kl[0] + 0.5 * kl[1] + 0.7 * (eos[0] + eos[1])) / 2
    assert abs(float(loss) - hand) < 1e-5 * hand  # the loss runs in float32
    assert abs(stats["eos_ce"] - (eos[0] + eos[1]) / 2) < 1e-6
    argmax = logits[0, 2:].argmax(-1).tolist()
    assert stats["eos_acc"] == sum(a in ids for a in argmax) / 2
    # one id: the old term, exactly
    torch.testing.assert_close(eos_cross_entropy(logits, 5), eos_cross_entropy(logits, [5]))
    assert float(eos_cross_entropy(logits, ids)[0, 2]) < float(eos_cross_entropy(logits, 5)[0, 2])


def test_a_trajectory_ending_at_the_second_id_records_and_round_trips():
    tokens = torch.tensor([4, 6, 7, 1, 9, 9, 3, 3])  # the teacher stopped at 7, the second id
    assert response_length(tokens, [3, 7]) == 2 and response_length(tokens, 3) == 6
    g = tokens.shape[0]
    common = dict(example_id="ex", prompt_ids=torch.tensor([1, 2, 3, 4]), tokens=tokens,
                  commit_step=torch.ones(g, dtype=torch.long), block_steps=torch.ones(g, dtype=torch.long),
                  target=TokenDists(10, probs=torch.full((g, 10), 0.1)), block_size=4, eos_token_id=3, response_len=2)
    with pytest.raises(ValueError, match=r"token at response_len=2 is 7, not EOS \(\[3\]\)"):
        TrajectoryRecord(**common)
    rec = TrajectoryRecord(**common, eos_token_ids=(3, 7))
    assert rec.clean_ids[4 + 2:].tolist() == [3] * 6  # padded with the primary id
    back = decode_records(*encode_records([rec]))[0]
    assert back.eos_token_ids == (3, 7) and back.response_len == 2
