"""``python -m examples.echo_cxr predict``: reports for chest X-ray studies with any trained variant.

    # one study (one or more images), streamed block by block to the terminal
    python -m examples.echo_cxr predict runs/demo/data/eval/images/syn1_000000.png
    # many studies: a JSON/JSONL of ECHO records ({sample_id, images, ground_truth}) or CXRRecords
    python -m examples.echo_cxr predict --records studies.json --batch-size 8 --out runs/demo/predict/echo.jsonl
    # another variant, another model directory, another config
    python -m examples.echo_cxr predict --variant ar IMAGE
    python -m examples.echo_cxr predict -c examples/echo_cxr/configs/lingshu7b --model /models/ECHO_block8 IMAGE
    # a checkpoint saved the ECHO way (auto_map, <|MASK|>): loaded without its remote code
    python -m examples.echo_cxr predict -c examples/echo_cxr/configs/lingshu7b --model ckpts/ECHO --released IMAGE

Every study becomes one ECHO record (``sample_id``, ``images`` relative to the output file,
``ground_truth`` when the input had one) with the generated ``output``, its ``findings`` and
``impression``, and its own ``nfe`` (forwards it took part in, prefill included), ``tpf`` (its
tokens per decode forward) and ``tokens_per_s`` (its tokens over its batch's wall time). A study
whose images cannot be read (missing, corrupt, none at all) becomes a record with ``error`` and
the run goes on; the summary (``<out>.summary.json`` and the last line printed) counts them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from blockdistill.config import ConfigError
from blockdistill.evaluation.report import atomic_write_text
from blockdistill.models.families import VisionInputs
from blockdistill.sampling.generate import generate
from examples.echo_cxr.config import EchoConfig, load_echo_config

MODEL_DIRS = {"ar": "ar", "base_L4": "rad_L4", "base_L8": "rad_L8", "echo_L8": "dcd_L8"}
"""Model key of a variant -> its directory in the run (``<run_dir>/<dir>/model``)."""


def variant_recipe(name: str) -> tuple[str, str, int | None]:
    """``(model key, policy, block size)`` of an evaluation variant (policy ``ar``, ``threshold`` or
    ``one_step``; block size None for AR)."""
    from examples.echo_cxr.evaluate import _RECIPES, VARIANTS

    if name not in _RECIPES:
        raise ValueError(f"unknown variant {name!r}; expected one of {VARIANTS}")
    key, policy, size = _RECIPES[name]
    return key, policy or "ar", size


def is_released(path: Path) -> bool:
    """Whether ``path`` holds a checkpoint saved the way ECHO/SDAR save theirs: a config without
    blockdistill's block rules that names remote code (``auto_map``) or states ``mask_token_id``."""
    from blockdistill.models.adapter import CONFIG_KEY

    raw = json.loads((path / "config.json").read_text())
    return CONFIG_KEY not in raw and ("auto_map" in raw or "mask_token_id" in raw)


