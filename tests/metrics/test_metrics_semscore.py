"""SemScore with the bundled, offline all-MiniLM-L6-v2."""

from __future__ import annotations

import pytest
import torch

from blockdistill.metrics import SemScore, SentenceEncoder, bundled_minilm_path


def _semscore(encoder: SentenceEncoder, preds, targets) -> float:
    metric = SemScore(encoder=encoder)
    metric.update(preds, targets)
    return metric.compute().item()


def test_loads_offline_from_the_package() -> None:
    """Default construction finds the bundled model without any hub access (HF_HUB_OFFLINE=1)."""
    metric = SemScore()
    assert metric.encoder.path == bundled_minilm_path()
    assert metric.encoder.model.config.hidden_size == 384
    # The encoder is not part of the metric's module tree (no weights in checkpoints/DDP).
    assert list(metric.parameters()) == []
    assert not any("encoder" in k for k in metric.state_dict())


def test_close_paraphrase_beats_unrelated(minilm: SentenceEncoder) -> None:
    """Hand-written pairs: a paraphrase scores above a different finding about the heart."""
    ref = ["No pleural effusion."]
    close = _semscore(minilm, ["Pleural effusion is absent."], ref)
    related = _semscore(minilm, ["There is no pneumothorax."], ref)
    unrelated = _semscore(minilm, ["The heart is severely enlarged."], ref)
    assert close > related > unrelated
    assert close > 0.7 and unrelated < 0.4


def test_identical_reports_score_one(minilm: SentenceEncoder, iu_pairs) -> None:
    preds, _ = iu_pairs
    assert _semscore(minilm, preds[:40], preds[:40]) == pytest.approx(1.0, abs=1e-5)


def test_multi_reference_takes_the_best(minilm: SentenceEncoder) -> None:
    pred, good, bad = "Lungs are clear.", "The lungs are clear.", "Fracture of the left rib."
    assert _semscore(minilm, [pred], [[bad, good]]) == pytest.approx(
        _semscore(minilm, [pred], [good]), abs=1e-6
    )


def test_batch_splitting_invariance(minilm: SentenceEncoder, iu_pairs) -> None:
    """Padding differs between batchings; the masked mean pooling must hide it."""
    preds, targets = iu_pairs
    preds, targets = preds[:60], targets[:60]
    one = _semscore(minilm, preds, targets)
    metric = SemScore(encoder=minilm)
    for lo, hi in [(0, 7), (7, 19), (19, 20), (20, 45), (45, 60)]:
        metric.update(preds[lo:hi], targets[lo:hi])
    assert metric.compute().item() == pytest.approx(one, abs=1e-6)
    assert 0.5 < one < 0.99  # related, not identical, reports


def test_matches_sentence_transformers(minilm: SentenceEncoder, iu_pairs) -> None:
    """Our mean pooling + normalisation equals sentence-transformers' own pipeline."""
    import sentence_transformers as st  # in the dev extra: a missing reference fails, never skips
    texts = iu_pairs[0][:16]
    reference = st.SentenceTransformer(str(bundled_minilm_path()), device="cpu").encode(
        texts, convert_to_tensor=True, normalize_embeddings=True
    )
    ours = minilm.encode(texts)
    assert torch.allclose(ours, reference.float(), atol=1e-5)


def test_truncation_warns(minilm: SentenceEncoder) -> None:
    short = SentenceEncoder(bundled_minilm_path(), max_length=8)
    with pytest.warns(UserWarning, match="1 of 2 texts exceed max_length=8"):
        short.encode(["a short one", "this report is much longer than eight word pieces"])


def test_bad_arguments_are_named(minilm: SentenceEncoder, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="expected a config.json"):
        SemScore(encoder_path=tmp_path)
    with pytest.raises(ValueError, match="either encoder="):
        SemScore(encoder=minilm, encoder_path=tmp_path)


def test_length_sorted_batches_keep_input_order(minilm: SentenceEncoder, iu_pairs) -> None:
    """encode batches texts by length; rows still come back in input order, equal to one-by-one."""
    texts = [t for t in iu_pairs[0][:12]][::-1] + ["No effusion."]
    batched = SentenceEncoder(bundled_minilm_path()).encode(texts)
    one_by_one = SentenceEncoder(bundled_minilm_path(), batch_size=1)
    single = torch.cat([one_by_one.encode([t]) for t in texts])
    assert torch.allclose(batched, single, atol=1e-5)


def test_each_distinct_text_is_embedded_once(iu_pairs) -> None:
    enc = SentenceEncoder(bundled_minilm_path())
    seen: list[int] = []
    enc.model.register_forward_hook(lambda mod, args, kwargs, out: seen.append(kwargs["input_ids"].shape[0]),
                                    with_kwargs=True)
    refs = list(dict.fromkeys(iu_pairs[0]))[:10]
    first = enc.encode(refs + refs[:3])  # 10 distinct texts
    assert sum(seen) == 10
    again = enc.encode(refs[::-1] + ["A new report."])  # only the new text is embedded
    assert sum(seen) == 11
    assert torch.equal(again[:10], first[:10].flip(0))


def test_bfloat16_autocast_stays_close(minilm: SentenceEncoder, iu_pairs) -> None:
    texts = iu_pairs[0][:16]
    fast = SentenceEncoder(bundled_minilm_path(), dtype="bfloat16")
    assert fast.compute_dtype() == torch.bfloat16
    cos = (fast.encode(texts) * minilm.encode(texts)).sum(-1)
    assert cos.min().item() > 0.999
    with pytest.raises(ValueError, match="dtype must be"):
        SentenceEncoder(bundled_minilm_path(), dtype="float16")


def test_dedup_embedder_is_the_semscore_encoder(minilm: SentenceEncoder, iu_pairs) -> None:
    from examples.echo_cxr.data.curation.dedup import MiniLMEmbedder

    emb = MiniLMEmbedder(dtype="float32")
    texts = iu_pairs[0][:8]
    assert emb.params()["dtype"] == "float32"
    assert emb(texts).dtype == "float32"
    assert torch.allclose(torch.from_numpy(emb(texts)), minilm.encode(texts), atol=1e-6)


def test_a_full_memo_starts_over_without_losing_rows(minilm: SentenceEncoder, iu_pairs) -> None:
    texts = list(dict.fromkeys(iu_pairs[0]))[:6]
    small = SentenceEncoder(bundled_minilm_path(), memo_size=4)
    small.encode(texts[:3])
    got = small.encode(texts[:2] + texts[3:5])  # 3 memoised + 2 new > 4: cleared, then all 4 embedded
    assert torch.allclose(got, minilm.encode(texts[:2] + texts[3:5]), atol=1e-5)
    assert len(small._memo) == 4
