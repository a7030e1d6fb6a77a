"""ECHO run configuration: one dataclass with a section per stage.

A size lives in a folder of YAML files, ``configs/<size>/``: ``common.yaml`` (run directory,
data, tokenizer, backbone) plus one file per stage (``ar.yaml``, ``rad.yaml``, ``collect.yaml``,
``dcd.yaml``, ``eval.yaml``). Loading a stage merges ``common.yaml`` and that stage's file, then
``key=value`` overrides; every field is validated and a bad key names itself.

    cfg = load_echo_config("examples/echo_cxr/configs/tiny", "rad", ["rad.trainer.max_steps=20"])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from blockdistill.config import (
    ConfigError,
    DistillConfig,
    LoraConfig,
    NoiseConfig,
    OptimConfig,
    TeacherDecodeConfig,
    TrainerConfig,
    check,
    check_choice,
    load_config,
)
from examples.echo_cxr.model import BackboneConfig

STAGES = ("data", "curate", "ar", "rad", "collect", "dcd", "eval", "report")
"""Pipeline order. ``python -m examples.echo_cxr all`` runs them in this order."""


@dataclass
class DataSection:
    """Where training and evaluation studies come from."""

    source: str = "synthetic"
    """``synthetic`` (generated offline) or ``records`` (curated JSONL of CXRRecords with images)."""
    train_records: str | None = None
    """``records``: JSONL of training studies (output of the curation pipeline)."""
    eval_records: str | None = None
    """``records``: JSONL of evaluation studies."""
    dcd_records: str | None = None
    """``records``: JSONL of the DCD subset (defaults to the training studies)."""
    image_root: str | None = None
    """``records``: directory that relative image paths are resolved against."""
    n_train: int = 4000
    """``synthetic``: training studies."""
    n_eval: int = 500
    """``synthetic``: English evaluation studies (held out: a different seed)."""
    n_eval_zh: int = 100
    """``synthetic``: Chinese evaluation studies."""
    zh_fraction: float = 0.5
    """Fraction of training studies whose report is Chinese (the paper translates a random 50%)."""
    image_size: int = 64
    """``synthetic``: image side in pixels."""
    seed: int = 0
    """Seed of the training studies; evaluation uses ``seed + 1``."""
    tokenizer: str | None = None
    """Tokenizer directory. Null with a tiny backbone: a small BPE trained on the synthetic corpus;
    null with a pretrained backbone: the checkpoint's own tokenizer."""
    tokenizer_vocab: int = 1024
    """Tiny BPE vocabulary size."""
    cache_samples: bool = True
    """Process every study once and keep it in memory (small data); false: process on access."""
    num_workers: int = 0
    """DataLoader worker processes for training and collection (0: load in the main process, right for
    cached in-memory samples; raise it with ``cache_samples: false`` so image decoding keeps up with GPUs)."""
    prompt_style: str = "compact"
    """Chat prompt and report layout (``examples.echo_cxr.data.processor.PROMPT_STYLES``): ``echo``, the
    released ECHO model's instructions ("Review this chest X-ray and write a report. ...", "这是一组胸部X光图像，
    ...") and its ``Findings: ... Impression: ...`` / ``所见：... 结论：...`` reports (the ``lingshu7b``
    configs); ``compact``, a shorter instruction that keeps the tiny CPU demo's sequences short."""
    max_images: int | None = None
    """Images of a study in its prompt, in record order; null: all of them (ECHO's user turn holds every
    image of the study, then the text)."""
    min_pixels: int | None = None
    """Pretrained backbone: per-image lower pixel bound (ECHO: 256*28*28 = 200704); null: Qwen2.5-VL's 56*56."""
    max_pixels: int | None = None
    """Pretrained backbone: per-image upper pixel bound (ECHO: 1500**2 = 2250000, also its processor's
    bound); null: Qwen2.5-VL's 28*28*1280 (about 1.0M)."""

    def __post_init__(self) -> None:
        check(self.source in ("synthetic", "records"), "data.source", f"must be synthetic or records, got {self.source!r}")
        if self.source == "records":
            check(bool(self.train_records) and bool(self.eval_records), "data.train_records",
                   "data.train_records and data.eval_records are required when data.source=records")
        check(self.n_train >= 1, "data.n_train", f"must be >= 1, got {self.n_train}")
        check(self.n_eval >= 1, "data.n_eval", f"must be >= 1, got {self.n_eval}")
        check(self.n_eval_zh >= 0, "data.n_eval_zh", f"must be >= 0, got {self.n_eval_zh}")
        check(0 <= self.zh_fraction <= 1, "data.zh_fraction", f"must be in [0, 1], got {self.zh_fraction}")
        check(self.image_size >= 32, "data.image_size", f"must be >= 32, got {self.image_size}")
        check(self.num_workers >= 0, "data.num_workers", f"must be >= 0, got {self.num_workers}")
        from examples.echo_cxr.data.processor import PROMPT_STYLES

        check(self.prompt_style in PROMPT_STYLES, "data.prompt_style",
               f"must be one of {sorted(PROMPT_STYLES)}, got {self.prompt_style!r}")
        check(self.max_images is None or self.max_images >= 1, "data.max_images",
               f"must be >= 1 or null (all), got {self.max_images}")
        for name in ("min_pixels", "max_pixels"):
            v = getattr(self, name)
            check(v is None or v >= 1, f"data.{name}", f"must be >= 1 or null, got {v}")
        if self.min_pixels is not None and self.max_pixels is not None:
            check(self.min_pixels <= self.max_pixels, "data.min_pixels",
                   f"{self.min_pixels} is above data.max_pixels={self.max_pixels}")


