"""ECHO evaluation: the demo's five variants side by side on a chest X-ray split.

Variants (names configurable), each a model key plus a sampler:

=====================  ===========  ======================================  ==========
variant                model key    sampler                                 block size
=====================  ===========  ======================================  ==========
``ar``                 ``ar``       greedy AR, KV cache                     --
``base_multistep_L4``  ``base_L4``  threshold tau (0.85), fused cache       4
``base_multistep_L8``  ``base_L8``  threshold tau (0.85), fused cache       8
``base_onestep_L8``    ``base_L8``  one step per block (forced), fused      8
``echo_onestep_L8``    ``echo_L8``  one step per block (distilled), fused   8
=====================  ===========  ======================================  ==========

Scores per language: clinical macro/micro F1 (rule-based labels of the generated report vs the
reference report, :class:`ClinicalScorer`, per finding too), ROUGE-L, BLEU-4, CIDEr-D,
SemScore (optional), and speed (tokens/s, TPF, NFE per report). ``results.json`` holds
``rows`` in the demo's schema (:data:`ROW_KEYS`), and ``samples``: a few generated reports
next to the truth.

Usage::

    python -m examples.echo_cxr.evaluate --ar runs/ar --base-l4 runs/rad_L4 --base-l8 runs/rad_L8 \\
        --echo runs/dcd_L8 --synthetic 64 --image-size 64 --out runs/eval

    # from Python
    variants = echo_variants({"ar": ar, "base_L4": b4, "base_L8": b8, "echo_L8": echo})
    result = run_echo_eval(variants, dataset, tokenizer, out_dir="runs/eval")
    result["rows"]
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blockdistill.evaluation import (
    EvalReport,
    SamplerConfig,
    TextMetrics,
    Variant,
    atomic_write_text,
    default_lang,
    evaluate_variants,
    markdown_table,
    write_json,
)
from blockdistill.models.adapter import BlockDiffusionLM
from examples.echo_cxr.clinical_f1 import count, scores_from_counts
from examples.echo_cxr.labeler import CHEXPERT_FINDINGS, label_report

VARIANTS: tuple[str, ...] = ("ar", "base_multistep_L4", "base_multistep_L8", "base_onestep_L8", "echo_onestep_L8")
"""The demo's variants, in table order."""
MODEL_KEYS: tuple[str, ...] = ("ar", "base_L4", "base_L8", "echo_L8")
"""Keys of the ``models`` mapping :func:`echo_variants` takes."""
ROW_KEYS: tuple[str, ...] = ("variant", "lang", "clinical_macro_f1", "clinical_micro_f1", "rouge_l", "bleu4",
                             "cider_d", "semscore", "repetition_rate", "tokens_per_s", "tokens_per_s_decode", "tpf",
                             "nfe", "n")
"""The demo's ``results.json`` row schema (``semscore`` is None when SemScore is off)."""

# variant -> (model key, policy or None for AR, block size the model must have)
_RECIPES: dict[str, tuple[str, str | None, int | None]] = {
    "ar": ("ar", None, None),
    "base_multistep_L4": ("base_L4", "threshold", 4),
    "base_multistep_L8": ("base_L8", "threshold", 8),
    "base_onestep_L8": ("base_L8", "one_step", 8),
    "echo_onestep_L8": ("echo_L8", "one_step", 8),
}


