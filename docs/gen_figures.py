"""Draw the concept figures from the library's own code, so they cannot drift from it.

    python docs/gen_figures.py [--out docs/figures] [--generated docs/_generated]

- the block grid and the RAD sequence, and the clean / RAD / full-duplication attention masks:
  ``blockdistill.layout`` (``clean_layout``, ``rad_layout``, ``full_dup_layout``, ``dense_mask``);
- the block and fused KV-cache timelines: the forwards that ``block_generate`` really issues,
  recorded by a pass-through :class:`~blockdistill.sampling.denoiser.Denoiser`;
- the mean-field example: a :class:`~blockdistill.testing.ToyJoint` decoded by the real
  multi-step sampler through ``TrajectoryCollector`` (figure and a markdown table).

The MkDocs hook (``docs/hooks.py``) runs :func:`generate` before every build. Files are
rewritten only when their bytes change (PNG metadata carries no date or version), so
``mkdocs serve`` does not loop and committed figures stay byte-identical.
"""

from __future__ import annotations

import argparse
import io
from dataclasses import dataclass
from pathlib import Path

import torch

from blockdistill.layout import (
    clean_layout,
    dense_mask,
    full_dup_layout,
    rad_layout,
    response_block_start,
)

DOCS = Path(__file__).resolve().parent

