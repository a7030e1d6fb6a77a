"""Prompt rendering (the model's own chat template) and targets, against hand-written strings."""

import pytest

from examples.echo_cxr.data.records import CXRRecord
from examples.iu_text.prompts import build_sample, messages, prompt_ids, prompt_text, response_text

EXPECTED = ("<|im_start|>system\nYou draft chest X-ray reports.<|im_end|>\n"
            "<|im_start|>user\nMeSH codes: Cardiomegaly/mild; Pulmonary Atelectasis/base/left\n"
            "Write the Findings and Impression.<|im_end|>\n<|im_start|>assistant\n")


def test_prompt_renders_with_the_chat_template(tiny_tok):
    assert prompt_text(tiny_tok, ["Cardiomegaly/mild", " Pulmonary Atelectasis/base/left "]) == EXPECTED
    ids = prompt_ids(tiny_tok, ["Cardiomegaly/mild", "Pulmonary Atelectasis/base/left"])
    assert tiny_tok.decode(ids) == EXPECTED
    assert ids.count(1) == 3 and ids.count(2) == 2  # im_start x3, im_end x2: the special ids of SmolLM2
    assert messages([])[1]["content"] == "MeSH codes: none\nWrite the Findings and Impression."


def test_tiny_tokenizer_has_smollm2_specials_and_no_control_bytes(tiny_tok):
    assert tiny_tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [0, 1, 2]
    assert tiny_tok.eos_token_id == 2 and tiny_tok.pad_token_id == 2
    decoded = [tiny_tok.decode([i]) for i in range(3, len(tiny_tok))]
    assert not any(ch in t for t in decoded for ch in "\x00\x01\x1b\x7f")
    text = "Heart size normal.\n\tNo effusion, 5 mm nodule (RUL)."
    assert tiny_tok.decode(tiny_tok(text, add_special_tokens=False)["input_ids"]) == text


def test_template_is_required():
    class NoTemplate:
        chat_template = None

    with pytest.raises(ValueError, match="chat template"):
        prompt_text(NoTemplate(), ["normal"])


def test_response_and_sample(tiny_tok):
    assert response_text("Heart normal. ", " No effusion.") == "Findings: Heart normal.\nImpression: No effusion."
    assert response_text("", "Normal chest.") == "Impression: Normal chest."
    with pytest.raises(ValueError):
        response_text(" ", "")
    rec = CXRRecord("CXR1", "iu_xray", findings="Heart normal.", impression="No effusion.",
                    metadata={"mesh_major": ["normal"]})
    s = build_sample(tiny_tok, rec)
    assert s["reference"] == "Findings: Heart normal.\nImpression: No effusion."
    assert tiny_tok.decode(s["response_ids"]) == s["reference"]
    assert s["mesh"] == ["normal"] and s["key"] == "iu_xray/CXR1"
    assert tiny_tok.decode(s["prompt_ids"]).startswith("<|im_start|>system\n")
    assert build_sample(tiny_tok, rec, max_response_tokens=len(s["response_ids"]) - 1) is None
    with pytest.raises(ValueError, match="CXR2"):
        build_sample(tiny_tok, CXRRecord("CXR2", "iu_xray", findings="", impression=""))