class Predictor:
    """One model and its processor, decoding studies with one variant's recipe."""

    def __init__(self, cfg: EchoConfig, variant: str = "echo_onestep_L8", model_dir: str | Path | None = None,
                 device: str = "cpu", released: bool | None = None, block_size: int | None = None) -> None:
        """``released``: load ``model_dir`` as an ECHO/SDAR-layout checkpoint through
        :func:`blockdistill.interop.load_released` (None: when :func:`is_released` says so), with
        ``block_size`` (default: the variant's L) and ``cfg.model.mask_token``."""
        from examples.echo_cxr.evaluate import load_model
        from examples.echo_cxr.workspace import Workspace, build_processor

        self.cfg, self.variant = cfg, variant
        key, self.policy, size = variant_recipe(variant)
        ws = Workspace(cfg)
        path = Path(model_dir) if model_dir is not None else ws.model_dir(MODEL_DIRS[key])
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} holds no model (config.json); train the variant first "
                                    f"(python -m examples.echo_cxr all) or pass --model")
        from blockdistill.models.backbones import load_tokenizer

        self.released = is_released(path) if released is None else released
        if self.released:
            from blockdistill.interop import load_released

            if self.policy == "ar":
                raise ValueError(f"{path} is a released block-diffusion checkpoint; decode it with a block "
                                 "variant (e.g. --variant echo_onestep_L8), not ar")
            model, self.tokenizer = load_released(path, block_size=block_size or size, mask_token=cfg.model.mask_token,
                                                  dtype=cfg.model.dtype)
            self.model = model.to(device).eval()
        else:
            tok_dir = path if (path / "tokenizer_config.json").is_file() else ws.tokenizer_dir
            self.tokenizer = load_tokenizer(tok_dir)
            self.model = load_model(path, self.tokenizer, device).eval()
        vc = getattr(self.model.model.config, "vision_config", None)
        self.processor = build_processor(cfg, self.tokenizer, None if cfg.model.kind == "tiny" else vc)
        self.device = device
        self.model_dir = path

    def prompt(self, images: Sequence[Any], language: str) -> dict[str, Any]:
        """Prompt ids and pixels of one study; raises on an unreadable image (the caller records it)."""
        if not images:
            raise ValueError("study has no images")
        pixel_values, grid = self.processor.process_images(list(images)[: self.processor.max_images])
        return {"prompt_ids": self.processor.prompt_ids(grid, language), "pixel_values": pixel_values,
                "image_grid_thw": grid}

    def decode(self, prompts: list[dict[str, Any]], streamer: Any = None, on_step: Any = None) -> list[dict[str, Any]]:
        """Decode studies together; one result per study (text, sections, its own NFE / TPF / tokens/s)."""
        from examples.echo_cxr.data.processor import split_report

        e = self.cfg.eval
        lens = torch.tensor([len(p["prompt_ids"]) for p in prompts])
        ids = torch.full((len(prompts), int(lens.max())), self.model.spec.pad_token_id, dtype=torch.long)
        for b, p in enumerate(prompts):
            ids[b, : lens[b]] = p["prompt_ids"]
        mask = (torch.arange(ids.shape[1])[None] < lens[:, None]).long()
        vision = VisionInputs(torch.cat([p["pixel_values"] for p in prompts]),
                              torch.cat([p["image_grid_thw"] for p in prompts])).to(self.device)
        out = generate(self.model, ids.to(self.device), mask.to(self.device), pixel_values=vision.pixel_values,
                       image_grid_thw=vision.image_grid_thw, max_new_tokens=e.max_new_tokens, policy=self.policy,
                       tau=e.tau if self.policy == "threshold" else None,
                       cache="fused" if self.policy == "ar" else e.cache, streamer=streamer, on_step=on_step)
        prefill = out.stats.nfe - out.stats.nfe_decode
        results = []
        for b, seq in enumerate(out.generated):
            text = self.tokenizer.decode(seq, skip_special_tokens=True).strip()
            findings, impression = split_report(text)
            n = int(seq.shape[0])
            results.append({"output": text, "findings": findings, "impression": impression, "tokens": n,
                            "nfe": out.row_forwards[b], "tpf": n / max(out.row_forwards[b] - prefill, 1),
                            "tokens_per_s": n / max(out.stats.wall_s, 1e-12), "batch_size": len(prompts)})
        return results


class TerminalStreamer:
    """A transformers-protocol streamer that prints each newly final block's text as it comes."""

    def __init__(self, tokenizer: Any, file: Any = None) -> None:
        self.tokenizer, self.file = tokenizer, file or sys.stdout
        self.tokens: list[int] = []
        self.shown = ""
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # the first put is the prompt, as transformers' generate sends it
            self.prompt_seen = True
            return
        self.tokens += value.reshape(-1).tolist()
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if text.startswith(self.shown):
            print(text[len(self.shown):], end="", file=self.file, flush=True)
            self.shown = text

    def end(self) -> None:
        print(file=self.file, flush=True)


def _studies(a: argparse.Namespace) -> list[dict[str, Any]]:
    """``{sample_id, images, language, ground_truth?}`` per study, or ``{sample_id, error}``."""
    from examples.echo_cxr.data.echo_json import echo_dict

    if a.records:
        from examples.echo_cxr.data.echo_json import is_echo_file, read_echo_records
        from examples.echo_cxr.data.records import Rejected

        path = Path(a.records)
        if is_echo_file(path):
            bad: list[Rejected] = []
            recs = read_echo_records(path, reject=bad.append)
            errors = [{"sample_id": r.key, "images": [], "error": r.reason} for r in bad]
        else:
            from examples.echo_cxr.data.dataset import read_records

            recs, errors = read_records(path), []
        out = [{"record": r, "sample_id": r.study_id, "images": r.image_paths, "language": a.language or r.language,
                "ground_truth": echo_dict(r)["ground_truth"]} for r in recs]
        return out + errors
    if not a.images:
        raise ValueError("give one study's image paths, or --records FILE")
    return [{"sample_id": a.sample_id or Path(a.images[0]).stem, "images": [str(Path(p)) for p in a.images],
             "language": a.language or "en"}]