# The running example of the concept pages: prompt P=6, response R=5, blocks of L=4.
P, R, L = 6, 5, 4
N = -(-(P + R + 1) // L) * L                      # clean length: 12
S = int(response_block_start(P, L))                # first response block: 4

COLORS = {"prompt": "#9ecae1", "response": "#a1d99b", "eos": "#d9d9d9", "mask": "#fdae6b",
          "denoise": "#fdae6b", "write": "#74c476", "prefill": "#9ecae1", "cache": "#f0f0f0",
          "attend": "#3182bd", "blocked": "#ffffff"}


def _save(fig, path: Path) -> bool:
    """Write ``fig`` as PNG if its bytes differ from the file's. Returns True if written."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return _write(path, buf.getvalue())


def _write(path: Path, data: bytes | str) -> bool:
    data = data.encode() if isinstance(data, str) else data
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return True


# ---------------------------------------------------------------------- the block grid
def _cell(ax, x, y, color, text="", hatch=None, fontsize=8):
    from matplotlib.patches import Rectangle

    ax.add_patch(Rectangle((x, y), 1, 1, facecolor=color, edgecolor="#555555", lw=0.6, hatch=hatch))
    if text:
        ax.text(x + 0.5, y + 0.5, text, ha="center", va="center", fontsize=fontsize)


def block_grid_figure():
    """Clean stream, block ids, and the RAD sequence with each noisy slot's position id."""
    import matplotlib.pyplot as plt

    lay = rad_layout(torch.tensor([P]), torch.tensor([N]), L)
    masked = {5, 7, 8, 10}                                     # an example noising (response only)
    fig, ax = plt.subplots(figsize=(12, 3.3))
    kind = ["prompt"] * P + ["response"] * R + ["eos"] * (N - P - R)
    label = [f"p{i}" for i in range(P)] + [f"r{i}" for i in range(R)] + ["EOS"] * (N - P - R)
    for i in range(N):                                         # row 1: the clean stream
        _cell(ax, i, 2, COLORS[kind[i]], label[i])
        ax.text(i + 0.5, 3.15, str(i), ha="center", fontsize=7, color="#555555")
    for b in range(N // L):
        ax.annotate("", xy=(b * L + 0.05, 3.55), xytext=((b + 1) * L - 0.05, 3.55),
                    arrowprops=dict(arrowstyle="<->", color="#444444", lw=0.8))
        ax.text(b * L + L / 2, 3.7, f"block {b}", ha="center", fontsize=8)
    ax.text(-0.3, 2.5, "clean", ha="right", va="center", fontsize=9)
    ax.text(-0.3, 3.2, "index", ha="right", va="center", fontsize=7, color="#555555")
    # row 2: the RAD sequence [clean (n) | noisy copy of s..n-1]
    for t in range(lay.num_slots):
        i = int(lay.clean_index[0, t])
        if bool(lay.noisy[0, t]):
            m = i in masked
            _cell(ax, t, 0, COLORS["mask"] if m else COLORS[kind[i]], "[M]" if m else label[i])
        else:
            _cell(ax, t, 0, COLORS[kind[i]], label[i])
        ax.text(t + 0.5, -0.35, str(i), ha="center", fontsize=7, color="#555555")
    ax.text(-0.3, 0.5, "RAD input", ha="right", va="center", fontsize=9)
    ax.text(-0.3, -0.3, "position id", ha="right", va="center", fontsize=7, color="#555555")
    ax.axvline(N, ymin=0.08, ymax=0.42, color="#d62728", lw=2)
    ax.text(N / 2, 1.25, f"clean stream, n = {N}", ha="center", fontsize=9)
    ax.text(N + (N - S) / 2, 1.25, f"noisy copy of s..n-1: n - s = {N - S} slots", ha="center", fontsize=9)
    ax.axvline(S, ymin=0.5, ymax=0.95, color="#d62728", lw=1.5, ls="--")
    ax.text(S + 0.1, 4.05, f"s = (P // L) * L = {S}", color="#d62728", fontsize=8)
    ax.set_xlim(-3.2, lay.num_slots + 0.3)
    ax.set_ylim(-0.8, 4.4)
    ax.axis("off")
    ax.set_title(f"P = {P} prompt tokens, R = {R} response tokens + EOS, L = {L}: "
                 f"RAD feeds n + (n - s) = {lay.num_slots} tokens (full duplication: 2n = {2 * N})", fontsize=10)
    return fig


# ---------------------------------------------------------------------- masks
def _mask_panel(ax, layout, title):
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    m = dense_mask(layout)[0, 0].int().numpy()
    t = m.shape[0]
    ax.imshow(m, cmap=ListedColormap([COLORS["blocked"], COLORS["attend"]]), vmin=0, vmax=1,
              interpolation="nearest")
    idx = layout.clean_index[0].tolist()
    noisy = layout.noisy[0].tolist()
    ticks = [f"{'~' if z else ''}{i}" for i, z in zip(idx, noisy)]
    ax.set_xticks(range(t), ticks, fontsize=6, rotation=90)
    ax.set_yticks(range(t), ticks, fontsize=6)
    for k in range(1, t):                                      # block boundaries (clean index)
        if idx[k] // L != idx[k - 1] // L or noisy[k] != noisy[k - 1]:
            lw, color = (1.6, "#d62728") if noisy[k] != noisy[k - 1] else (0.5, "#888888")
            ax.axhline(k - 0.5, color=color, lw=lw)
            ax.axvline(k - 0.5, color=color, lw=lw)
    ax.set_xlabel("key (clean index; ~ = noisy copy)", fontsize=8)
    ax.set_ylabel("query", fontsize=8)
    ax.set_title(f"{title}\n{t} slots, {int(m.sum())} attended pairs", fontsize=9)
    plt.setp(ax.spines.values(), color="#888888")


def masks_figure():
    """Clean block-causal, RAD and full-duplication masks from ``dense_mask``."""
    import matplotlib.pyplot as plt

    plen, slen = torch.tensor([P]), torch.tensor([N])
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.4), gridspec_kw={"width_ratios": [N, N + N - S, 2 * N]})
    _mask_panel(axes[0], clean_layout(slen, L), "clean stream (block-causal)")
    _mask_panel(axes[1], rad_layout(plen, slen, L), "RAD: [clean | noisy copy of s..n-1]")
    _mask_panel(axes[2], full_dup_layout(slen, L), "full duplication: [clean | noisy copy of all]")
    fig.suptitle(f"dense_mask(...): blue = query may attend to key  (P={P}, R={R}+EOS, L={L}, n={N}, s={S})",
                 fontsize=10)
    fig.tight_layout()
    return fig


