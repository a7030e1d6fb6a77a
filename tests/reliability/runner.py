"""Runs ``blockdistill`` (or an ECHO stage) in this process with a fault injected for real.

    python -m tests.reliability.runner [--kill-at K] [--nan-at K [--nan-rank R]] [--kill-after-batches N]
        [--fsdp2] -- cli|echo ARGS...

``--kill-at K``: SIGKILL this process at the start of optimiser step K+1 (after the checkpoint
of step K was written, mid-epoch). ``--nan-at K``: the loss of step K+1 (on rank R, default
every rank) and of every later step is NaN. ``--kill-after-batches N``: SIGKILL a running
``collect`` right after its trajectory writer took its N-th batch (the shards full by then are
on disk and listed). ``--fsdp2``: train under Lightning's ``ModelParallelStrategy`` with the
block model sharded by FSDP2 (``fully_shard`` on each decoder layer and the root, the model's own
entry points registered as FSDP forward methods), on CPU with gloo; with ``--nan-at K`` it also
prints ``weights unchanged at step S`` at every later step whose start finds the full (gathered)
weights equal to those at step K's start. The library offers no FSDP2 option (FSDP1 cannot run
on CPU, see docs/reliability.md), so the sharding plan lives here. Faults are added through a
patched ``build_trainer``; the library itself has no test hook.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import lightning as L
import torch


class KillAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.step:
            sys.stdout.flush()
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)


class NaNFrom(L.Callback):
    def __init__(self, step: int, rank: int | None) -> None:
        self.step, self.rank = step, rank

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step >= self.step and self.rank in (None, trainer.global_rank) \
                and not hasattr(module, "_clean_loss"):
            module._clean_loss = module.compute_loss

            def nan_loss(b, *a, **k):
                loss, stats = module._clean_loss(b, *a, **k)
                return loss * float("nan"), stats

            module.compute_loss = nan_loss


class FrozenWhileSkipping(L.Callback):
    """From step ``step`` on every update is skipped: the full weights must stay as they were."""

    def __init__(self, step: int) -> None:
        self.step, self.before = step, None

    @staticmethod
    def full(module):  # collective under FSDP2: every rank calls it at the same step
        return {n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
                for n, p in module.net.named_parameters()}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.step:
            self.before = self.full(module)
        elif self.before is not None:
            now = self.full(module)
            if all(torch.equal(now[n], self.before[n]) for n in now):
                print(f"weights unchanged at step {trainer.global_step} (rank {trainer.global_rank})", flush=True)


def shard_with_fsdp2(module) -> None:
    """``configure_model`` of the ``--fsdp2`` runs: FSDP2 over each decoder layer, then the root."""
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    inner = getattr(module.net, "model", module.net)
    layers = set(getattr(inner, "_no_split_modules", None) or ())
    for m in list(module.net.modules()):
        if type(m).__name__ in layers:
            fully_shard(m)
    fully_shard(module.net)
    for name in ("diffusion_logits", "clean_logits"):  # called instead of forward by the losses
        if hasattr(module.net, name):
            register_fsdp_forward_method(module.net, name)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kill-at", type=int)
    ap.add_argument("--nan-at", type=int)
    ap.add_argument("--nan-rank", type=int)
    ap.add_argument("--kill-after-batches", type=int)
    ap.add_argument("--fsdp2", action="store_true")
    ap.add_argument("what", choices=["cli", "echo"])
    ap.add_argument("args", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    extra = []
    if a.kill_at is not None:
        extra.append(KillAt(a.kill_at))
    if a.nan_at is not None:
        extra.append(NaNFrom(a.nan_at, a.nan_rank))
    import blockdistill.recipes.train as rt

    orig = rt.build_trainer
    if a.fsdp2:
        from lightning.pytorch.strategies import ModelParallelStrategy

        from blockdistill.lightning.common import StageSystem

        StageSystem.configure_model = shard_with_fsdp2
        if a.nan_at is not None:
            extra.append(FrozenWhileSkipping(a.nan_at))

    def patched(cfg, callbacks=None, **kw):
        if a.fsdp2:
            kw["strategy"] = ModelParallelStrategy(data_parallel_size=cfg.devices, tensor_parallel_size=1,
                                                   save_distributed_checkpoint=False)
        return orig(cfg, callbacks=[*(callbacks or []), *extra], **kw)

    rt.build_trainer = patched
    if a.kill_after_batches is not None:
        from blockdistill.lightning.collect import TrajectoryWriter

        orig_write, seen = TrajectoryWriter.write_on_batch_end, []

        def write_then_die(self, *args, **kw):
            orig_write(self, *args, **kw)
            seen.append(1)
            if len(seen) >= a.kill_after_batches:
                sys.stdout.flush()
                sys.stderr.flush()
                os.kill(os.getpid(), signal.SIGKILL)

        TrajectoryWriter.write_on_batch_end = write_then_die
    args = [x for x in a.args if x != "--"]
    if a.what == "cli":
        from blockdistill.cli import main as cli

        return cli(args)
    from examples.echo_cxr.__main__ import main as echo

    return echo(args) or 0


if __name__ == "__main__":
    raise SystemExit(main())
