"""Where the tiny demo's seconds go: each training stage's step split by Lightning's
``SimpleProfiler``, on a short slice run by the stage's own code from a finished run.

``profile`` copies a finished run's data, tokenizer, models and trajectories into a scratch
workspace and runs the ``rad`` (L=8), ``dcd`` and ``ar`` stages there for ``--steps`` steps
each (the config's batch size, optimiser and logging; checkpoints every ``--save-every`` steps so
one save is timed), with ``profiler=SimpleProfiler`` injected into the trainer the recipes build.
Each Lightning action falls into one part of a step: data (``train_dataloader_next``: loading and
collating a batch), forward (``training_step``: forward and loss), backward, optimizer (the
optimiser's own step and zero_grad: ``optimizer_step`` less the forward and backward it runs as
its closure), logging (the logger's and the progress log's hooks), checkpoint (the checkpoint
callback's saves), other (the rest of the fit loop). Per-step seconds come with the recorded
run's stage time for scale. ``render`` turns the JSON into ``docs/demo/profile.md`` (between its
markers); a test checks the page equals the rendering of ``docs/demo/profile.json``.

    python -m examples.echo_cxr.profile profile --run runs/demo --out runs/profile/profile.json
    python -m examples.echo_cxr.profile render runs/profile/profile.json   # copies it to docs/demo
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from blockdistill.evaluation import atomic_write_text

ROOT = Path(__file__).resolve().parents[2]
FILE = ROOT / "docs" / "demo" / "profile.json"
PAGE = ROOT / "docs" / "demo" / "profile.md"
START, END = "<!-- profile:start -->", "<!-- profile:end -->"
PARTS = ("data", "forward", "backward", "optimizer", "logging", "checkpoint", "other")
STAGES = ("ar", "rad", "dcd")


def split_actions(durations: Mapping[str, list[float]]) -> dict[str, float]:
    """Seconds per part of a step (:data:`PARTS`) from ``SimpleProfiler.recorded_durations``
    (action name -> seconds of each call); ``other`` is the fit loop's batches less the parts."""
    def total(pred) -> float:
        return sum(sum(v) for k, v in durations.items() if pred(k))

    fwd = total(lambda k: k.endswith(".training_step") and k.startswith("[Strategy]"))
    bwd = total(lambda k: k.endswith(".backward") and k.startswith("[Strategy]"))
    opt_all = total(lambda k: k.startswith("[LightningModule]") and k.endswith(".optimizer_step"))
    zero = total(lambda k: k.startswith("[LightningModule]") and k.endswith(".optimizer_zero_grad"))
    data = total(lambda k: k.endswith("train_dataloader_next"))
    ckpt = total(lambda k: k.startswith("[Callback]") and "Checkpoint" in k)
    logging = total(lambda k: k.startswith("[Callback]") and ("ProgressLog" in k or "ProgressBar" in k))
    batches = total(lambda k: k == "run_training_batch")
    epoch_loop = total(lambda k: k == "run_training_epoch")
    parts = {"data": data, "forward": fwd, "backward": bwd, "optimizer": max(opt_all - fwd - bwd, 0.0) + zero,
             "logging": logging, "checkpoint": ckpt}
    loop = epoch_loop if epoch_loop > 0 else batches + data + ckpt + logging
    parts["other"] = max(loop - sum(parts.values()), 0.0)
    return parts


def eval_split(results: Mapping[str, Any], eval_wall_s: float | None) -> dict[str, Any]:
    """The evaluation stage's seconds from a finished run's ``results.json``: the quality round's
    decoding per variant (its recorded ``wall_s``, prefill included), the speed round's per
    variant (``samples`` studies at ``speed.batch_size``: samples x tokens per report / tokens/s,
    from its recorded rates; the untimed warm-up chunk is not in it), and the rest of the stage's
    ``eval_wall_s`` (model and sample loading, scoring, the quality warm-up, the TPF and
    forward-cost timings)."""
    quality = {v["name"]: round(v["stats"]["wall_s"], 2) for v in results["variants"]}
    sp = results.get("speed") or {}
    speed = {name: round(sp["samples"] * r["tpf"] * r["nfe"] / r["tokens_per_s"], 2)
             for name, r in (sp.get("by_variant") or {}).items()}
    out: dict[str, Any] = {"quality_decode_s": quality, "speed_decode_s": speed,
                           "quality_studies": sum(r["n"] for r in results["rows"] if r["variant"] == "ar"),
                           "speed_samples": sp.get("samples"), "eval_wall_s": eval_wall_s}
    if eval_wall_s is not None:
        out["rest_s"] = round(eval_wall_s - sum(quality.values()) - sum(speed.values()), 2)
    return out


