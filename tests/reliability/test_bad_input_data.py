"""Bad training data is named by file and line before training starts (issue 19, point 5).

Each bad line is written for real into a train.jsonl that the CLI's train-ar / train-rad read;
the error must name ``train.jsonl:<line>``, not a position in a shuffled batch, and come before
any step (no checkpoint, no model written).

Run: OMP_NUM_THREADS=1 PYTHONPATH=src:. .venv/bin/python -m pytest tests/reliability/test_bad_input_data.py -q
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from blockdistill.cli import main
from blockdistill.data import BlockCollator
from blockdistill.data.checks import BadExampleError, check_examples
from blockdistill.lightning import JsonlExamples
from blockdistill.testing import tiny_tokenizer

GOOD = {"prompt": "t1 t2 t3", "response": "t4 t5"}


def _write(tmp_path: Path, bad: bytes, at: int = 3, n: int = 6) -> Path:
    lines = [json.dumps(GOOD).encode() for _ in range(n)]
    lines.insert(at - 1, bad)
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    tiny_tokenizer().save_pretrained(tmp_path / "tok")
    return path


def _train(tmp_path: Path, path: Path, stage: str = "train-rad", *extra: str) -> int:
    cfg = "configs/tiny/rad.yaml" if stage == "train-rad" else "configs/tiny/ar.yaml"
    return main([stage, "-c", cfg, f"data.tokenizer={tmp_path / 'tok'}", f"data.train_file={path}",
                 "trainer.max_steps=1", "data.batch_size=2", f"trainer.default_root_dir={tmp_path / 'run'}",
                 f"output_dir={tmp_path / 'out'}", "trainer.enable_progress_bar=false", *extra])


@pytest.mark.parametrize("bad,why", [
    (json.dumps({"prompt": "", "response": "t4"}).encode(), "empty prompt"),
    (json.dumps({"prompt": "t1", "response": "   "}).encode(), "empty response"),
    (json.dumps({"prompt_ids": [], "response_ids": [4]}).encode(), "empty prompt"),
    (json.dumps({"prompt_ids": [5], "response_ids": []}).encode(), "empty response"),
    ('{"prompt": "caf\xe9", "response": "t4"}'.encode("latin-1"), r"not valid UTF-8 \(byte b'\\xe9' at column 16\)"),
    (json.dumps({"prompt_ids": [5, 6], "response_ids": [7, 500]}).encode(),
     r"token id 500 in the response is outside the model's vocabulary \[0, 97\)"),
    (json.dumps({"prompt_ids": [-1, 6], "response_ids": [7]}).encode(), "token id -1 in the prompt"),
    (json.dumps({"prompt_ids": [5, 6.5], "response_ids": [7]}).encode(), "not an integer token id"),
    (json.dumps({"prompt_ids": [5] * 600, "response_ids": [7]}).encode(),
     r"604 tokens \(prompt 600 \+ response 1 \+ EOS, padded to whole blocks of 4\) exceed the backbone's context \(512\)"),
    (b'["a list"]', "expected a JSON object"),
])
def test_a_bad_line_is_named_by_file_and_line_before_training(tmp_path, capsys, bad, why) -> None:
    path = _write(tmp_path, bad, at=3)
    assert _train(tmp_path, path) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("blockdistill train-rad: bad training data:") and err.count("\n") == 0, err
    assert f"{path}:3:" in err, err
    assert re.search(why, err), err
    assert not (tmp_path / "out").exists() and not (tmp_path / "run" / "checkpoints").exists()


def test_without_max_length_every_example_is_checked_against_the_context(tmp_path, capsys) -> None:
    """configs/tiny/ar.yaml sets no data.max_length; the 512-position context is the limit (AR: block 1)."""
    path = _write(tmp_path, json.dumps({"prompt_ids": [5] * 500, "response_ids": [7] * 12}).encode(), at=5)
    assert _train(tmp_path, path, "train-ar") == 2
    err = capsys.readouterr().err
    assert f"{path}:5: 513 tokens" in err and "exceed the backbone's context (512)" in err
    # With data.max_length, that is the limit instead (here: tighter than the context).
    path = _write(tmp_path, json.dumps({"prompt_ids": [5] * 20, "response_ids": [7]}).encode(), at=2)
    assert _train(tmp_path, path, "train-ar", "data.max_length=16") == 2
    assert f"{path}:2: 22 tokens" in capsys.readouterr().err


def test_every_bad_example_is_counted() -> None:
    rows = [{"prompt_ids": [1], "response_ids": [2]}, {"prompt_ids": [], "response_ids": [2]},
            {"prompt_ids": [1], "response_ids": [99]}, {"prompt_ids": [1], "response_ids": []}]
    with pytest.raises(BadExampleError, match=r"^f:2: empty prompt \(and 2 more bad examples: f:3, f:4\)$"):
        check_examples(rows, ["f:1", "f:2", "f:3", "f:4"], block_size=2, vocab_size=50)


def test_the_collator_names_the_record_not_the_batch_position() -> None:
    coll = BlockCollator(4, eos_token_id=1)
    batch = [{"prompt_ids": [3], "response_ids": [4]}, {"prompt_ids": [3], "response_ids": [], "study_id": "s123"}]
    with pytest.raises(ValueError, match="s123 has an empty response"):
        coll(batch)


def test_jsonl_examples_keep_the_line_of_each_row(tmp_path) -> None:
    path = _write(tmp_path, b"", at=2, n=3)  # a blank line is skipped, later lines keep their numbers
    ex = JsonlExamples(path, tiny_tokenizer())
    assert ex.names == [f"{path}:1", f"{path}:3", f"{path}:4"] and len(ex) == 3