def run_predict(pred: Predictor, studies: list[dict[str, Any]], out_path: Path, batch_size: int = 1,
                stream: bool = False) -> dict[str, Any]:
    """Decode ``studies`` (see :func:`_studies`) ``batch_size`` at a time and write the records."""
    import os

    from examples.echo_cxr.data.echo_json import write_echo_records

    base = out_path.parent.resolve()
    rows: list[dict[str, Any] | None] = [None] * len(studies)
    ready: list[tuple[int, dict[str, Any]]] = []

    def rel(paths):
        return [os.path.relpath(Path(p).resolve(), base) for p in paths]

    def flush():
        if not ready:
            return
        streamer = TerminalStreamer(pred.tokenizer) if stream and len(studies) == 1 else None
        for (i, _), res in zip(ready, pred.decode([p for _, p in ready], streamer=streamer)):
            s = studies[i]
            rows[i] = {"sample_id": s["sample_id"], "images": rel(s["images"]),
                       **({"ground_truth": s["ground_truth"]} if "ground_truth" in s else {}),
                       "language": s["language"], "variant": pred.variant, **res}
        ready.clear()

    t0 = time.perf_counter()
    for i, s in enumerate(studies):
        if "error" in s:
            rows[i] = dict(s)
            continue
        try:
            prompt = pred.prompt(s["images"], s["language"])
        except Exception as e:  # noqa: BLE001 - any unreadable study is recorded, and the run goes on
            rows[i] = {"sample_id": s["sample_id"], "images": rel(s["images"]), "language": s["language"],
                       "variant": pred.variant, "error": f"{type(e).__name__}: {e}"}
            continue
        ready.append((i, prompt))
        if len(ready) >= batch_size:
            flush()
    flush()
    wall = time.perf_counter() - t0
    write_echo_records(out_path, rows)
    good = [r for r in rows if "error" not in r]
    tokens = sum(r["tokens"] for r in good)
    summary = {"variant": pred.variant, "model": str(pred.model_dir), "studies": len(rows), "reports": len(good),
               "errors": len(rows) - len(good), "tokens": tokens, "wall_s": wall,
               "tokens_per_s": tokens / max(wall, 1e-12), "out": str(out_path)}
    atomic_write_text(out_path.parent / (out_path.stem + ".summary.json"), json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    from examples.echo_cxr.__main__ import DEFAULT_CONFIG

    ap = argparse.ArgumentParser(prog="python -m examples.echo_cxr predict", description=__doc__.splitlines()[0])
    ap.add_argument("images", nargs="*", help="image paths of ONE study (all go into its prompt)")
    ap.add_argument("--records", help="JSON/JSONL of ECHO records or CXRRecords: many studies")
    ap.add_argument("--config", "-c", action="append", default=None, help="config folder or YAML (default: tiny)")
    ap.add_argument("--variant", default="echo_onestep_L8", help="ar, base_multistep_L4/L8, base_onestep_L8, "
                                                                  "echo_onestep_L8 (default)")
    ap.add_argument("--model", help="model directory (default: the variant's model in the run directory)")
    ap.add_argument("--released", action="store_true", default=None,
                    help="--model is a checkpoint saved the ECHO/SDAR way (default: detected from its config.json)")
    ap.add_argument("--block-size", type=int, help="block size of a released checkpoint (default: the variant's L)")
    ap.add_argument("--out", help="output JSONL or JSON (default: <run_dir>/predict/<variant>.jsonl)")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--language", choices=("en", "zh"), help="report language (default: en, or each record's)")
    ap.add_argument("--sample-id", help="sample_id of a single study (default: the first image's name)")
    ap.add_argument("--no-stream", action="store_true", help="do not print a single study's report as it decodes")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="config override, e.g. --set eval.max_new_tokens=64 (repeatable)")
    a = ap.parse_args(argv)
    if a.batch_size < 1:
        ap.error(f"--batch-size must be >= 1, got {a.batch_size}")
    try:
        cfg = load_echo_config(a.config or [DEFAULT_CONFIG], overrides=a.overrides, all_stages=True)
        studies = _studies(a)
        pred = Predictor(cfg, a.variant, a.model, a.device, a.released, a.block_size)
    except (ConfigError, ValueError, FileNotFoundError) as e:  # CheckpointError is a ValueError
        print(f"echo_cxr predict: {e}", file=sys.stderr)
        return 2
    out = Path(a.out) if a.out else Path(cfg.run_dir) / "predict" / f"{a.variant}.jsonl"
    summary = run_predict(pred, studies, out, a.batch_size, stream=not a.no_stream)
    print(json.dumps(summary), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
