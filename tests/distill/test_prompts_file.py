"""``read_prompts``: the prompts file of trajectory collection, read line by line like the
training file (one JSONL reader, ``blockdistill.data.checks.jsonl_objects``): ids stable, bad
lines named by ``path:line``."""

from __future__ import annotations

import json
import re

import pytest

from blockdistill.data.checks import BadExampleError, jsonl_objects
from blockdistill.distill import read_prompts
from blockdistill.testing import tiny_tokenizer


def test_prompts_keep_their_ids_or_get_their_line_index(tmp_path) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join([json.dumps({"id": "a", "prompt_ids": [5, 6]}), "",
                               json.dumps({"prompt_ids": [7], "response": "ignored"}),
                               json.dumps({"prompt": "t1 t2"})]) + "\n")
    tok = tiny_tokenizer()
    rows = read_prompts(path, tok)
    want = tok("t1 t2", add_special_tokens=False)["input_ids"]
    assert rows == [{"id": "a", "prompt_ids": [5, 6]}, {"id": "1", "prompt_ids": [7]},
                    {"id": "2", "prompt_ids": want}]
    assert [i for i, _ in jsonl_objects(path)] == [1, 3, 4]   # 1-based file lines, blank one skipped


@pytest.mark.parametrize("bad,why", [
    ('{"prompt": "caf\xe9"}'.encode("latin-1"), r"not valid UTF-8 \(byte b'\\xe9' at column 16\)"),
    (b'{"prompt_ids": [5', r"not valid JSON"),
    (b'[5, 6]', "expected a JSON object, got list"),
    (b'{"text": "t1"}', r"expected a 'prompt' or 'prompt_ids' key, got \['text'\]"),
    (json.dumps({"id": "0", "prompt_ids": [4]}).encode(), "duplicate id '0'"),
])
def test_a_bad_prompt_line_is_named_by_file_and_line(tmp_path, bad, why) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(json.dumps({"id": "0", "prompt_ids": [5]}).encode() + b"\n\n" + bad + b"\n")
    with pytest.raises(BadExampleError, match=f"^{re.escape(str(path))}:3: {why}"):
        read_prompts(path, tiny_tokenizer())


def test_text_prompts_without_a_tokenizer_and_an_empty_file_are_refused(tmp_path) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": "t1"}) + "\n")
    with pytest.raises(ValueError, match=r":1: text prompts need a tokenizer"):
        read_prompts(path)
    path.write_text("\n\n")
    with pytest.raises(ValueError, match="no prompts"):
        read_prompts(path)


def test_collect_refuses_a_bad_prompts_file_naming_the_line(tmp_path, capsys) -> None:
    """Through the CLI: exit 2, the last line naming ``prompts.jsonl:<line>``, nothing collected."""
    from blockdistill.cli import main
    from tests.distill.test_distill_cli import ROOT, teacher_dir

    rad = teacher_dir(tmp_path)
    prompts = tmp_path / "prompts.jsonl"
    lines = prompts.read_bytes().splitlines()
    prompts.write_bytes(b"\n".join([*lines[:4], b'["not", "an object"]', *lines[4:]]) + b"\n")
    capsys.readouterr()   # what saving the teacher printed
    rc = main(["collect", "--config", str(ROOT / "configs/tiny/collect.yaml"), f"model.pretrained={rad}",
               f"data.train_file={prompts}", f"data.tokenizer={tmp_path / 'tok'}", f"output_dir={tmp_path / 'traj'}",
               "trainer.enable_progress_bar=false"])
    err = capsys.readouterr().err.strip().splitlines()   # seeding and weight loading come first
    assert rc == 2
    assert err[-1] == f"blockdistill collect: bad training data: {prompts}:5: expected a JSON object, got list"
    assert not (tmp_path / "traj").exists()