def _copy_run(src: Path, dst: Path) -> None:
    """The scratch workspace: the finished run's data, tokenizer, models (copied: the stages
    write their own models here) and trajectories (linked: only read)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("data", "tokenizer", "ar/model", "rad_L8/model"):
        if not (dst / name).exists():
            shutil.copytree(src / name, dst / name)
    if not (dst / "traj_L8").exists():
        (dst / "traj_L8").symlink_to((src / "traj_L8").resolve(), target_is_directory=True)


def profile(run: Path, config: Path, out: Path, steps: int, save_every: int,
            stages: tuple[str, ...] = STAGES) -> dict[str, Any]:
    """Profile ``stages`` on slices of ``steps`` steps; writes and returns the JSON record."""
    from lightning.pytorch.profilers import SimpleProfiler

    import blockdistill.recipes.train as recipes_train
    from blockdistill.utils.machine import machine_info
    from examples.echo_cxr.config import load_echo_config
    from examples.echo_cxr.stages import stage_ar, stage_rad
    from examples.echo_cxr.stages_distill import stage_dcd
    from examples.echo_cxr.workspace import Workspace

    work = out.parent / "work"
    if work.exists():
        shutil.rmtree(work)
    _copy_run(run, work)
    over = [f"run_dir={work}"]
    for s in ("ar", "rad", "dcd"):
        over += [f"{s}.trainer.max_steps={steps}", f"{s}.trainer.save_every_n_steps={save_every}"]
    cfg = load_echo_config(config, all_stages=True, overrides=over)
    cfg = replace(cfg, rad=replace(cfg.rad, block_sizes=[8], max_steps_by_size={}))  # the L=8 teacher only
    full = load_echo_config(config, all_stages=True)
    recorded = json.loads((run / "manifest.json").read_text()) if (run / "manifest.json").is_file() else {}
    real_build = recipes_train.build_trainer
    rows: dict[str, Any] = {}
    fns = {"ar": stage_ar, "rad": stage_rad, "dcd": stage_dcd}
    for stage in stages:
        prof = SimpleProfiler(dirpath=str(out.parent), filename=f"profiler-{stage}")
        recipes_train.build_trainer = lambda *a, _p=prof, **k: real_build(*a, profiler=_p, **k)
        try:
            ws = Workspace(cfg)
            if stage == "rad":
                shutil.rmtree(work / "rad_L8", ignore_errors=True)
            t0 = time.perf_counter()
            fns[stage](cfg, ws)
            stage_s = time.perf_counter() - t0
        finally:
            recipes_train.build_trainer = real_build
        parts = split_actions(prof.recorded_durations)
        t = getattr(full, stage).trainer
        real_steps = full.rad.steps_for(8) if stage == "rad" else t.max_steps
        real_saves = real_steps // t.save_every_n_steps
        # the checkpoint callback's step hooks; the slice saves every ``save_every`` steps, so
        # its slowest hooks are the saves: their mean, amortised at the config's own cadence
        hooks = sorted(d for k, v in prof.recorded_durations.items()
                       if k.startswith("[Callback]") and "Checkpoint" in k and k.endswith("on_train_batch_end")
                       for d in v)
        save_s = hooks[-max(1, steps // save_every):]
        per_save = sum(save_s) / len(save_s) if save_s else 0.0
        per_step = {p: v / steps for p, v in parts.items()}
        per_step["checkpoint"] = per_save * real_saves / real_steps
        rows[stage] = {
            "steps": steps, "batch_size": getattr(cfg, stage).batch_size,
            "per_step_s": {p: round(v, 5) for p, v in per_step.items()},
            "checkpoint_save_s": round(per_save, 4), "slice_s": round(stage_s, 2),
            "outside_fit_s": round(stage_s - sum(prof.recorded_durations.get("run_training_epoch", [0.0])), 2),
            "recorded_wall_s": (recorded.get("rad", {}).get("summary", {}).get("rad_L8", {}).get("wall_s") if stage == "rad"
                                else recorded.get(stage, {}).get("wall_s")),
            "recorded_steps": real_steps, "recorded_saves": real_saves,
            "actions": {k: [len(v), round(sum(v), 4)] for k, v in sorted(prof.recorded_durations.items())
                        if sum(v) >= 1e-3},
        }
    ev = None
    if (run / "results.json").is_file():
        ev = eval_split(json.loads((run / "results.json").read_text()), recorded.get("eval", {}).get("wall_s"))
    result = {"machine": machine_info(), "contended": True, "recorded_run": str(run), "stages": rows, "eval": ev,
              "recorded": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    return result


def render(data: Mapping[str, Any]) -> str:
    """The markdown table: per stage, seconds per step of each part and its share."""
    head = ["stage", "steps x batch", *PARTS, "s/step", "checkpoint save (s)", "outside the steps (s)",
            "recorded stage s / steps"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for stage, r in data["stages"].items():
        ps = r["per_step_s"]
        tot = sum(ps.values())
        cells = [f"{1000 * ps[p]:.0f} ms ({ps[p] / tot:.0%})" if tot else "–" for p in PARTS]
        rec = r.get("recorded_wall_s")
        lines.append("| " + " | ".join([stage, f"{r['steps']} x {r['batch_size']}", *cells, f"{tot:.3f}",
                                        f"{r['checkpoint_save_s']:.3f}", f"{r['outside_fit_s']:.0f}",
                                        f"{rec:.0f} / {r['recorded_steps']}" if rec else "–"]) + " |")
    return "\n".join(lines)


def render_eval(ev: Mapping[str, Any]) -> str:
    """The evaluation stage's table: decode seconds per variant in each round, and the rest."""
    lines = ["| variant | quality round decode (s) | speed round decode (s) |", "|---|---|---|"]
    for name, q in ev["quality_decode_s"].items():
        sp = ev["speed_decode_s"].get(name)
        lines.append(f"| {name} | {q:.1f} | {'–' if sp is None else f'{sp:.1f}'} |")
    lines.append(f"| all | {sum(ev['quality_decode_s'].values()):.1f} | {sum(ev['speed_decode_s'].values()):.1f} |")
    if ev.get("rest_s") is not None:
        lines.append(f"| rest of the stage (loading, scoring, warm-up, timings) | {ev['rest_s']:.1f} of "
                     f"{ev['eval_wall_s']:.0f} | |")
    return "\n".join(lines)