def rad_mask_figure():
    """The RAD mask alone, larger, with its four regions named."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 7))
    _mask_panel(ax, rad_layout(torch.tensor([P]), torch.tensor([N]), L), "RAD attention mask")
    box = dict(boxstyle="round", fc="white", ec="#888888", alpha=0.9)
    ax.text(N / 2, N / 2 - 1, "clean -> clean\nblock-causal", ha="center", fontsize=8, bbox=box)
    ax.text(N + (N - S) / 2, N / 2 - 1, "clean -> noisy\nnever", ha="center", fontsize=8, bbox=box)
    ax.text(N / 2, N + (N - S) / 2 + 1, "noisy -> clean\nstrictly earlier blocks", ha="center", fontsize=8,
            bbox=box)
    ax.text(N + (N - S) / 2, N + (N - S) / 2 + 2.5, "noisy -> noisy\nsame block", ha="center", fontsize=8,
            bbox=box)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------- KV-cache timelines
@dataclass
class _Call:
    kind: str                 # "prefill" or "forward"
    index: list[int]          # clean indices of the query slots
    append: int               # leading clean slots written to the cache
    context: int              # clean tokens in the context before the call


class _Recorder:
    """A pass-through Denoiser that records every call the sampler makes (row 0)."""

    def __init__(self, inner) -> None:
        self.inner, self.spec, self.calls = inner, inner.spec, []

    @property
    def max_context(self):
        return self.inner.max_context

    def prefill(self, prompt_ids, prompt_lens, vision=None):
        s = int(response_block_start(int(prompt_lens[0]), self.spec.block_size))
        self.calls.append(_Call("prefill", list(range(s)), s, 0))
        self._ctx = s
        return self.inner.prefill(prompt_ids, prompt_lens, vision)

    def forward(self, state, query_ids, query_index, append, logits_at):
        self.calls.append(_Call("forward", query_index[0].tolist(), append, self._ctx))
        self._ctx += append
        return self.inner.forward(state, query_ids, query_index, append, logits_at)

    def select_rows(self, state, rows):
        return self.inner.select_rows(state, rows)


def record_calls(cache: str, new_tokens: int = 12) -> list[_Call]:
    """The calls ``block_generate`` makes for one-step decoding with ``cache``."""
    from blockdistill.sampling import OneStep, block_generate
    from blockdistill.testing import ToyVocab

    vocab = ToyVocab()
    toy = vocab.toy({}, block_size=L)                           # every continuation: EOS (we force length)
    rec = _Recorder(toy)
    prompt = torch.tensor([vocab.prompt[:P]])
    block_generate(rec, prompt, torch.tensor([P]), policy=OneStep(), cache=cache, max_new_tokens=new_tokens,
                   stop_at_eos=False)
    return rec.calls


def _timeline_panel(ax, calls, title):
    rows = len(calls)
    width = max(max(c.index) for c in calls if c.index) + 1
    for r, c in enumerate(calls):
        y = rows - 1 - r
        for i in range(c.context):
            _cell(ax, i, y, COLORS["cache"])
        for q, i in enumerate(c.index):
            if c.kind == "prefill":
                color, text = COLORS["prefill"], "P"
            elif q < c.append:
                color, text = COLORS["write"], "W"
            else:
                color, text = COLORS["denoise"], "D"
            _cell(ax, i, y, color, text, fontsize=7)
        label = "prefill" if c.kind == "prefill" else f"forward {r}"
        ax.text(-0.4, y + 0.5, label, ha="right", va="center", fontsize=8)
        ax.text(width + 0.3, y + 0.5, f"{len(c.index)} tokens", va="center", fontsize=7, color="#555555")
    for b in range(0, width + 1, L):
        ax.axvline(b, color="#888888", lw=0.5, ls=":")
    ax.set_xlim(-5, width + 3.5)
    ax.set_ylim(-0.2, rows + 0.2)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([b + L / 2 for b in range(0, width, L)], [f"block {b // L}" for b in range(0, width, L)],
                  fontsize=7)
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)


def kv_cache_figure():
    """Unfused block cache against the fused block cache, one-step decoding, as recorded."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    block = record_calls("block")
    fused = record_calls("fused")
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [1, 1]})
    _timeline_panel(axes[0], block, f'cache="block": {len(block) - 1} forwards after prefill')
    _timeline_panel(axes[1], fused, f'cache="fused": {len(fused) - 1} forwards after prefill')
    handles = [Patch(fc=COLORS["prefill"], ec="#555555", label="P: prompt prefill (KV cached)"),
               Patch(fc=COLORS["denoise"], ec="#555555", label="D: noisy block, denoised (KV dropped)"),
               Patch(fc=COLORS["write"], ec="#555555", label="W: finished block, KV written to the cache"),
               Patch(fc=COLORS["cache"], ec="#555555", label="already in the cache")]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(f"One step per block, prompt of {P} tokens, {12} new tokens, L = {L} "
                 "(recorded from block_generate)", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    return fig


# ---------------------------------------------------------------------- mean-field example
WORDS = ["no", "effusion", ".", "is", "clearly"]
"""Content tokens of the toy vocabulary, ids 0..4."""


def mean_field_toy():
    """The "no no effusion" joint of DESIGN.md §4 as a ToyJoint over one 3-token continuation."""
    from blockdistill.testing import ToyVocab

    vocab = ToyVocab(num_content=len(WORDS))
    no, eff, dot, is_, clearly = range(len(WORDS))
    prompt = (vocab.prompt[0],)                                 # 1 prompt token: 3 slots left in block 0
    joint = {(no, eff, dot): 0.4, (is_, no, eff): 0.3, (clearly, no, eff): 0.3}
    return vocab, prompt, vocab.toy({prompt: joint}, block_size=4)


def mean_field_example():
    """Decode the toy with the real teacher; return what the page shows."""
    from blockdistill.distill import CommitStepTarget, FirstStepTarget, TrajectoryCollector

    vocab, prompt, toy = mean_field_toy()
    (rec,) = TrajectoryCollector(toy, max_new_tokens=3, record_first_step=True)(
        torch.tensor([prompt]), torch.tensor([len(prompt)]), ["0"])
    first = FirstStepTarget()(rec).to_dense().probs[:3, : len(WORDS)]
    commit = CommitStepTarget()(rec).to_dense().probs[:3, : len(WORDS)]
    return dict(toy=toy, prompt=prompt, rec=rec, first=first, commit=commit,
                mean_field=tuple(int(t) for t in first.argmax(-1)), teacher=tuple(rec.tokens[:3].tolist()))


def _words(block) -> str:
    return " ".join(WORDS[t] for t in block)


def mean_field_figure(ex):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = ex["rec"].commit_step[:3].tolist()
    panels = [(ex["first"], ex["mean_field"], "first-step marginals (mean-field target)"),
              (ex["commit"], ex["teacher"], "commit-step rows q_i (DCD target)")]
    for ax, (probs, pick, title) in zip(axes, panels):
        ax.imshow(probs.T.numpy(), cmap="Blues", vmin=0, vmax=1)
        for j in range(probs.shape[0]):
            for t in range(probs.shape[1]):
                v = float(probs[j, t])
                if v > 0:
                    ax.text(j, t, f"{v:.2f}", ha="center", va="center", fontsize=8,
                            color="white" if v > 0.6 else "black")
            ax.add_patch(plt.Rectangle((j - 0.5, pick[j] - 0.5), 1, 1, fill=False, ec="#d62728", lw=2))
        xt = [f"slot {j + 1}" + (f"\n(step {steps[j]})" if probs is ex["commit"] else "") for j in range(3)]
        ax.set_xticks(range(3), xt, fontsize=8)
        ax.set_yticks(range(len(WORDS)), WORDS, fontsize=8)
        p = ex["toy"].prob(ex["prompt"], pick)
        ax.set_title(f"{title}\nargmax: \"{_words(pick)}\"  (p = {p:.2f})", fontsize=9)
    fig.tight_layout()
    return fig


def mean_field_table(ex) -> str:
    """Markdown for the concept page, every number computed by the library."""
    toy, prompt, rec = ex["toy"], ex["prompt"], ex["rec"]
    lines = ["| block | probability |", "|---|---:|"]
    for block, p in sorted(toy.distribution(prompt).items(), key=lambda kv: -kv[1]):
        lines.append(f"| `{_words(block)}` | {p:.2f} |")
    mf = ex["mean_field"]
    lines += ["", f"- **Mean field** (argmax of each slot's first-step marginal): `{_words(mf)}`, "
              f"probability **{toy.prob(prompt, mf):.2f}**."]
    steps = rec.commit_step[:3].tolist()
    order = sorted(range(3), key=lambda j: (steps[j], j))
    q = rec.target.prob_of(rec.tokens)[:3].tolist()
    trail = "; ".join(f"step {steps[j]}: slot {j + 1} = `{WORDS[int(rec.tokens[j])]}` (q = {q[j]:.2f})"
                      for j in order)
    prod = 1.0
    for v in q:
        prod *= v
    lines += [f"- **Teacher** (threshold 0.85, ties to the lower slot): {trail}. Block "
              f"`{_words(ex['teacher'])}`, probability {toy.prob(prompt, ex['teacher']):.2f}.",
              f"- **Chain rule**: the product of the commit-step rows at the committed tokens is "
              f"{' x '.join(f'{q[j]:.2f}' for j in order)} = {prod:.2f} (in commit order), the teacher's "
              "probability of its block.",
              f"- **DCD** (argmax of each commit-step row): `{_words(ex['commit'].argmax(-1).tolist())}`: "
              "the teacher's block, reproduced by a one-step student."]
    return "\n".join(lines) + "\n"


def token_counts_table() -> str:
    """RAD vs full duplication at the benchmark's shape (P=1024, R=128, L=8), from the layouts."""
    rows = ["| prompt P | response R | L | n | s | RAD slots n + (n - s) | full dup 2n | ratio | "
            "attended pairs RAD | full dup | ratio |", "|" + "---:|" * 11]
    for p, r, size in [(256, 128, 8), (1024, 128, 8), (1024, 128, 4)]:
        n = -(-(p + r + 1) // size) * size
        plen, slen = torch.tensor([p]), torch.tensor([n])
        rad, dup = rad_layout(plen, slen, size), full_dup_layout(slen, size)
        pr, pd = int(dense_mask(rad).sum()), int(dense_mask(dup).sum())
        rows.append(f"| {p} | {r} | {size} | {n} | {int(response_block_start(p, size))} | {rad.num_slots} | "
                    f"{dup.num_slots} | {dup.num_slots / rad.num_slots:.2f} | {pr:,} | {pd:,} | {pd / pr:.2f} |")
    return "\n".join(rows) + "\n"


def generate(out: Path = DOCS / "figures", generated: Path = DOCS / "_generated") -> list[Path]:
    """Write every figure and generated snippet; return the paths that changed."""
    import matplotlib

    matplotlib.use("Agg")
    changed = []
    ex = mean_field_example()
    outputs = {
        out / "block_grid.png": lambda: _save(block_grid_figure(), out / "block_grid.png"),
        out / "masks.png": lambda: _save(masks_figure(), out / "masks.png"),
        out / "rad_mask.png": lambda: _save(rad_mask_figure(), out / "rad_mask.png"),
        out / "kv_cache_timeline.png": lambda: _save(kv_cache_figure(), out / "kv_cache_timeline.png"),
        out / "mean_field.png": lambda: _save(mean_field_figure(ex), out / "mean_field.png"),
        generated / "mean_field_table.md": lambda: _write(generated / "mean_field_table.md", mean_field_table(ex)),
        generated / "token_counts.md": lambda: _write(generated / "token_counts.md", token_counts_table()),
    }
    for path, make in outputs.items():
        if make():
            changed.append(path)
    return changed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DOCS / "figures")
    ap.add_argument("--generated", type=Path, default=DOCS / "_generated")
    args = ap.parse_args()
    changed = generate(args.out, args.generated)
    print(f"{len(changed)} file(s) changed" + "".join(f"\n  {p}" for p in changed))


if __name__ == "__main__":
    main()
