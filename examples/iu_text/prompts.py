"""The task's text side: MeSH codes -> a chat prompt, a curated report -> the target response.

The prompt is a system line plus one user turn listing the study's codes, rendered by the
tokenizer's own chat template with the generation prompt (SmolLM2's ChatML:
``<|im_start|>user\\n...<|im_end|>\\n<|im_start|>assistant\\n``). The response is the curated
report, ``Findings: ...`` then ``Impression: ...``; the collator ends it with EOS
(``<|im_end|>``, SmolLM2's end of turn).

    ids = prompt_ids(tokenizer, ["Cardiomegaly/mild", "Pulmonary Atelectasis/base/left"])
    sample = build_sample(tokenizer, record)     # prompt_ids, response_ids, reference, mesh, ...

Tests and CPU smoke runs without the real weights use :func:`tiny_tokenizer`: a small byte-level
BPE trained on the run's own reports, with SmolLM2's special tokens at SmolLM2's ids (0, 1, 2) and
SmolLM2's chat template, so prompts have the same shape.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

SYSTEM = "You draft chest X-ray reports."
"""The system line (short: every token of the prompt is paid by every stage)."""
INSTRUCTION = "MeSH codes: {codes}\nWrite the Findings and Impression."
"""The user turn; ``{codes}`` is the study's codes joined with ``"; "``."""
NO_CODES = "none"

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
"""SmolLM2's first three ids: 0 = endoftext (bos/unk), 1 = im_start, 2 = im_end (eos and pad)."""
EOS_TOKEN = "<|im_end|>"
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""SmolLM2-Instruct's chat template (as its tokenizer_config.json carries it), for the tiny stand-in."""
TINY_TOKENIZER_VERSION = 1


def messages(codes: Sequence[str]) -> list[dict[str, str]]:
    """The chat turns of a study's prompt."""
    listed = "; ".join(c.strip() for c in codes if c.strip()) or NO_CODES
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": INSTRUCTION.format(codes=listed)}]


def prompt_text(tokenizer: Any, codes: Sequence[str]) -> str:
    """The rendered prompt, ending with the assistant header."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', tokenizer)!r} has no chat template; "
                         "the task renders prompts with the model's own template")
    return tokenizer.apply_chat_template(messages(codes), tokenize=False, add_generation_prompt=True)


def prompt_ids(tokenizer: Any, codes: Sequence[str]) -> list[int]:
    """Token ids of :func:`prompt_text` (no special tokens added beyond the template's)."""
    return tokenizer(prompt_text(tokenizer, codes), add_special_tokens=False)["input_ids"]


def response_text(findings: str, impression: str) -> str:
    """The target: ``Findings: ...\\nImpression: ...`` (either line omitted when empty)."""
    parts = [f"Findings: {findings.strip()}" if findings.strip() else "",
             f"Impression: {impression.strip()}" if impression.strip() else ""]
    text = "\n".join(p for p in parts if p)
    if not text:
        raise ValueError("a report needs findings or an impression")
    return text


def build_sample(tokenizer: Any, record: Any, max_response_tokens: int | None = None) -> dict[str, Any] | None:
    """One training/evaluation example of a curated :class:`CXRRecord`, or None when its response
    is longer than ``max_response_tokens`` (the caller counts those)."""
    codes = list(record.metadata.get("mesh_major") or [])
    try:
        ref = response_text(record.findings, record.impression)
    except ValueError as e:
        raise ValueError(f"record {record.key}: {e}") from None
    response = tokenizer(ref, add_special_tokens=False)["input_ids"]
    if max_response_tokens is not None and len(response) > max_response_tokens:
        return None
    return {"prompt_ids": prompt_ids(tokenizer, codes), "response_ids": response, "reference": ref,
            "mesh": codes, "study_id": record.study_id, "key": record.key, "lang": record.language,
            "source": record.source}


def _printable_byte_alphabet() -> list[str]:
    """The byte-level alphabet (GPT-2's byte -> character map) without the control bytes but tab
    and newline: a tiny random model then cannot emit NUL or other control characters, which text
    metrics refuse, while every byte of real report text stays encodable."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    chars, n = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + n)
            n += 1
    drop = {*range(0, 9), *range(11, 32), 127}
    return [c for b, c in chars.items() if b not in drop]


def tiny_tokenizer(texts: Iterable[str], out_dir: str | Path, vocab_size: int = 1024) -> Any:
    """Train (or load the cached) tiny byte-level BPE with SmolLM2's special tokens and template;
    written atomically to ``out_dir``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    out = Path(out_dir)
    if (out / "tokenizer_config.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(out)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=_printable_byte_alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", unk_token="<|endoftext|>",
                                   eos_token=EOS_TOKEN, pad_token=EOS_TOKEN,
                                   additional_special_tokens=["<|im_start|>"])
    fast.chat_template = SMOLLM2_CHAT_TEMPLATE
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    fast.save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return PreTrainedTokenizerFast.from_pretrained(out)