@dataclass
class ARSection:
    """Stage 1: AR continued pre-training (ECHO_AR)."""

    batch_size: int = 32
    """Studies per micro-batch."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-3, warmup_ratio=0.1))
    """Optimiser (the paper: AdamW, lr 1e-5, weight decay 0.01, warmup 3% for Lingshu-7B)."""
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(max_steps=300))
    """Trainer."""
    freeze_vision: bool = False
    """Freeze the vision encoder and projector (the paper trains them in stage 1)."""


@dataclass
class RADSection:
    """Stage 2: RAD adaptation (ECHO_Base), one model per block size, each from ECHO_AR."""

    block_sizes: list[int] = field(default_factory=lambda: [4, 8])
    """Block sizes to train; each gives ``rad_L{L}/model``."""
    shift: bool | None = None
    """Output alignment saved with the model (see DESIGN.md §2). None = shifted, the alignment of
    ECHO_AR's head, with which AR-converted models adapt far faster
    (:data:`blockdistill.recipes.AR_CONVERSION_SHIFT`)."""
    layout: str = "rad"
    """A name of :data:`blockdistill.layout.TRAINING_LAYOUTS`: ``rad`` or ``full_dup``."""
    batch_size: int = 32
    """Studies per micro-batch."""
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    """Noising."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, warmup_ratio=0.05))
    """Optimiser."""
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(max_steps=150))
    """Trainer."""
    max_steps_by_size: dict[int, int] = field(default_factory=dict)
    """Optional ``{block_size: max_steps}`` overriding ``trainer.max_steps`` for some sizes (e.g. a
    shorter run for a model that only serves as a reference row)."""
    freeze_vision: bool = True
    """Freeze the vision encoder and projector, as in the paper."""
    lora: LoraConfig | None = None
    """LoRA adapters on the text decoder instead of full fine-tuning (null: full); saved merged."""

    def steps_for(self, size: int) -> int:
        """``max_steps`` of the block-size-``size`` model."""
        return self.max_steps_by_size.get(size, self.trainer.max_steps)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.max_steps_by_size) - set(self.block_sizes))
        check(not unknown, "rad.max_steps_by_size", f"names block sizes {unknown} that rad.block_sizes does not train")
        check(all(v >= 1 for v in self.max_steps_by_size.values()), "rad.max_steps_by_size",
               f"steps must be >= 1, got {self.max_steps_by_size}")
        check(len(self.block_sizes) >= 1 and all(b >= 1 for b in self.block_sizes), "rad.block_sizes",
               f"must be a non-empty list of sizes >= 1, got {self.block_sizes}")
        check_choice(self.layout, "layout", "rad.layout")


