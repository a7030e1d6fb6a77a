"""A run directory with every ECHO variant's model in place, built in seconds: the smoke config's
tiny Qwen2.5-VL, random weights (init range 0.1 so decoding is not degenerate), saved as the
stages save them (``ar/model`` plain AR, ``rad_L8/model`` and ``dcd_L8/model`` block models)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from blockdistill import BlockDiffusionLM
from examples.echo_cxr.config import load_echo_config
from examples.echo_cxr.data.tokenizer import special_token_ids, tiny_tokenizer
from examples.echo_cxr.model import build_backbone
from tests.interop.helpers import legacy_vl_state_dict

CONFIGS = Path(__file__).resolve().parents[2] / "examples" / "echo_cxr" / "configs"


def make_tiny_run(run_dir: Path, tok_cache: Path) -> Path:
    cfg = load_echo_config(CONFIGS / "smoke", all_stages=True, overrides=[f"run_dir={run_dir}"])
    tok = tiny_tokenizer(tok_cache, n_reports=150)
    tok.save_pretrained(run_dir / "tokenizer")
    m = replace(cfg.model, init_range=0.1)
    ar = build_backbone(m, special_token_ids(tok), len(tok), seed=0)
    ar.save_pretrained(run_dir / "ar" / "model")
    for name, seed in (("rad_L8", 0), ("dcd_L8", 1), ("rad_L4", 0)):
        size = 4 if name.endswith("L4") else 8
        t = tiny_tokenizer(tok_cache, n_reports=150)
        bd = BlockDiffusionLM.from_causal_lm(build_backbone(m, special_token_ids(t), len(t), seed=seed), t,
                                             block_size=size)
        with torch.no_grad():  # a distinct student, so ECHO's reports differ from Base's
            if seed:
                for p in bd.model.parameters():
                    p.add_(torch.randn_like(p) * 0.02)
        bd.save_pretrained(run_dir / name / "model", tokenizer=t)
    return run_dir


TRAP = "raise RuntimeError('remote code was executed')\n"


def write_released_checkpoint(out: Path, tok_cache: Path, seed: int = 2):
    """A checkpoint saved the way ECHO saves its own, from the smoke config's tiny Qwen2.5-VL:
    ``<|MASK|>`` in the tokenizer, weights under transformers 4.5x's names (``model.layers.*``,
    ``visual.*``), ``auto_map`` naming a ``modeling_echo.py`` that raises on import, no block size.
    Returns the in-memory model and tokenizer it was written from."""
    import json

    from safetensors.torch import save_file

    cfg = load_echo_config(CONFIGS / "smoke", all_stages=True)
    tok = tiny_tokenizer(tok_cache, n_reports=150)
    tok.add_special_tokens({"additional_special_tokens": ["<|MASK|>"]}, replace_extra_special_tokens=False)
    model = build_backbone(replace(cfg.model, init_range=0.1), special_token_ids(tok), len(tok), seed=seed).eval()
    out.mkdir(parents=True, exist_ok=True)
    legacy = legacy_vl_state_dict(model)
    if getattr(model.config, "tie_word_embeddings", False) or getattr(model.config.get_text_config(),
                                                                      "tie_word_embeddings", False):
        legacy.pop("lm_head.weight")  # tied: stored once, as transformers saves it
    save_file(legacy, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config.update(architectures=["EchoForConditionalGeneration"],
                  auto_map={"AutoModelForImageTextToText": "modeling_echo.EchoForConditionalGeneration"})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "modeling_echo.py").write_text(TRAP)
    tok.save_pretrained(out)
    return model, tok