@dataclass
class ClinicalScorer:
    """Clinical P/R/F1 of generated reports against reference reports, both labelled by
    :func:`~examples.echo_cxr.labeler.label_report` (an extra scorer for the runner).

    Each report is labelled in its row's language; with several references, the first one is
    used. Returns ``clinical_{micro,macro}_{precision,recall,f1}`` and ``clinical_f1/<finding>``.
    """

    findings: Sequence[str] = CHEXPERT_FINDINGS
    """Findings scored (default the 14 CheXpert observations)."""
    mode: str = "positive"
    """``"positive"`` (positive-only CE metric) or ``"status"``; see :mod:`examples.echo_cxr.clinical_f1`."""
    uncertain_as_positive: bool = False
    observed_only: bool = True
    """Average (and report per finding) only the findings that carry a label in this group's
    predictions or references, as scikit-learn does when no label set is given; a finding
    nobody mentions would add a 0/0 = 0 to the macro average. False: all of ``findings``."""

    def labels(self, texts: Sequence[str], langs: Sequence[str]) -> list[dict[str, int | None]]:
        return [label_report(t, lang if lang in ("en", "zh") else None) for t, lang in zip(texts, langs)]

    def __call__(self, preds: list[str], refs: list[list[str]], metas: list[dict[str, Any]]) -> dict[str, float]:
        langs = [default_lang(m) for m in metas]
        counts = count(self.labels(preds, langs), self.labels([r[0] for r in refs], langs), self.findings,
                       self.mode, self.uncertain_as_positive)
        if self.observed_only and any(sum(c) for c in counts.values()):
            counts = {f: c for f, c in counts.items() if sum(c)}
        s = scores_from_counts(counts)
        out = {f"clinical_{avg}_{k}": getattr(getattr(s, avg), k)
               for avg in ("micro", "macro") for k in ("precision", "recall", "f1")}
        out.update({f"clinical_f1/{f}": prf.f1 for f, prf in s.per_finding.items()})
        return out


def echo_variants(
    models: Mapping[str, BlockDiffusionLM],
    *,
    names: Mapping[str, str] | None = None,
    include: Sequence[str] = VARIANTS,
    tau: float = 0.85,
    cache: str = "fused",
    max_new_tokens: int = 128,
    stop_at_eos: bool = True,
    check_block_size: bool = True,
) -> list[Variant]:
    """The demo variants built from ``models`` (keys :data:`MODEL_KEYS`; only those the included
    variants need).

    Args:
        names: new display names, e.g. ``{"echo_onestep_L8": "ECHO"}``.
        include: which of :data:`VARIANTS` to build, in this order.
        tau: threshold of the multi-step variants.
        cache: cache mode of the block variants.
        max_new_tokens, stop_at_eos: for every variant.
        check_block_size: raise when a model's block size differs from the variant's L.
    """
    names = dict(names or {})
    unknown = sorted((set(include) | set(names)) - set(_RECIPES))
    if unknown:
        raise ValueError(f"unknown ECHO variants {unknown}; expected names from {VARIANTS}")
    out = []
    for v in include:
        key, policy, L = _RECIPES[v]
        if key not in models:
            raise KeyError(f"variant {v!r} needs models[{key!r}]; got keys {sorted(models)}")
        model = models[key]
        if check_block_size and L is not None and model.spec.block_size != L:
            raise ValueError(f"variant {v!r} expects block size {L}, but models[{key!r}] has block size "
                             f"{model.spec.block_size}")
        if policy is None:
            sampler = SamplerConfig("ar", max_new_tokens=max_new_tokens, stop_at_eos=stop_at_eos)
        else:
            params = {"tau": tau} if policy == "threshold" else {}
            sampler = SamplerConfig("block", policy, params, cache, max_new_tokens, stop_at_eos)
        out.append(Variant(names.get(v, v), model, sampler))
    return out


