"""A tiny SDAR-layout checkpoint through ``import-sdar``, ``collect`` and one ``train-dcd`` step.

Guards against an import that other stages cannot read (block rules lost, a tokenizer that
reloads as another class, a mask id the collator rejects) and against CLI wiring of the
import / export commands.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from blockdistill import BlockDiffusionLM
from blockdistill.cli import main
from blockdistill.distill import TrajectoryDataset
from blockdistill.interop import load_sdar
from tests.interop.helpers import write_sdar_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def test_sdar_checkpoint_is_collected_and_distilled(tmp_path, capsys) -> None:
    ref, tok = write_sdar_checkpoint(tmp_path / "released", block_size=4)
    native = tmp_path / "native"
    assert main(["import-sdar", f"source={tmp_path / 'released'}", f"output_dir={native}", "dtype=float32"]) == 0
    assert "block_size=4 mask_token_id=96" in capsys.readouterr().out
    g = torch.Generator().manual_seed(0)
    with open(tmp_path / "prompts.jsonl", "w") as f:
        for i in range(6):
            words = " ".join(f"t{int(t)}" for t in torch.randint(0, 80, (3 + i,), generator=g))
            f.write(json.dumps({"id": f"q{i}", "prompt": words}) + "\n")
    common = [f"model.pretrained={native}", f"data.train_file={tmp_path / 'prompts.jsonl'}",
              "trainer.enable_progress_bar=false", "block.mask_token=<|MASK|>"]
    traj = tmp_path / "traj"
    assert main(["collect", "--config", str(ROOT / "configs/tiny/collect.yaml"), *common, f"output_dir={traj}",
                 "decode.repetition_ngram=0", "decode.max_new_tokens=8"]) == 0
    records = TrajectoryDataset(traj)
    assert len(records) == 6
    out = tmp_path / "student"
    assert main(["train-dcd", "--config", str(ROOT / "configs/tiny/dcd.yaml"), *common, f"trajectories={traj}",
                 "trainer.max_steps=1", f"trainer.default_root_dir={tmp_path / 'dcd'}", f"output_dir={out}"]) == 0
    student = BlockDiffusionLM.from_pretrained(out)
    teacher = BlockDiffusionLM.from_pretrained(native)
    assert student.spec == teacher.spec and student.spec.mask_token_id == 96
    assert any(not torch.equal(a, b) for a, b in zip(student.parameters(), teacher.parameters()))

    # ... and the distilled student goes back out in SDAR's layout, decoding as before.
    exported = tmp_path / "export"
    assert main(["export-sdar", f"model={out}", f"output_dir={exported}"]) == 0
    back, _ = load_sdar(exported)
    ids = torch.randint(0, 80, (1, 9), generator=g)
    with torch.no_grad():
        assert torch.equal(back.clean_logits(ids, torch.tensor([9])), student.clean_logits(ids, torch.tensor([9])))


def test_import_sdar_cli_rejects_missing_source(capsys) -> None:
    assert main(["import-sdar", "output_dir=x"]) == 2
    assert "source: is required" in capsys.readouterr().err
