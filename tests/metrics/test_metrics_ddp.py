"""Two CPU processes (gloo) give the same corpus scores as one process.

Guards against metrics that average per-process values, or that compute CIDEr-D's
document frequencies per process instead of over the gathered corpus.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from blockdistill.metrics import BLEU, ROUGEL, CIDErD, SemScore

N = 60
# Uneven shards, several batches each; the last layout leaves rank 1 without any data.
LAYOUTS = {
    "uneven": [[(0, 9), (9, 23), (23, 35)], [(35, 40), (40, 60)]],
    "rank1_empty": [[(0, 30), (30, 60)], []],
}
WORKLOADS = [("uneven", True), ("rank1_empty", False)]  # (layout, include SemScore)


def _metrics(with_semscore: bool) -> dict:
    metrics = {"bleu": BLEU(), "cider": CIDErD(), "rouge_l": ROUGEL()}
    if with_semscore:
        metrics["semscore"] = SemScore()
    return metrics


def _values(metrics: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, metric in metrics.items():
        value = metric.compute()
        if isinstance(value, dict):
            out.update({k: v.item() for k, v in value.items()})
        else:
            out[name] = value.item()
    return out


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    """Each layout in turn: update with this rank's batches, compute (which syncs), save."""
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="The ``compute`` method")  # the empty rank
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        from iu_xray_corpus import related_pairs

        preds, targets = related_pairs(200, 2)
        for layout, with_semscore in WORKLOADS:
            metrics = _metrics(with_semscore)
            for lo, hi in LAYOUTS[layout][rank]:
                for metric in metrics.values():
                    metric.update(preds[lo:hi], targets[lo:hi])
            torch.save(_values(metrics), Path(out_dir) / f"{layout}-rank{rank}.pt")
        # Both ranks finish their last collective before either tears gloo down: destroying the
        # group while the peer is still mid-exchange aborts the process ("terminate called ...").
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # Leave without the interpreter's teardown. Under load, gloo's background threads can still be
    # joinable when C++ static destructors run at exit, and the process then aborts ("terminate
    # called without an active exception", SIGABRT) after every result was saved. That abort
    # failed CI once; it says nothing about the metrics, whose results are already on disk.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs every workload in one 2-process spawn (process start-up dominates the cost)."""
    out = tmp_path_factory.mktemp("ddp")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(str(out / "init"), str(out)), nprocs=2, join=True)
    return out


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
@pytest.mark.parametrize(("layout", "with_semscore"), WORKLOADS)
def test_two_processes_match_one(
    layout: str, with_semscore: bool, two_process_results: Path
) -> None:
    from iu_xray_corpus import related_pairs

    preds, targets = related_pairs(200, 2)
    single = _metrics(with_semscore)
    for metric in single.values():
        metric.update(preds[:N], targets[:N])
    expected = _values(single)
    for rank in range(2):
        got = torch.load(two_process_results / f"{layout}-rank{rank}.pt")
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            tol = 1e-6 if key == "semscore" else 1e-12
            assert got[key] == pytest.approx(value, abs=tol, rel=0), (rank, key)