def echo_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A runner row in the demo schema (:data:`ROW_KEYS`). ``nfe`` is decode forwards per report
    (``forwards_per_sample``), so ``tpf`` = mean generated length / ``nfe``."""
    return {"variant": row["variant"], "lang": row["lang"], "clinical_macro_f1": row["clinical_macro_f1"],
            "clinical_micro_f1": row["clinical_micro_f1"], "rouge_l": row["rouge_l"], "bleu4": row["bleu_4"],
            "cider_d": row["cider_d"], "semscore": row.get("semscore"), "repetition_rate": row["repetition_rate"],
            "tokens_per_s": row["tokens_per_s"], "tokens_per_s_decode": row["tokens_per_s_decode"],
            "tpf": row["tpf"], "nfe": row["forwards_per_sample"], "n": row["n"]}


def echo_results(report: EvalReport, samples: int = 3) -> dict[str, Any]:
    """The demo's results: ``rows`` (per variant and language, demo schema), ``by_source`` (same
    schema plus ``source``, when a language mixes sources), ``per_finding`` (variant -> language
    -> finding -> F1), ``samples`` (``samples`` reports per language: truth and every variant's
    text), ``variants`` (settings, whole-run statistics), ``details`` (the runner's full rows) and ``predictions``
    (variant -> every generated report with its reference)."""
    rows = [r for r in report.rows if r["group"] == "lang"]
    per_finding: dict[str, dict[str, dict[str, float]]] = {}
    for r in rows:
        per_finding.setdefault(r["variant"], {})[r["lang"]] = {
            k.split("/", 1)[1]: v for k, v in r.items() if k.startswith("clinical_f1/")}
    return {
        "rows": [echo_row(r) for r in rows],
        "by_source": [{**echo_row(r), "source": r["source"]} for r in report.rows if r["group"] == "lang/source"],
        "per_finding": per_finding,
        "samples": report.side_by_side(samples),
        "variants": [res.summary() for res in report.results],
        "details": report.rows,
        "predictions": {res.name: [p.as_dict() for p in res.predictions] for res in report.results},
    }


def results_markdown(results: Mapping[str, Any]) -> str:
    """The results table, then the sample reports."""
    lines = ["# ECHO evaluation", "", markdown_table(results["rows"], ROW_KEYS)]
    if results["samples"]:
        lines += ["## Samples", ""]
        for s in results["samples"]:
            lines += [f"### Example {s['index']} ({s['lang']})", "", f"**Reference:** {_one_line(s['reference'])}", ""]
            lines += [f"- **{name}:** {_one_line(text)}" for name, text in s["predictions"].items()]
            lines.append("")
    return "\n".join(lines)


def write_echo_predictions(results: Mapping[str, Any], records: Sequence[Any], out_dir: str | Path) -> list[Path]:
    """Each variant's reports as ECHO records, ``out_dir/predictions/<variant>.json``: the study's
    ``sample_id``, ``images`` (relative to the file) and ``ground_truth``, plus ``output`` (the generated
    text) and its ``findings`` / ``impression``. ``records[i]`` is the record of evaluation example ``i``."""
    from examples.echo_cxr.data.echo_json import echo_dict, write_echo_records
    from examples.echo_cxr.data.processor import split_report

    folder = Path(out_dir) / "predictions"
    paths = []
    for name, preds in results["predictions"].items():
        rows = []
        for p in preds:
            rec = records[p["index"]]
            findings, impression = split_report(p["prediction"])
            rows.append(echo_dict(rec, folder.resolve(), language=rec.language, output=p["prediction"],
                                  findings=findings, impression=impression, output_tokens=p["length"]))
        paths.append(write_echo_records(folder / f"{name}.json", rows))
    return paths


def _one_line(text: str) -> str:
    return " / ".join(part.strip() for part in text.splitlines() if part.strip()) or "(empty)"


def run_echo_eval(
    variants: Sequence[Variant],
    examples: Any,
    tokenizer: Any,
    *,
    out_dir: str | Path | None = None,
    semscore: bool | str | Path = True,
    clinical: ClinicalScorer | None = None,
    batch_size: int = 8,
    samples: int = 3,
    warmup: int = 0,
    progress: bool = True,
    repetition_n: int = 4,
) -> dict[str, Any]:
    """Evaluate ``variants`` on ``examples`` (ECHO processor samples: a list or a ``Dataset``).

    Writes ``results.json`` and ``results.md`` into ``out_dir`` when given (atomically) and
    returns the :func:`echo_results` dict.
    """
    report = evaluate_variants(variants, examples, tokenizer, metrics=TextMetrics(semscore=semscore, repetition_n=repetition_n),
                               scorers={"clinical": clinical or ClinicalScorer()}, batch_size=batch_size,
                               warmup=warmup, progress=progress)
    results = echo_results(report, samples)
    if out_dir is not None:
        out = Path(out_dir)
        write_json(out / "results.json", results)
        atomic_write_text(out / "results.md", results_markdown(results))
    return results


# ---------------------------------------------------------------------------- command line
def load_model(path: str | Path, tokenizer: Any, device: str = "cpu", mask_token: str = "[MASK]") -> BlockDiffusionLM:
    """A model saved by ``BlockDiffusionLM.save_pretrained``, or a plain AR checkpoint (no block
    rules, e.g. ECHO_AR) wrapped for the AR sampler with ``tokenizer``'s ``mask_token`` (added
    when missing; the AR sampler only uses it to keep the mask out of the argmax)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    from blockdistill.models.adapter import CONFIG_KEY, BlockSpec

    config = AutoConfig.from_pretrained(path)
    if getattr(config, CONFIG_KEY, None):
        return BlockDiffusionLM.from_pretrained(path).to(device).eval()
    auto = AutoModelForImageTextToText if hasattr(config, "vision_config") else AutoModelForCausalLM
    model = auto.from_pretrained(path)
    mask_id = tokenizer.get_vocab().get(mask_token)
    if mask_id is None:
        return BlockDiffusionLM.from_causal_lm(model, tokenizer, block_size=1, mask_token=mask_token).to(device).eval()
    # The tokenizer already carries the mask token (saved with the block models).
    if model.get_input_embeddings().num_embeddings <= mask_id:
        model.resize_token_embeddings(mask_id + 1, mean_resizing=False)
    eos = tokenizer.eos_token_id
    spec = BlockSpec(1, mask_id, eos, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos)
    return BlockDiffusionLM(model, spec).to(device).eval()


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for key, flag in zip(MODEL_KEYS, ("--ar", "--base-l4", "--base-l8", "--echo")):
        p.add_argument(flag, dest=key, help=f"model directory for models[{key!r}]")
    p.add_argument("--tokenizer", help="tokenizer directory (default: the first model directory holding one)")
    p.add_argument("--records", help="CXRRecord JSONL or ECHO JSON/JSONL to evaluate (images resolved next to it); "
                                     "reports are also written as ECHO records under OUT/predictions/")
    p.add_argument("--synthetic", type=int, default=0, help="else: this many synthetic studies")
    p.add_argument("--seed", type=int, default=1, help="synthetic stream seed (pick one not used for training)")
    p.add_argument("--languages", nargs="+", default=["en", "zh"])
    p.add_argument("--image-size", type=int, help="square synthetic-size images (VisionSettings.tiny); default: model's")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--out", required=True)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--tau", type=float, default=0.85)
    p.add_argument("--no-semscore", action="store_true")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)

    from blockdistill.models.backbones import load_tokenizer
    from examples.echo_cxr.data.dataset import CXRRecordDataset, SyntheticCXRDataset, read_records
    from examples.echo_cxr.data.processor import CXRProcessor, VisionSettings

    needed = {_RECIPES[v][0] for v in a.variants if v in _RECIPES}
    paths = {k: getattr(a, k) for k in MODEL_KEYS if k in needed}
    missing = sorted(k for k, v in paths.items() if v is None)
    if missing:
        p.error(f"variants {a.variants} need model directories for {missing}")
    tok_dir = a.tokenizer or next((v for v in paths.values() if (Path(v) / "tokenizer_config.json").is_file()), None)
    if tok_dir is None:
        p.error("no model directory holds a tokenizer; pass --tokenizer")
    tokenizer = load_tokenizer(tok_dir)
    models = {k: load_model(v, tokenizer, a.device) for k, v in paths.items()}
    vc = next(iter(models.values())).model.config.vision_config
    vision = (VisionSettings.tiny(a.image_size, int(vc.patch_size)) if a.image_size
              else VisionSettings.from_vision_config(vc))
    proc = CXRProcessor(tokenizer, vision)
    records = None
    if a.records:
        records = [r for r in read_records(a.records) if r.language in a.languages]
        data = CXRRecordDataset(records, proc)
    elif a.synthetic > 0:
        data = SyntheticCXRDataset(a.synthetic, proc, seed=a.seed, languages=a.languages)
    else:
        p.error("give --records or --synthetic N")
    variants = echo_variants(models, include=a.variants, tau=a.tau, max_new_tokens=a.max_new_tokens)
    results = run_echo_eval(variants, data, tokenizer, out_dir=a.out, semscore=not a.no_semscore,
                            batch_size=a.batch_size, warmup=a.warmup)
    if records is not None:
        write_echo_predictions(results, records, a.out)
    print(markdown_table(results["rows"], ROW_KEYS))
    return results


if __name__ == "__main__":
    main()
