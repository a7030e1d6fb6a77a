"""Issue 19 §3: damaged checkpoints and saved models are refused, naming the file; loading never runs code.

Every fault is made on disk for real: a byte flipped in the middle of the file, the file cut in
half, the file emptied; a checkpoint crafted so that unpickling it runs code (a directory is
created) goes through Lightning's own resume path with ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from blockdistill import BlockDiffusionLM
from blockdistill.config import NoiseConfig, OptimConfig, TrainerConfig
from blockdistill.lightning import RADSystem
from blockdistill.lightning.checkpoint_io import VerifiedCheckpointIO
from blockdistill.recipes import fit
from blockdistill.utils.checksum import (
    DIR_MANIFEST,
    DamagedFileError,
    read_sums,
    sha256_file,
    sidecar,
)
from tests.reliability.test_nan import setup


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def empty(path: Path) -> None:
    path.write_bytes(b"")


FAULTS = {"flipped-byte": flip, "truncated": truncate, "zero-byte": empty}


def _train(root: Path, steps: int):
    bd, data = setup()
    cfg = TrainerConfig(max_steps=steps, default_root_dir=str(root), enable_progress_bar=False, save_every_n_steps=1)
    return fit(RADSystem(bd, OptimConfig(lr=1e-3), NoiseConfig(), "rad", seed=0), data, cfg, logger=False)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    _train(root, 2)
    return root


def test_checkpoint_has_a_matching_sidecar(trained_run):
    last = trained_run / "checkpoints" / "last.ckpt"
    assert read_sums(sidecar(last)) == [(sha256_file(last), "last.ckpt")]


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_resume_from_a_damaged_checkpoint_is_refused(trained_run, tmp_path, fault):
    root = tmp_path / "run"
    shutil.copytree(trained_run, root)
    last = root / "checkpoints" / "last.ckpt"
    FAULTS[fault](last)
    with pytest.raises(DamagedFileError) as e:
        _train(root, 4)
    msg = str(e.value)
    assert str(last) in msg and "delete last.ckpt" in msg, msg
    assert ("empty" if fault == "zero-byte" else "truncated or modified") in msg


def test_a_kill_between_the_renames_leaves_a_checkpoint_that_verifies(tmp_path, monkeypatch):
    io = VerifiedCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": torch.tensor(1)}, path)

    real_replace = os.replace

    def killed(src, dst):  # the process dies right before the new checkpoint is moved into place
        if Path(dst) == path:
            raise KeyboardInterrupt("killed")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert len(read_sums(sidecar(path))) == 2  # old and new digest listed
    assert int(io.load_checkpoint(path)["step"]) == 1


class RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_a_checkpoint_that_runs_code_is_refused_on_resume(trained_run, tmp_path, monkeypatch):
    root = tmp_path / "run"
    shutil.copytree(trained_run, root)
    last = root / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    marker = tmp_path / "code-ran"
    ckpt["hyper_parameters"]["payload"] = RunsCode(marker)
    last.unlink()
    VerifiedCheckpointIO().save_checkpoint(ckpt, last)  # a valid checksum: only the pickle is hostile
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(DamagedFileError, match="weights only"):
        _train(root, 4)
    assert not marker.exists()
    torch.load(last)  # the same file loaded the unsafe way (what the variable forces) does run it
    assert marker.is_dir()


def test_a_truncated_checkpoint_without_a_sidecar_is_refused_not_a_raw_torch_error(trained_run, tmp_path):
    """A checkpoint Lightning wrote without us (no sidecar), cut in half: still our error, naming it."""
    root = tmp_path / "run"
    shutil.copytree(trained_run, root)
    last = root / "checkpoints" / "last.ckpt"
    sidecar(last).unlink()
    truncate(last)
    with pytest.raises(DamagedFileError) as e, pytest.warns(UserWarning, match="cannot be verified"):
        _train(root, 4)
    assert str(last) in str(e.value) and "the file is damaged" in str(e.value) and "delete last.ckpt" in str(e.value)


def test_a_lora_checkpoint_is_checksummed_and_a_damaged_one_refused(tmp_path):
    """LoRA runs checkpoint only the trained weights; the same sidecar covers them."""
    from tests.interop.test_lora import LORA, OPTIM, make_bd, trainer_cfg
    from tests.interop.test_lora import fit as lora_fit

    bd = make_bd()
    lora_fit(RADSystem(bd, OPTIM, NoiseConfig(), lora=LORA), bd, tmp_path, steps=2)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert trainer_cfg(tmp_path).default_root_dir == str(tmp_path)
    assert read_sums(sidecar(last)) == [(sha256_file(last), "last.ckpt")]
    flip(last)
    bd = make_bd()
    with pytest.raises(DamagedFileError, match="truncated or modified"):
        lora_fit(RADSystem(bd, OPTIM, NoiseConfig(), lora=LORA), bd, tmp_path, steps=4, ckpt_path=str(last))


def _saved_model(tmp_path) -> Path:
    bd, _ = setup()
    bd.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_saved_model_lists_every_file(tmp_path):
    model = _saved_model(tmp_path)
    names = {n for _, n in read_sums(model / DIR_MANIFEST)}
    assert names == {p.name for p in model.iterdir() if p.name != DIR_MANIFEST}
    assert "model.safetensors" in names and "config.json" in names
    BlockDiffusionLM.from_pretrained(model)  # an intact one loads


def test_a_model_without_a_manifest_loads_unverified(tmp_path):
    """Saved by Hugging Face or an older blockdistill: no checksums.sha256, nothing to check."""
    model = _saved_model(tmp_path)
    verified = BlockDiffusionLM.from_pretrained(model).model.state_dict()
    (model / DIR_MANIFEST).unlink()
    unverified = BlockDiffusionLM.from_pretrained(model).model.state_dict()
    assert verified.keys() == unverified.keys() and all(torch.equal(verified[k], unverified[k]) for k in verified)


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_a_damaged_saved_model_is_refused(tmp_path, fault, name):
    model = _saved_model(tmp_path)
    FAULTS[fault](model / name)
    with pytest.raises(DamagedFileError) as e:
        BlockDiffusionLM.from_pretrained(model)
    assert str(model / name) in str(e.value) and "save it again" in str(e.value)


def test_a_damaged_saved_model_is_refused_by_the_cli(tmp_path, capsys):
    from blockdistill.cli import main
    from tests.reliability.helpers import write_text_data

    tok, data = write_text_data(tmp_path)
    model = _saved_model(tmp_path)
    flip(model / "model.safetensors")
    rc = main(["collect", "--config", "configs/tiny/collect.yaml", f"model.pretrained={model}",
               f"data.tokenizer={tok}", f"data.train_file={data}", f"output_dir={tmp_path / 'traj'}",
               "trainer.enable_progress_bar=false"])
    err = capsys.readouterr().err
    assert rc == 3 and str(model / "model.safetensors") in err, err[-2000:]


def test_the_cli_refuses_a_damaged_last_ckpt_in_one_line(tmp_path):
    """A real CLI process (``python -m blockdistill``) resuming from a flipped ``last.ckpt``: exit 3,
    one ``damaged file`` line naming the file, no traceback, and the damaged file left as it was."""
    import subprocess
    import sys

    from tests.reliability.helpers import ENV, ROOT, write_text_data

    tok, data = write_text_data(tmp_path)
    args = [sys.executable, "-m", "blockdistill", "train-rad", "-c", "configs/tiny/rad.yaml", "trainer.max_steps=2",
            "trainer.save_every_n_steps=1", "trainer.enable_progress_bar=false", f"data.tokenizer={tok}",
            f"data.train_file={data}", f"trainer.default_root_dir={tmp_path / 'run'}",
            f"output_dir={tmp_path / 'run' / 'model'}"]

    def run(steps):
        return subprocess.run([*args, f"trainer.max_steps={steps}"], capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, **ENV}, timeout=300)

    assert run(2).returncode == 0
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    flip(last)
    damaged = last.read_bytes()
    res = run(4)
    lines = [ln for ln in res.stderr.splitlines() if "damaged file" in ln]
    assert res.returncode == 3 and len(lines) == 1, res.stderr[-3000:]
    assert str(last) in lines[0] and "delete last.ckpt" in lines[0]
    assert "Traceback" not in res.stderr
    assert last.read_bytes() == damaged  # nothing overwrote it


@pytest.mark.parametrize("strategy", ["fsdp", "deepspeed_stage_2"])
def test_under_fsdp_and_deepspeed_the_resume_path_is_checked_before_lightning_reads_it(trained_run, tmp_path,
                                                                                        monkeypatch, strategy):
    """Those strategies read a checkpoint file with Lightning's own unpickler, bypassing the
    CheckpointIO: ``resume_path`` checks it instead (no FSDP run here: CPU only)."""
    from blockdistill.lightning.trainer import resume_path

    root = tmp_path / "run"
    shutil.copytree(trained_run, root)
    cfg = TrainerConfig(default_root_dir=str(root), strategy=strategy)
    last = root / "checkpoints" / "last.ckpt"
    assert resume_path(cfg) == str(last)
    ckpt = torch.load(last, weights_only=True)
    marker = tmp_path / "code-ran"
    ckpt["hyper_parameters"]["payload"] = RunsCode(marker)
    last.unlink()
    VerifiedCheckpointIO().save_checkpoint(ckpt, last)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(DamagedFileError, match="weights only"):
        resume_path(cfg)
    assert not marker.exists()
    flip(last)
    with pytest.raises(DamagedFileError, match="truncated or modified"):
        resume_path(cfg)
