"""``import-sdar`` / ``export-sdar`` sub-commands (listed in :data:`blockdistill.cli.COMMANDS`).

    blockdistill import-sdar source=ckpts/SDAR-1.7B-Chat output_dir=runs/sdar_native
    blockdistill import-sdar source=ckpts/ECHO block_size=8 output_dir=runs/echo_native
    blockdistill export-sdar model=runs/dcd/model output_dir=runs/export/sdar

``import-sdar`` writes a plain blockdistill checkpoint (stock weights, block rules in the config)
that ``collect``, ``train-dcd`` and the samplers load like any other; the source's remote code is
never executed. ``export-sdar`` writes a ``shift=False`` Qwen3 model in SDAR's layout for SGLang
and LMDeploy (docs/serving.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from blockdistill.config import check

__all__ = ["ExportSDARConfig", "ImportSDARConfig", "export_sdar_cmd", "import_sdar"]


@dataclass
class ImportSDARConfig:
    """Convert a released checkpoint (SDAR layout, or ECHO's Qwen2.5-VL one) to blockdistill's."""

    source: str = ""
    """Directory of the released checkpoint (config.json, *.safetensors, tokenizer)."""
    output_dir: str = "runs/imported"
    """Where the blockdistill checkpoint is written (atomically)."""
    block_size: int | None = None
    """Block size; required when the checkpoint's config states none (ECHO: 8), else must agree."""
    mask_token: str = "<|MASK|>"
    """Text of the checkpoint's mask token in its tokenizer (used when the config has no mask_token_id)."""
    dtype: str = "bfloat16"
    """Dtype to load and save the weights in: ``float32``, ``bfloat16`` or ``float16``."""

    def __post_init__(self) -> None:
        check(bool(self.source), "source", "is required (the released checkpoint's directory)")
        check(self.block_size is None or self.block_size >= 1, "block_size", f"must be >= 1, got {self.block_size}")
        check(self.dtype in ("float32", "bfloat16", "float16"), "dtype",
              f"must be float32, bfloat16 or float16, got {self.dtype!r}")


@dataclass
class ExportSDARConfig:
    """Export a blockdistill text model (Qwen3 backbone, ``shift=False``) in SDAR's layout."""

    model: str = ""
    """Directory of a blockdistill block-diffusion model (e.g. the DCD student)."""
    output_dir: str = "runs/export/sdar"
    """Where the SDAR-layout checkpoint is written (atomically)."""
    tokenizer: str | None = None
    """Tokenizer directory; None = the model's directory."""
    remote_code_from: str | None = None
    """A released SDAR checkpoint whose ``*.py`` files and ``auto_map`` are copied alongside, for
    tools that load SDAR configs with ``trust_remote_code``; None writes no ``auto_map``."""

    def __post_init__(self) -> None:
        check(bool(self.model), "model", "is required (a blockdistill model directory)")


def import_sdar(cfg: ImportSDARConfig) -> None:
    from blockdistill.interop import load_released

    bd, tok = load_released(cfg.source, block_size=cfg.block_size, mask_token=cfg.mask_token, dtype=cfg.dtype)
    bd.save_pretrained(cfg.output_dir, tokenizer=tok)
    s = bd.spec
    print(f"imported {cfg.source} -> {cfg.output_dir}: block_size={s.block_size} mask_token_id={s.mask_token_id} "
          f"eos_token_id={s.eos_token_id} shift={s.shift}")


def export_sdar_cmd(cfg: ExportSDARConfig) -> None:
    from blockdistill import BlockDiffusionLM
    from blockdistill.interop import export_sdar
    from blockdistill.models.backbones import load_tokenizer

    bd = BlockDiffusionLM.from_pretrained(cfg.model)
    tok = load_tokenizer(cfg.tokenizer or cfg.model)
    out = export_sdar(bd, tok, cfg.output_dir, remote_code_from=cfg.remote_code_from)
    print(f"exported {cfg.model} -> {out} (SDAR layout, block_size={bd.spec.block_size})")
