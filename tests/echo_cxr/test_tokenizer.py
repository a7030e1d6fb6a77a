"""Tokenizers: the offline Qwen tokenizer and the tiny byte-level BPE with Qwen2.5-VL special tokens."""

from __future__ import annotations

import pytest

from examples.echo_cxr.data import tokenizer as tk
from examples.echo_cxr.data.synthetic import generate_sample
from examples.echo_cxr.data.tokenizer import (
    SPECIAL_TOKENS,
    load_qwen_tokenizer,
    special_token_ids,
    tiny_tokenizer,
    train_tiny_tokenizer,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tok"), vocab_size=1024, n_reports=400)


@pytest.fixture(scope="module")
def qwen():
    return load_qwen_tokenizer()


def test_qwen_offline_ids(qwen):
    """Qwen2.5-VL's published ids; a wrong file or eos/pad choice would break a real checkpoint."""
    ids = special_token_ids(qwen)
    assert ids.image_token_id == 151655 and ids.video_token_id == 151656
    assert (ids.vision_start_token_id, ids.vision_end_token_id) == (151652, 151653)
    assert (ids.eos_token_id, ids.pad_token_id, ids.im_start_token_id) == (151645, 151643, 151644)
    assert ids.config_kwargs() == {"image_token_id": 151655, "video_token_id": 151656,
                                   "vision_start_token_id": 151652, "vision_end_token_id": 151653}
    assert qwen("<|vision_start|><|image_pad|><|image_pad|>").input_ids == [151652, 151655, 151655]
    text = generate_sample(0, with_image=False).report("zh")
    assert qwen.decode(qwen(text).input_ids) == text


def test_load_rejects_missing_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_qwen_tokenizer(tmp_path / "nope")


def test_tiny_special_tokens(tiny):
    """Special tokens take ids 0..7 in Qwen's order; eos = <|im_end|>, pad = <|endoftext|>; no [MASK] reserved."""
    assert [tiny.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == list(range(8))
    ids = special_token_ids(tiny)
    assert (ids.eos_token_id, ids.pad_token_id, ids.image_token_id) == (2, 0, 6)
    assert ids.text_config_kwargs() == {"eos_token_id": 2, "pad_token_id": 0, "bos_token_id": 0}
    assert tiny.eos_token == "<|im_end|>" and tiny.pad_token == "<|endoftext|>"
    assert "[MASK]" not in tiny.get_vocab()
    assert 400 < len(tiny) <= 1024
    assert tiny("<|vision_start|><|image_pad|><|vision_end|>x").input_ids[:3] == [3, 6, 4]
    assert tiny("hello").input_ids[0] >= 8  # no BOS/EOS added implicitly


@pytest.mark.parametrize("seed", range(5))
def test_tiny_roundtrip_and_compactness(tiny, seed):
    """Lossless on en/zh reports; synthetic text is compact (word-like tokens), unseen text still works (byte-level)."""
    s = generate_sample(1000 + seed, with_image=False)
    for lang, limit in (("en", 1.6), ("zh", 0.8)):
        text = s.report(lang)
        ids = tiny(text).input_ids
        assert tiny.decode(ids) == text
        units = len(text.split()) if lang == "en" else len(text)
        assert len(ids) <= limit * units, (lang, len(ids), units)
    odd = "未知文字：肝脏，骨骼 CT 3.5cm ☃"
    assert tiny.decode(tiny(odd).input_ids) == odd


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_tiny_prompt_is_compact(tiny, lang):
    """The chat prompt opens every sequence, so the corpus weights it like the reports: its words are
    whole tokens (byte-split, the English prompt's text took 50 tokens; now 27), and splitting at special
    tokens matches how the processor encodes it."""
    from examples.echo_cxr.data.processor import PROMPTS, prompt_templates, prompt_text_pieces

    head, tail = prompt_templates(PROMPTS[lang])
    assert tiny(head + tail).input_ids == tiny(head).input_ids + tiny(tail).input_ids
    pieces = prompt_text_pieces(lang)
    assert "".join(pieces) == (head + tail).replace("<|im_start|>", "").replace("<|im_end|>", "")
    text_tokens = sum(len(tiny(p).input_ids) for p in pieces)
    assert text_tokens <= (30 if lang == "en" else 28), [tiny.decode([i]) for p in pieces for i in tiny(p).input_ids]


def test_tiny_cache_is_reused_and_atomic(tmp_path, monkeypatch):
    a = tiny_tokenizer(tmp_path, vocab_size=600, n_reports=100)
    entries = sorted(p.name for p in tmp_path.iterdir())
    assert entries == [f"tiny-bpe-v{tk.TINY_TOKENIZER_VERSION}-600-100-0"]  # no temp dir left behind

    def boom(*args, **kwargs):
        raise AssertionError("retrained although cached")

    monkeypatch.setattr(tk, "train_tiny_tokenizer", boom)
    b = tiny_tokenizer(tmp_path, vocab_size=600, n_reports=100)
    text = generate_sample(5, with_image=False).report("en")
    assert a(text).input_ids == b(text).input_ids and a.get_vocab() == b.get_vocab()


def test_rejects_bad_vocab():
    """A vocabulary without Qwen2.5-VL's specials fails early, naming the missing token."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    with pytest.raises(ValueError, match="vocab_size"):
        train_tiny_tokenizer(["x"], vocab_size=100)
    bare = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")))
    with pytest.raises(ValueError, match="endoftext"):
        special_token_ids(bare)
