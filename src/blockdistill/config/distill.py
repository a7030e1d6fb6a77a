"""Configuration of DCD: trajectory collection and student training (DESIGN.md §4).

Loaded like every other stage with :func:`blockdistill.config.load_config`::

    cfg = load_config(DCDTrainConfig, "configs/tiny/dcd.yaml", ["distill.lambda_eos=0.5"])
    cfg = load_config(CollectConfig, "configs/tiny/collect.yaml", ["trainer.devices=2"])
"""

from __future__ import annotations

from dataclasses import dataclass, field

from blockdistill.config.base import check as _check
from blockdistill.config.choices import check_choice
from blockdistill.config.training import LoraConfig, StageConfig, TrainStageConfig

__all__ = ["CollectConfig", "DCDTrainConfig", "DistillConfig", "TeacherDecodeConfig"]

@dataclass
class TeacherDecodeConfig:
    """How the teacher decodes and what is recorded of it."""

    tau: float = 0.85
    """Confidence threshold: commit every masked position whose top probability is > tau, else
    the single most confident one (DESIGN.md §3)."""
    max_new_tokens: int = 256
    """Token budget per prompt (whole blocks are decoded)."""
    top_k: int | None = 64
    """Store the teacher's rows as top-k (ids, probabilities, leftover mass); null = full rows."""
    record_first_step: bool = False
    """Also store the rows at each block's first step (needed only by ``distill.target=first_step``)."""
    cache: str = "fused"
    """Sampler cache mode, a name of :data:`blockdistill.sampling.cache.CACHE_MODES`: ``fused``
    (default), ``block`` or ``none``; all decode the same tokens."""
    repetition_ngram: int = 4
    """Drop trajectories whose response repeats an n-gram (n <= this) ``repetition_repeats`` times
    in a row; 0 disables the repetition filter."""
    repetition_repeats: int = 4
    """Consecutive repeats that make a repetition loop."""
    drop_unfinished: bool = False
    """Also drop trajectories that hit ``max_new_tokens`` without EOS."""

    def __post_init__(self) -> None:
        _check(0.0 <= self.tau <= 1.0, "decode.tau", f"must be in [0, 1], got {self.tau}")
        _check(self.max_new_tokens >= 1, "decode.max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        _check(self.top_k is None or self.top_k >= 1, "decode.top_k", f"must be >= 1 or null, got {self.top_k}")
        check_choice(self.cache, "cache", "decode.cache")
        _check(self.repetition_ngram >= 0, "decode.repetition_ngram", f"must be >= 0, got {self.repetition_ngram}")
        _check(self.repetition_repeats >= 2, "decode.repetition_repeats",
               f"must be >= 2, got {self.repetition_repeats}")

    def policy(self):
        """The teacher's unmasking policy: confidence threshold ``tau``."""
        from blockdistill.sampling.policies import ConfidenceThreshold

        return ConfidenceThreshold(self.tau)

    def collector_kwargs(self) -> dict:
        """Options of :class:`~blockdistill.distill.collectors.TrajectoryCollector` (and of the
        collect/online systems built on it) that decode and record as configured."""
        return dict(policy=self.policy(), top_k=self.top_k, max_new_tokens=self.max_new_tokens, cache=self.cache,
                    record_first_step=self.record_first_step)

    def relabel_kwargs(self) -> dict:
        """Options of :class:`~blockdistill.distill.relabel.StudentRolloutCollector`: on-policy
        steps relabel the student's decodes the way the teacher collected."""
        return dict(policy=self.policy(), top_k=self.top_k, max_new_tokens=self.max_new_tokens)

    def trajectory_filter(self):
        """The degenerate-trajectory filter these settings ask for (None: keep everything)."""
        from blockdistill.distill.filters import RepetitionFilter, UnfinishedFilter, combine_filters

        parts = []
        if self.repetition_ngram > 0:
            parts.append(RepetitionFilter(max_ngram=self.repetition_ngram, repeats=self.repetition_repeats))
        if self.drop_unfinished:
            parts.append(UnfinishedFilter())
        return combine_filters(parts) if parts else None


@dataclass
class DistillConfig:
    """The student's objective: ``sum_i w_i D(q_i, p_i) + lambda_eos * CE(EOS)``."""

    target: str = "commit_step"
    """Joint-target builder (:data:`blockdistill.distill.targets.TARGETS`): ``commit_step`` (DCD), ``hard`` (one-hot committed tokens, sequence-level
    KD) or ``first_step`` (mean-field baseline; needs ``decode.record_first_step``)."""
    schedule: str = "proportional"
    """Step weights: ``proportional`` (w ∝ k(i), default), ``uniform``, ``power`` or ``module:function``."""
    power: float = 2.0
    """Exponent of the ``power`` schedule (w ∝ k(i) ** power)."""
    divergence: str = "forward_kl"
    """A name of :data:`blockdistill.losses.distill.DIVERGENCES`: ``forward_kl`` (KL(q || p),
    default), ``reverse_kl`` or ``jsd`` (generalized JSD)."""
    jsd_beta: float = 0.5
    """Interpolation of the generalized JSD: 0 = forward KL, 1 = reverse KL."""
    lambda_eos: float = 1.0
    """Weight of the EOS cross-entropy over EOS-padding positions (relative to one response token)."""
    on_policy_fraction: float = 0.0
    """Share of training steps (from ``on_policy_start``) whose batch is the student's own one-step
    decode of the same prompts, every block relabelled by the teacher after the student's prefix
    (DAgger against exposure bias; :mod:`blockdistill.distill.relabel`). 0 = off."""
    on_policy_start: int = 0
    """First global step that may be on-policy."""

    def __post_init__(self) -> None:
        check_choice(self.target, "target", "distill.target")
        check_choice(self.divergence, "divergence", "distill.divergence")
        _check(0.0 <= self.jsd_beta <= 1.0, "distill.jsd_beta", f"must be in [0, 1], got {self.jsd_beta}")
        _check(self.lambda_eos >= 0, "distill.lambda_eos", f"must be >= 0, got {self.lambda_eos}")
        _check(self.power >= 0, "distill.power", f"must be >= 0, got {self.power}")
        _check(bool(self.schedule), "distill.schedule", "must be non-empty")
        _check(0.0 <= self.on_policy_fraction <= 1.0, "distill.on_policy_fraction",
               f"must be in [0, 1], got {self.on_policy_fraction}")
        _check(self.on_policy_start >= 0, "distill.on_policy_start", f"must be >= 0, got {self.on_policy_start}")


@dataclass
class DCDTrainConfig(TrainStageConfig):
    """Stage 3: DCD. ``model`` is the teacher (a RAD block-diffusion model); the student starts as
    a copy of it. ``trajectories`` set = offline (train on collected shards); unset = online
    (the teacher decodes each batch's prompts from ``data.train_file`` inside the step)."""

    trajectories: str | None = None
    """Directory written by ``blockdistill collect``; null = collect online."""
    decode: TeacherDecodeConfig = field(default_factory=TeacherDecodeConfig)
    """Teacher decoding (online mode; offline records were made with the collection's settings)."""
    distill: DistillConfig = field(default_factory=DistillConfig)
    """The objective."""
    verify_checksums: bool = True
    """Offline: check every shard's sha256 before training."""
    lora: LoraConfig | None = None
    """Train LoRA adapters on the student instead of every weight (null = full fine-tuning); the
    merged student is saved."""
    output_dir: str = "runs/dcd/model"
    """Where the student is saved."""

    def __post_init__(self) -> None:
        if self.distill.target == "first_step" and self.trajectories is None:
            _check(self.decode.record_first_step, "decode.record_first_step",
                   "must be true for distill.target=first_step")


@dataclass
class CollectConfig(StageConfig):
    """Offline collection: the teacher (``model``) decodes every prompt of ``data.train_file``
    (JSONL with ``prompt`` or ``prompt_ids`` and an optional ``id``) into shards; the teacher's
    saved block rules win over unset ``block`` fields."""

    decode: TeacherDecodeConfig = field(default_factory=TeacherDecodeConfig)
    """Teacher decoding and recording."""
    shard_size: int = 256
    """Records per shard file."""
    output_dir: str = "runs/dcd/trajectories"
    """Collection directory (re-running resumes: finished ids are skipped)."""

    def __post_init__(self) -> None:
        _check(self.shard_size >= 1, "shard_size", f"must be >= 1, got {self.shard_size}")
