"""Curate MIMIC-CXR-JPG and CheXpert-Plus (and optionally ReXGradient-160K) into the JSONL files
the ECHO stages read, with an OpenAI-compatible LLM endpoint (tutorial 4, step 2).

    python -m examples.echo_cxr.data.curate --out data/curated \
        --mimic /data/mimic-cxr-jpg --mimic-reports /data/mimic-cxr-reports \
        --chexpert /data/chexpert-plus \
        --llm http://127.0.0.1:8000 --llm-model baichuan-inc/Baichuan-M2-32B

Without ``--llm`` it runs offline: the rule-based standardiser and no translation (English
only). Re-running resumes: finished steps are skipped. Writes ``<out>/train.jsonl``,
``<out>/dcd.jsonl``, ``<out>/eval.jsonl`` (every evaluation language), the per-language
``eval_<lang>.jsonl``, ``curated.jsonl``, ``rejects.jsonl`` and ``summary.json``. The docs
tests run it offline on the small real-format fixtures in ``tests/echo_cxr/fixtures``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# --8<-- [start:pipeline]
from examples.echo_cxr.data.curation import (
    BilingualAugment,
    HashingEmbedder,
    LLMStandardizer,
    MiniLMEmbedder,
    ModalityFilter,
    Pipeline,
    RuleStandardizer,
    SemanticDedup,
    SplitAssigner,
    write_splits,
)
from examples.echo_cxr.data.curation.base import atomic_open
from examples.echo_cxr.data.llm_client import ChatClient
from examples.echo_cxr.data.readers import CheXpertPlusReader, MimicCXRReader, ReXGradientReader


def build_readers(args: argparse.Namespace) -> list:
    """One reader per data set given on the command line (paths as the data sets ship)."""
    readers = []
    if args.mimic:
        readers.append(MimicCXRReader(Path(args.mimic), reports_root=args.mimic_reports and Path(args.mimic_reports)))
    if args.chexpert:
        readers.append(CheXpertPlusReader(Path(args.chexpert)))
    if args.rexgradient:
        readers.append(ReXGradientReader(Path(args.rexgradient), Path("metadata/train_metadata.json")))
    if not readers:
        raise SystemExit("give at least one of --mimic, --chexpert, --rexgradient")
    return readers


def build_pipeline(args: argparse.Namespace, sources: tuple[str, ...]) -> Pipeline:
    """The five ECHO curation stages; the LLM ones only when an endpoint is given."""
    llm = None
    if args.llm:
        # Any OpenAI-compatible server (vLLM, SGLang, ...): POST {base_url}/v1/chat/completions.
        llm = ChatClient(args.llm, model=args.llm_model, api_key=args.api_key, requests_per_s=args.requests_per_s)
    languages = {"en": args.eval_size, "zh": args.eval_size} if llm else {"en": args.eval_size}
    stages = [
        ModalityFilter(),                                              # 1. chest X-rays with content
        LLMStandardizer(llm, concurrency=args.concurrency) if llm else RuleStandardizer(),   # 2.
        SemanticDedup(MiniLMEmbedder() if args.embedder == "minilm" else HashingEmbedder(),  # 3.
                      threshold=0.95),
    ]
    if llm:
        stages.append(BilingualAugment(llm, fraction=0.5, seed=args.seed, concurrency=args.concurrency))  # 4.
    stages.append(SplitAssigner(dcd_size=args.dcd_size, eval_sizes=languages, eval_sources=sources,  # 5.
                                seed=args.seed))
    return Pipeline(stages, Path(args.out))
# --8<-- [end:pipeline]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m examples.echo_cxr.data.curate", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="data/curated", help="output folder (the ECHO configs read data/curated)")
    p.add_argument("--mimic", help="MIMIC-CXR-JPG root (mimic-cxr-2.0.0-metadata.csv, files/p10/...)")
    p.add_argument("--mimic-reports", help="MIMIC-CXR report tree (files/p10/.../s<id>.txt); default: --mimic")
    p.add_argument("--chexpert", help="CheXpert-Plus root (df_chexpert_plus_240401.csv, train/...)")
    p.add_argument("--rexgradient", help="ReXGradient-160K root (metadata/train_metadata.json, deid_png/...)")
    p.add_argument("--llm", help="base URL of an OpenAI-compatible server; omit to run offline")
    p.add_argument("--llm-model", default="baichuan-inc/Baichuan-M2-32B")
    p.add_argument("--api-key", default=None)
    p.add_argument("--requests-per-s", type=float, default=None)
    p.add_argument("--concurrency", type=int, default=16, help="parallel LLM requests (the server batches them)")
    p.add_argument("--embedder", choices=("minilm", "hashing"), default="minilm")
    p.add_argument("--eval-size", type=int, default=2000, help="evaluation studies per language")
    p.add_argument("--dcd-size", type=int, default=30_000, help="studies in the DCD subset")
    p.add_argument("--seed", type=int, default=0)
    return p


# --8<-- [start:main]
def main(argv: list[str] | None = None) -> dict:
    """Run the curation; returns the pipeline's summary and the split counts."""
    args = build_parser().parse_args(argv)

    readers = build_readers(args)
    summary = build_pipeline(args, tuple(r.source for r in readers)).run(readers)
    out = Path(args.out)
    counts = write_splits(out / "curated.jsonl", out)              # train, dcd, eval_<lang>
    with atomic_open(out / "eval.jsonl") as f:                     # the ECHO eval stage reads one file
        for part in sorted(out.glob("eval_*.jsonl")):
            f.write(part.read_text())
    for step in summary["stages"]:
        print(f"{step['stage']:>12}: {step['in']:>7} in, {step['out']:>7} out, {step['rejected']:>6} rejected")
    print(json.dumps(counts, indent=1))
    return {"summary": summary, "splits": counts}
# --8<-- [end:main]


if __name__ == "__main__":
    main()
