"""``python -m examples.echo_cxr serve``: a web page (Gradio, 127.0.0.1) that streams reports.

    python -m examples.echo_cxr serve                       # the demo's run (runs/demo), port 7860
    python -m examples.echo_cxr serve -c examples/echo_cxr/configs/lingshu7b --device cuda
    python -m examples.echo_cxr serve --released ckpts/ECHO -c examples/echo_cxr/configs/lingshu7b

Upload one or more X-rays of a study, or pick one of the bundled synthetic studies (drawn by the
project's own generator, :mod:`examples.echo_cxr.data.synthetic`, when the page starts); choose
the variant; the report appears block by block, the still-masked positions of the block being
decoded shown as ``▒``, with tokens/s, NFE and TPF as it goes. "Side by side" decodes the same
study with the AR model and ECHO at once, in two panes.

Gradio is the demo framework of the ecosystem (the ECHO release ships a Gradio demo too); the page
listens on 127.0.0.1 only and never opens a share link.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from examples.echo_cxr.config import EchoConfig, load_echo_config
from examples.echo_cxr.predict import MODEL_DIRS, Predictor, variant_recipe

MASKED = "▒"
"""How a still-masked position of the block being decoded is shown."""
SIDE_BY_SIDE = ("ar", "echo_onestep_L8")
"""The two variants of the side-by-side mode."""
RELEASED = "released"
"""Variant name of a checkpoint given with ``--released``."""


def example_studies(cfg: EchoConfig, out_dir: Path, seed: int = 90_001) -> dict[str, list[Path]]:
    """Three synthetic studies (one of two images) written as PNGs under ``out_dir``: name -> image
    paths. They come from the project's generator with a seed the data stage never uses."""
    import io

    from examples.echo_cxr.data.dataset import _atomic_write
    from examples.echo_cxr.data.synthetic import SyntheticConfig, generate_sample

    syn = SyntheticConfig(image_size=cfg.data.image_size)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = {"synthetic study 1 (one view)": [0], "synthetic study 2 (two views)": [1, 2],
            "synthetic study 3 (one view)": [3]}
    out: dict[str, list[Path]] = {}
    for name, idx in plan.items():
        paths = []
        for i in idx:
            path = out_dir / f"synthetic_{i}.png"
            if not path.is_file():
                buf = io.BytesIO()
                generate_sample(seed + i, syn, study_id=f"example{i}").to_pil().save(buf, format="PNG")
                _atomic_write(path, buf.getvalue())
            paths.append(path)
        out[name] = paths
    return out


class Models:
    """The variants the page offers, each loaded once on first use (thread-safe)."""

    def __init__(self, cfg: EchoConfig, device: str = "cpu", released: str | Path | None = None,
                 block_size: int | None = None) -> None:
        from examples.echo_cxr.workspace import Workspace

        self.cfg, self.device, self.block_size = cfg, device, block_size
        ws = Workspace(cfg)
        self.paths: dict[str, Path | None] = {}
        from examples.echo_cxr.evaluate import VARIANTS

        for v in VARIANTS:
            if (ws.model_dir(MODEL_DIRS[variant_recipe(v)[0]]) / "config.json").is_file():
                self.paths[v] = None  # the run's own model
        if released is not None:
            self.paths[RELEASED] = Path(released)
        self._loaded: dict[str, Predictor] = {}
        self._lock = threading.Lock()

    @property
    def variants(self) -> list[str]:
        return list(self.paths)

    def get(self, variant: str) -> Predictor:
        if variant not in self.paths:
            raise ValueError(f"variant {variant!r} is not available here; choose one of {self.variants}")
        with self._lock:
            if variant not in self._loaded:
                if variant == RELEASED:
                    self._loaded[variant] = Predictor(self.cfg, "echo_onestep_L8", self.paths[variant], self.device,
                                                      released=True, block_size=self.block_size)
                else:
                    self._loaded[variant] = Predictor(self.cfg, variant, None, self.device)
            return self._loaded[variant]


