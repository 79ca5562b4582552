"""Figures and tables for the experiments: the attention-fading curve, accuracy against length, the summary table and
its verdicts, learned s. Plots need matplotlib (the extra 'plot'); without it they are skipped and the caller says so."""
from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np
from tinygrad import Tensor

from ssmax_tiny.model import compute


def pyplot():
  """matplotlib.pyplot drawing to files, or None when matplotlib (the extra 'plot') is not installed."""
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    return None
  return plt


def format_s(s_list: list[list[float]]) -> str:
  """Learned s per layer (one value, or one per head), e.g. 'L0: 1.061  L1: 1.150'."""
  return "  ".join(f"L{i}: " + ",".join(f"{v:.3f}" for v in layer) for i, layer in enumerate(s_list))


def fading_curve(s: float, max_n: int) -> dict:
  """The paper's Figure 1 setting: logits all -2 but the last, +3. Largest weight of softmax and SSMax against n."""
  ns = sorted({int(round(x)) for x in np.logspace(1, math.log10(max_n), 13)} | {10, max_n})
  rows = []
  for n in ns:
    z = np.full((1, n), -2.0, np.float32); z[0, -1] = 3.0
    rows.append(dict(n=n, softmax=float(Tensor(z).softmax(-1)[0, -1].item()), ssmax=float(compute(Tensor(z), s, n)[0, -1].item())))
  return dict(s=s, logits="-2 everywhere, +3 at one key", rows=rows)


def plot_fading(curve: dict, path: Path) -> bool:
  if (plt := pyplot()) is None: return False
  fig, ax = plt.subplots(figsize=(5, 3.5))
  ns = [r["n"] for r in curve["rows"]]
  ax.plot(ns, [r["softmax"] for r in curve["rows"]], "o-", label="softmax")
  ax.plot(ns, [r["ssmax"] for r in curve["rows"]], "s-", label=f"SSMax, s = {curve['s']}")
  ax.set_xscale("log"); ax.set_ylim(0, 1.05); ax.set_xlabel("n (number of keys)"); ax.set_ylabel("largest attention weight")
  ax.set_title("Attention fading (arXiv:2501.19399 Fig. 1)"); ax.grid(alpha=0.3); ax.legend()
  fig.tight_layout(); fig.savefig(path, dpi=120); plt.close(fig)
  return True


def summarize(runs: list[dict], lengths: list[int]) -> list[dict]:
  """One row per (positional, model): mean and standard deviation over seeds of the accuracy at each length."""
  rows = {}
  for r in runs: rows.setdefault((r["positional"], r["model"]), []).append(r)
  out = []
  for (positional, model), rs in rows.items():
    acc = {L: [r["accuracy"][str(L)] for r in rs] for L in lengths}
    out.append(dict(positional=positional, model=model, seeds=[r["seed"] for r in rs],
                    mean={str(L): statistics.fmean(v) for L, v in acc.items()},
                    std={str(L): (statistics.stdev(v) if len(v) > 1 else 0.0) for L, v in acc.items()},
                    final_loss=statistics.fmean(r["final_loss"] for r in rs),
                    learned_s=[[statistics.fmean(r["learned_s"][i][j] for r in rs) for j in range(len(layer))]
                               for i, layer in enumerate(rs[0]["learned_s"])] if rs[0]["learned_s"] else []))
  return out


def table(summary: list[dict], lengths: list[int]) -> str:
  head = "| positional | model | " + " | ".join(f"{L}" for L in lengths) + " | final loss |"
  lines = [head, "|" + "---|" * (len(lengths) + 3)]
  for row in summary:
    cells = [f"{row['mean'][str(L)]:.3f} ± {row['std'][str(L)]:.3f}" for L in lengths]
    lines.append(f"| {row['positional']} | {row['model']} | " + " | ".join(cells) + f" | {row['final_loss']:.3f} |")
  return "\n".join(lines)


def verdicts(summary: list[dict], lengths: list[int], train_length: int) -> list[str]:
  """Where each model does and does not beat softmax, per position setting and length (by more than the seed spread)."""
  lines = []
  for positional in dict.fromkeys(r["positional"] for r in summary):
    base = next(r for r in summary if r["positional"] == positional and r["model"] == "softmax")
    for row in (r for r in summary if r["positional"] == positional and r["model"] != "softmax"):
      better, worse, tied = [], [], []
      for L in lengths:
        d = row["mean"][str(L)] - base["mean"][str(L)]
        noise = max(row["std"][str(L)], base["std"][str(L)], 1e-9)
        (better if d > noise else worse if d < -noise else tied).append(f"{L} ({d:+.3f})")
      lines.append(f"positional={positional}, {row['model']} vs softmax (trained at {train_length}): "
                   f"better at {', '.join(better) or 'no length'}; worse at {', '.join(worse) or 'no length'}; "
                   f"within the seed spread at {', '.join(tied) or 'no length'}.")
  return lines


def plot_accuracy(summary: list[dict], lengths: list[int], train_length: int, path: Path, title: str) -> bool:
  if (plt := pyplot()) is None: return False
  positionals = list(dict.fromkeys(r["positional"] for r in summary))
  fig, axes = plt.subplots(1, len(positionals), figsize=(5 * len(positionals), 3.8), squeeze=False, sharey=True)
  for ax, positional in zip(axes[0], positionals):
    for row in (r for r in summary if r["positional"] == positional):
      ax.errorbar(lengths, [row["mean"][str(L)] for L in lengths], yerr=[row["std"][str(L)] for L in lengths], marker="o", capsize=3,
                  label=row["model"])
    ax.axvline(train_length, color="grey", ls=":", lw=1)
    ax.set_xscale("log", base=2); ax.set_xticks(lengths); ax.set_xticklabels([str(L) for L in lengths])
    ax.set_ylim(-0.02, 1.02); ax.set_xlabel("evaluation length (trained at the dotted line)"); ax.set_title(f"positional = {positional}")
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel("retrieval accuracy (mean ± sd over seeds)")
  axes[0][-1].legend(loc="lower left")
  fig.suptitle(title, fontsize=10)
  fig.tight_layout(); fig.savefig(path, dpi=120); plt.close(fig)
  return True
