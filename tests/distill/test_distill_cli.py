"""``blockdistill collect`` then ``train-dcd`` (offline and online) from the shipped tiny configs.

Guards against CLI wiring that diverges from the library (a config field that is never
used, an offline path that cannot read what ``collect`` wrote) and against shipped YAML that
no longer loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from blockdistill import BlockDiffusionLM
from blockdistill.cli import main
from blockdistill.config import load_config
from blockdistill.distill import CollectConfig, DCDTrainConfig, TrajectoryDataset
from blockdistill.models.provenance import mark_trained
from blockdistill.testing import tiny_qwen2, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[2]


def teacher_dir(tmp_path: Path) -> Path:
    tok = tiny_tokenizer()
    bd = BlockDiffusionLM.from_causal_lm(tiny_qwen2(), tok, block_size=4)
    mark_trained(bd, "rad")  # stands in for a RAD-trained teacher (collect refuses an untrained one)
    bd.save_pretrained(tmp_path / "rad", tokenizer=tok)
    # Tokenizer in its own directory (next to a qwen2 config.json it would reload as Qwen2Tokenizer).
    tiny_tokenizer().save_pretrained(tmp_path / "tok")
    g = torch.Generator().manual_seed(0)
    with open(tmp_path / "prompts.jsonl", "w") as f:
        for i in range(10):
            words = " ".join(f"t{int(t)}" for t in torch.randint(0, 80, (int(torch.randint(2, 8, (1,), generator=g)),),
                                                                  generator=g))
            f.write(json.dumps({"id": f"q{i}", "prompt": words}) + "\n")
    return tmp_path / "rad"


def test_shipped_configs_load() -> None:
    load_config(CollectConfig, ROOT / "configs/tiny/collect.yaml")
    load_config(DCDTrainConfig, ROOT / "configs/tiny/dcd.yaml")


def test_collect_then_train_offline_and_online(tmp_path, capsys) -> None:
    rad = teacher_dir(tmp_path)
    common = [f"model.pretrained={rad}", f"data.train_file={tmp_path / 'prompts.jsonl'}", f"data.tokenizer={tmp_path / 'tok'}",
              "trainer.enable_progress_bar=false"]
    traj = tmp_path / "traj"
    rc = main(["collect", "--config", str(ROOT / "configs/tiny/collect.yaml"), *common, f"output_dir={traj}",
               "shard_size=4", "decode.repetition_ngram=0"])
    assert rc == 0
    summary = json.loads((traj / "manifest.json").read_text())
    assert summary["num_examples"] == 10 and summary["meta"]["top_k"] == 8
    assert len(TrajectoryDataset(traj)) == 10
    rc = main(["collect", "--config", str(ROOT / "configs/tiny/collect.yaml"), *common, f"output_dir={traj}",
               "decode.repetition_ngram=0"])
    assert rc == 0 and "collected 10 trajectories" in capsys.readouterr().out  # resumed: nothing new

    on_policy = ["distill.on_policy_fraction=0.5", "distill.on_policy_start=0"]
    for mode, extra in (("offline", [f"trajectories={traj}"]), ("online", ["trajectories=null"]),
                        ("offline_on_policy", [f"trajectories={traj}", *on_policy]),
                        ("online_on_policy", ["trajectories=null", *on_policy])):
        out = tmp_path / f"student_{mode}"
        rc = main(["train-dcd", "--config", str(ROOT / "configs/tiny/dcd.yaml"), *common, *extra,
                   "trainer.max_steps=2", f"trainer.default_root_dir={tmp_path / mode}", f"output_dir={out}"])
        assert rc == 0
        student = BlockDiffusionLM.from_pretrained(out)
        teacher = BlockDiffusionLM.from_pretrained(rad)
        assert student.spec == teacher.spec
        same = [n for (n, a), (_, b) in zip(student.named_parameters(), teacher.named_parameters())
                if torch.equal(a, b)]
        # Two optimiser steps move every weight of the student (Adam's first step changes each
        # weight whose gradient is nonzero by about lr): none may be left at the teacher's value.
        assert same == [], f"{mode}: these weights did not train: {same[:5]}"
        ckpt = torch.load(tmp_path / mode / "checkpoints" / "last.ckpt", weights_only=False)
        assert ckpt["global_step"] == 2
        # The saved student is the checkpoint's model, tensor for tensor, not the teacher's copy.
        trained = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
        saved = dict(student.named_parameters())
        assert trained and set(saved) <= set(trained), sorted(set(saved) - set(trained))[:5]
        assert all(torch.equal(saved[k], trained[k].to(saved[k].dtype)) for k in saved)
        assert not any(k.startswith(("collector.", "on_policy.")) for k in ckpt["state_dict"])
        assert ckpt["hyper_parameters"]["dcd"]["on_policy_fraction"] == (0.5 if "on_policy" in mode else 0.0)