class LiveDecode:
    """One study decoding in a background thread; :meth:`render` shows where it is now."""

    def __init__(self, pred: Predictor, images: Sequence[Any], language: str) -> None:
        self.pred = pred
        self.view: Any = None
        self.result: dict[str, Any] | None = None
        self.error: str | None = None
        self.prefill = 0
        self.thread = threading.Thread(target=self._work, args=(list(images), language), daemon=True)
        self.thread.start()

    def _work(self, images: list[Any], language: str) -> None:
        try:
            prompt = self.pred.prompt(images, language)
            L = 1 if self.pred.policy == "ar" else self.pred.model.spec.block_size
            self.prefill = int(len(prompt["prompt_ids"]) >= L)  # a prefill forward runs (and counts) only then
            self.result = self.pred.decode([prompt], on_step=self._on_step)[0]
        except Exception as e:  # noqa: BLE001 - shown on the page, the server goes on
            self.error = f"{type(e).__name__}: {e}"

    def _on_step(self, view: Any) -> None:
        self.view = view

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None

    def render(self) -> tuple[str, str]:
        """``(report text, statistics line)``: the final tokens so far, then the block being decoded
        (``▒`` where still masked); once done, the report and its own NFE / TPF / tokens/s."""
        if self.error is not None:
            return self.error, "error"
        if self.result is not None:
            r = self.result
            return r["output"], (f"done · {r['tokens']} tokens · NFE {r['nfe']} · TPF {r['tpf']:.2f} · "
                                 f"{r['tokens_per_s']:.1f} tokens/s")
        v = self.view
        if v is None:
            return "", "prefill …"
        tok, mask_id = self.pred.tokenizer, self.pred.model.spec.mask_token_id
        text = tok.decode(v.final, skip_special_tokens=True)
        draft = "".join(MASKED if t == mask_id else tok.decode([t], skip_special_tokens=True) for t in v.draft)
        tps = len(v.final) / max(v.elapsed_s, 1e-9)
        tpf = len(v.final) / max(v.forwards - self.prefill, 1)
        return text + draft, f"decoding · {len(v.final)} tokens · NFE {v.forwards} · TPF {tpf:.2f} · {tps:.1f} tokens/s"


def _images(upload: Any, example: str | None, examples: dict[str, list[Path]]) -> list[str]:
    if upload:
        files = upload if isinstance(upload, list) else [upload]
        return [str(getattr(f, "name", f)) for f in files]
    if example in examples:
        return [str(p) for p in examples[example]]
    raise ValueError("upload one or more X-ray images, or pick a bundled synthetic study")


def stream(models: Models, examples: dict[str, list[Path]], upload: Any, example: str | None, variant: str,
           side_by_side: bool, language: str, poll_s: float = 0.03) -> Iterator[tuple[str, str, str, str]]:
    """What the page shows, again and again until every decode is done:
    ``(report A, stats A, report B, stats B)`` (B is empty unless side by side: A = AR, B = ECHO)."""
    try:
        images = _images(upload, example, examples)
        names = SIDE_BY_SIDE if side_by_side else (variant,)
        runs = [LiveDecode(models.get(n), images, language) for n in names]
    except Exception as e:  # noqa: BLE001 - a message on the page, not a dead server
        yield f"{type(e).__name__}: {e}", "error", "", ""
        return
    while True:
        done = all(r.done for r in runs)
        shown = [part for r in runs for part in r.render()]
        yield tuple(shown + ["", ""])[:4]
        if done:
            return
        time.sleep(poll_s)