@dataclass
class CollectSection:
    """DCD phase 1: the teacher's own multi-step trajectories."""

    block_size: int = 8
    """Which ECHO_Base is the teacher (``rad_L{block_size}``)."""
    n_prompts: int = 1000
    """Training studies decoded (the paper: a 30k subset proportional to the sources)."""
    batch_size: int = 50
    """Prompts per teacher batch."""
    decode: TeacherDecodeConfig = field(default_factory=lambda: TeacherDecodeConfig(max_new_tokens=160, top_k=32))
    """Teacher decoding and recording."""
    shard_size: int = 200
    """Records per shard file."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """Where the teacher decodes: only ``accelerator``, ``devices``, ``strategy``, ``precision`` and
    ``enable_progress_bar`` are used (Lightning's predict loop; each rank writes its own shards)."""

    def __post_init__(self) -> None:
        check(self.n_prompts >= 1, "collect.n_prompts", f"must be >= 1, got {self.n_prompts}")
        check(self.batch_size >= 1, "collect.batch_size", f"must be >= 1, got {self.batch_size}")


@dataclass
class DCDSection:
    """DCD phase 2: the one-step student (ECHO)."""

    batch_size: int = 32
    """Trajectories per micro-batch."""
    distill: DistillConfig = field(default_factory=DistillConfig)
    """Target, schedule, divergence, lambda_eos."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-4, warmup_ratio=0.05))
    """Optimiser."""
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(max_steps=150))
    """Trainer."""
    freeze_vision: bool = True
    """Freeze the vision encoder and projector, as in the paper."""
    lora: LoraConfig | None = None
    """LoRA adapters on the student's text decoder instead of full fine-tuning (null: full); saved merged."""


@dataclass
class EvalSection:
    """Evaluation of every variant on the held-out studies."""

    variants: list[str] = field(default_factory=lambda: ["ar", "base_multistep_L4", "base_multistep_L8",
                                                         "base_onestep_L8", "echo_onestep_L8"])
    """Rows of the comparison (names from ``examples.echo_cxr.evaluate.VARIANTS``)."""
    tau: float = 0.85
    """Threshold of the multi-step variants."""
    cache: str = "fused"
    """Cache mode of the block variants (:data:`blockdistill.sampling.cache.CACHE_MODES`: ``none``,
    ``block`` or ``fused``: same tokens, different speed)."""
    device: str = "cpu"
    """Device every evaluated model is loaded on and decodes on: ``cpu``, ``cuda``, ``cuda:1``, ..."""
    batch_size: int = 50
    """Studies decoded together for the quality metrics."""
    speed_batch_size: int = 1
    """Batch size of the speed measurement (tokens/s, TPF, NFE): 1, as latency is measured in the paper."""
    speed_samples: int = 24
    """Held-out studies decoded one at a time, per variant, for the speed columns (0: use the quality run's)."""
    forward_cost_repeats: int = 20
    """Repeats of each timed forward of ECHO's speed-up limit L*t(1)/t(2L) on this machine (0: not measured)."""
    repetition_n: int = 4
    """n of the repetition rate (token n-grams; each Chinese character is a token)."""
    max_new_tokens: int = 160
    """Token budget per report."""
    semscore: bool = True
    """Compute the MiniLM embedding similarity (loads the bundled encoder)."""
    n_samples_in_report: int = 3
    """Generated reports shown next to the truth in the report."""

    def __post_init__(self) -> None:
        import torch

        check_choice(self.cache, "cache", "eval.cache")
        try:
            torch.device(self.device)
        except RuntimeError:
            check(False, "eval.device", f"must be a torch device such as cpu or cuda:0, got {self.device!r}")


@dataclass
class EchoConfig:
    """A whole ECHO run."""

    run_dir: str = "runs/demo"
    """Everything is written under this directory."""
    seed: int = 0
    """Global seed."""
    threads: int = 0
    """torch threads (0 = torch's default)."""
    model: BackboneConfig = field(default_factory=BackboneConfig)
    """Backbone: tiny Qwen2.5-VL or Lingshu-7B."""
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
    curate_iu: bool = True
    """Run the offline curation of the real IU-Xray reports (stage ``curate``) for the report."""


def config_files(path: str | Path, stage: str | None) -> list[Path]:
    """YAML files that make up ``stage``'s config: a file as given, or a folder's ``common.yaml``
    followed by ``<stage>.yaml`` (each only if present)."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise ConfigError(f"config path {str(p)!r} does not exist")
    files = [p / "common.yaml"]
    if stage is not None:
        files.append(p / f"{stage}.yaml")
    return [f for f in files if f.is_file()]


def load_echo_config(paths: str | Path | list[str | Path] | None, stage: str | None = None,
                     overrides: list[str] | None = None, all_stages: bool = False) -> EchoConfig:
    """Merge defaults, the YAML files of ``stage`` (of every stage with ``all_stages``) from each of
    ``paths`` in order (folders or files), and ``key=value`` overrides."""
    paths = [] if paths is None else [paths] if isinstance(paths, (str, Path)) else list(paths)
    files: list[Path] = []
    for path in paths:
        for s in (STAGES if all_stages else (stage,)):
            files += [f for f in config_files(path, s) if f not in files]
    return load_config(EchoConfig, files, overrides)