def render_page(page: Path = PAGE, path: Path = FILE) -> str:
    text = page.read_text()
    a, b = text.index(START) + len(START), text.index(END)
    data = json.loads(path.read_text())
    body = render(data) + ("\n\n" + render_eval(data["eval"]) if data.get("eval") else "")
    return text[:a] + "\n" + body + "\n" + text[b:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m examples.echo_cxr.profile", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("profile", help="profile slices of the training stages")
    p.add_argument("--run", type=Path, default=Path("runs/demo"), help="a finished demo run")
    p.add_argument("--config", type=Path, default=ROOT / "examples/echo_cxr/configs/tiny")
    p.add_argument("--out", type=Path, default=Path("runs/profile/profile.json"))
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--save-every", type=int, default=10)
    p.add_argument("--stages", default=",".join(STAGES))
    r = sub.add_parser("render", help="copy a profile JSON to docs/demo and rewrite docs/demo/profile.md")
    r.add_argument("json", type=Path, nargs="*", help="profile JSONs (their stages merged, in order)")
    a = ap.parse_args(argv)
    if a.cmd == "profile":
        res = profile(a.run, a.config, a.out, a.steps, a.save_every, tuple(a.stages.split(",")))
        print(render(res))
        return 0
    if a.json:
        parts = [json.loads(f.read_text()) for f in a.json]
        merged = {**parts[0], "stages": {k: v for p in parts for k, v in p["stages"].items()}}
        atomic_write_text(FILE, json.dumps(merged, indent=1) + "\n")
    atomic_write_text(PAGE, render_page())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