def build_app(models: Models, examples: dict[str, list[Path]]):
    """The Gradio page."""
    import gradio as gr

    variants = models.variants
    default = "echo_onestep_L8" if "echo_onestep_L8" in variants else variants[0]
    side_ok = all(v in variants for v in SIDE_BY_SIDE)
    first = next(iter(examples))
    with gr.Blocks(title="ECHO chest X-ray reports (blockdistill)") as app:
        gr.Markdown("## ECHO: chest X-ray reports, one forward per block\n"
                    f"Still-masked positions of the block being decoded show as `{MASKED}`. "
                    "The bundled studies are synthetic (the project's own generator), not X-rays of patients.")
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="X-ray images of one study", file_count="multiple", file_types=["image"],
                                 elem_id="upload")
                example = gr.Dropdown(list(examples), value=first, label="or a bundled synthetic study",
                                      elem_id="example")
                preview = gr.Gallery(value=[str(p) for p in examples[first]], label="study", height=160,
                                     columns=4, elem_id="preview")
                variant = gr.Dropdown(variants, value=default, label="variant", elem_id="variant")
                language = gr.Radio(["en", "zh"], value="en", label="report language", elem_id="language")
                side = gr.Checkbox(value=False, label=f"side by side: {SIDE_BY_SIDE[0]} vs {SIDE_BY_SIDE[1]}",
                                   interactive=side_ok, elem_id="side")
                go = gr.Button("Generate report", variant="primary", elem_id="generate")
            with gr.Column(scale=2):
                report_a = gr.Textbox(label="report (AR when side by side)", lines=8, interactive=False, elem_id="report-a")
                stats_a = gr.Textbox(label="live statistics (AR when side by side)", lines=1, interactive=False, elem_id="stats-a")
                report_b = gr.Textbox(label="report (ECHO, side by side)", lines=8, interactive=False,
                                      elem_id="report-b")
                stats_b = gr.Textbox(label="live statistics (ECHO)", lines=1, interactive=False, elem_id="stats-b")

        def study(up, ex):  # the images a click decodes: the upload if any, else the bundled study
            try:
                return _images(up, ex, examples)
            except ValueError:
                return []

        example.change(study, [upload, example], preview)
        upload.change(study, [upload, example], preview)

        def run(up, ex, var, side_by_side, lang):
            yield from stream(models, examples, up, ex, var, side_by_side, lang)

        go.click(run, [upload, example, variant, side, language], [report_a, stats_a, report_b, stats_b])
    return app


def main(argv: list[str] | None = None) -> int:
    from examples.echo_cxr.__main__ import DEFAULT_CONFIG
    from examples.echo_cxr.workspace import Workspace

    ap = argparse.ArgumentParser(prog="python -m examples.echo_cxr serve", description=__doc__.splitlines()[0])
    ap.add_argument("--config", "-c", action="append", default=None, help="config folder or YAML (default: the demo's)")
    ap.add_argument("--released", help="also offer a checkpoint saved the ECHO/SDAR way (loaded without remote code)")
    ap.add_argument("--block-size", type=int, help="block size of the --released checkpoint (default 8)")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="config override, e.g. --set eval.max_new_tokens=64 (repeatable)")
    a = ap.parse_args(argv)
    from blockdistill.config import ConfigError
    from blockdistill.utils.checksum import DamagedFileError

    try:
        cfg = load_echo_config(a.config or [DEFAULT_CONFIG], overrides=a.overrides, all_stages=True)
        models = Models(cfg, a.device, a.released, a.block_size)
        if not models.variants:
            raise FileNotFoundError(f"no trained model under {cfg.run_dir}: run `make demo` (or the stages) first, "
                                    "or pass --released CHECKPOINT")
        if a.released:
            models.get(RELEASED)  # a bad checkpoint fails now, not on the first click
    except (ConfigError, ValueError, FileNotFoundError) as e:  # CheckpointError is a ValueError
        print(f"echo_cxr serve: {e}", file=sys.stderr)
        return 2
    except DamagedFileError as e:  # a --released checkpoint whose bytes do not match its checksums
        print(f"echo_cxr serve: {e}", file=sys.stderr)
        return 3
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # the page never phones home
    examples = example_studies(cfg, Workspace(cfg).root / "serve" / "examples")
    app = build_app(models, examples)
    app.queue().launch(server_name="127.0.0.1", server_port=a.port, share=False,
                       allowed_paths=[str(p.parent) for ps in examples.values() for p in ps])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
